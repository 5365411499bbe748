#!/usr/bin/env bash
# Session 5, call 2 on an nvidia-h200-x4 machine (2026-11-28).
#   GPUs 0,1: perplexity, NSA at s10m, one job over two GPUs (data-parallel; NSA is dense O(T^2))
#   GPUs 2,3: perplexity, seed 1 at s10m for MHA/SWA/MLA/DMA, two cells per GPU
# The two launchers write separate copies of the results JSON (each rewrites its whole file);
# they are merged on the development machine (experiments/merge_results.py).
set -u
bash scripts/install_gpu_wheels.sh >/dev/null 2>&1
export TF_GPU_ALLOCATOR=cuda_malloc_async PYTHONPATH=. PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false XLA_PYTHON_CLIENT_MEM_FRACTION=0.45
L=$OUT/stage/logs; mkdir -p $L
cp results/ppl/scaling.json $OUT/stage/scaling_nsa.json; cp results/ppl/scaling.json $OUT/stage/scaling_seed1.json
(timeout 575 python3 experiments/perplexity_scaling.py --sizes s10m --attentions nsa --jobs 1 --gpus 0,1 \
   --timeout 560 --results $OUT/stage/scaling_nsa.json --workroot /tmp/ppl > $L/ppl_nsa.log 2>&1) &
(timeout 575 python3 experiments/perplexity_scaling.py --sizes s10m --attentions mha swa mla dma --seeds 1 --jobs 4 \
   --gpus 2 3 --timeout 560 --results $OUT/stage/scaling_seed1.json --workroot /tmp/ppl > $L/ppl_seed1.log 2>&1) &
sleep 120; nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv > $L/smi.txt
wait
for f in ppl_nsa ppl_seed1; do echo "== $f"; tail -n 8 $L/$f.log 2>/dev/null; done
cat $L/smi.txt
tar -czf $OUT/results.tgz -C $OUT/stage . && rm -rf $OUT/stage
