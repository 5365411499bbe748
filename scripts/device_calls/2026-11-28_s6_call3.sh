#!/usr/bin/env bash
# Session 6, call 3 on an nvidia-h200-x4 machine (2026-11-28). In call 2 the T = 4096 cells of
# MHA, SWA and NSA ran out of memory with four or five cells on a GPU, and MLA's ran out of time.
#   launcher A: T = 4096, seed 0, MHA/SWA/MLA/NSA, one per GPU (NSA's GPU holds nothing else)
#   launcher B: seed 1 at T = 512 and 2048 for MHA and DMA, beside A on GPUs 0, 1 and 3
set -u
bash scripts/install_gpu_wheels.sh >/dev/null 2>&1
export TF_GPU_ALLOCATOR=cuda_malloc_async PYTHONPATH=. PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false XLA_PYTHON_CLIENT_MEM_FRACTION=0.45
L=$OUT/stage/logs; mkdir -p $L
cp results/mqar/lengths.json $OUT/stage/lengths_a.json; cp results/mqar/lengths.json $OUT/stage/lengths_b.json
COMMON="--head-dim 64 --d-models 128 --pairs 16 --batch 64 --max-batch-tokens 131072 --steps 4000 --lr 3e-3 --evals 8 --timeout 525"
(timeout 550 python3 experiments/mqar_grid.py --jobs 4 --gpus 0 1 3 2 --seq-lens 4096 --attentions mha swa mla nsa \
   --retry-errors $COMMON --start-before 30 --results $OUT/stage/lengths_a.json --workroot /tmp/mqar_a > $L/mqar_a.log 2>&1) &
(sleep 20; timeout 545 python3 experiments/mqar_grid.py --jobs 4 --gpus 0 1 3 --seq-lens 512 2048 --seeds 1 \
   --attentions mha dma $COMMON --start-before 30 --results $OUT/stage/lengths_b.json --workroot /tmp/mqar_b \
   > $L/mqar_b.log 2>&1) &
sleep 150; nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv > $L/smi.txt
wait
for f in mqar_a mqar_b; do echo "== $f"; tail -n 9 $L/$f.log; done
cat $L/smi.txt
tar -czf $OUT/results.tgz -C $OUT/stage . && rm -rf $OUT/stage
