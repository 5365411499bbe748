#!/usr/bin/env bash
# Session 5, call 1 on an nvidia-h200-x4 machine (2026-11-28).
#   perplexity: sizes s1m and s10m, MHA/SWA/MLA/DMA, seed 0; two cells per GPU at a time (8 jobs, 4 GPUs)
#   needle in a haystack: NSA and SWA at 4000 steps, beside them on GPUs 3 and 2
# Every process runs without preallocation and is capped at 30% of its GPU, so three fit on one.
# Results come back as one archive (the device returns at most 8 files).
set -u
bash scripts/install_gpu_wheels.sh >/dev/null 2>&1
export TF_GPU_ALLOCATOR=cuda_malloc_async PYTHONPATH=. PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false XLA_PYTHON_CLIENT_MEM_FRACTION=0.3
L=$OUT/stage/logs; mkdir -p $L
(timeout 570 python3 experiments/perplexity_scaling.py --sizes s1m s10m --attentions mha swa mla dma --jobs 8 \
   --gpus 0 1 2 3 --timeout 550 --results results/ppl/scaling.json --workroot /tmp/ppl > $L/ppl.log 2>&1) &
(sleep 20; timeout 560 python3 experiments/niah.py --attentions nsa swa --steps 4000 --jobs 2 --gpus 3 2 --timeout 530 \
   --results results/niah/h200_steps4000.json --workroot /tmp/niah > $L/niah.log 2>&1) &
sleep 120; nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv > $L/smi.txt
wait
cp results/ppl/scaling.* results/niah/h200_steps4000.* $OUT/stage/ 2>/dev/null
for f in ppl niah; do echo "== $f"; tail -n 14 $L/$f.log 2>/dev/null; done
cat $L/smi.txt
tar -czf $OUT/results.tgz -C $OUT/stage . && rm -rf $OUT/stage
