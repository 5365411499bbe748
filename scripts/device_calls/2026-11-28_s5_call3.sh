#!/usr/bin/env bash
# Session 5, call 3 on an nvidia-h200-x4 machine (2026-11-28). Call 2 ran the four s10m seed-1 cells
# two per GPU and all four ran past 560 s; here each has a GPU to itself.
#   GPUs 0-3: perplexity, seed 1 at s10m for MHA/SWA/MLA/DMA, one cell per GPU
#   GPUs 3,2: perplexity at s1m, NSA seed 0 and all five seed 1, beside them (separate copy, merged after)
set -u
bash scripts/install_gpu_wheels.sh >/dev/null 2>&1
export TF_GPU_ALLOCATOR=cuda_malloc_async PYTHONPATH=. PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false XLA_PYTHON_CLIENT_MEM_FRACTION=0.45
L=$OUT/stage/logs; mkdir -p $L
cp results/ppl/scaling.json $OUT/stage/scaling_s10m.json; cp results/ppl/scaling.json $OUT/stage/scaling_s1m.json
(timeout 540 python3 experiments/perplexity_scaling.py --sizes s10m --attentions mha swa mla dma --seeds 1 --jobs 4 \
   --gpus 0 1 2 3 --retry-errors --timeout 525 --results $OUT/stage/scaling_s10m.json --workroot /tmp/ppl > $L/ppl_s10m.log 2>&1) &
(sleep 10; timeout 530 python3 experiments/perplexity_scaling.py --sizes s1m --attentions mha swa mla nsa dma --seeds 0 1 \
   --jobs 2 --gpus 3 2 --start-before 300 --timeout 300 --results $OUT/stage/scaling_s1m.json --workroot /tmp/ppl1 > $L/ppl_s1m.log 2>&1) &
sleep 120; nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv > $L/smi.txt
wait
for f in ppl_s10m ppl_s1m; do echo "== $f"; tail -n 9 $L/$f.log 2>/dev/null; done
cat $L/smi.txt
tar -czf $OUT/results.tgz -C $OUT/stage . && rm -rf $OUT/stage
