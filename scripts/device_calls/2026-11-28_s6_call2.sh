#!/usr/bin/env bash
# Session 6, call 2 on an nvidia-h200-x4 machine (2026-11-28). Call 1 found a recipe under which
# every attention but NSA learns MQAR at T = 1024 (16 pairs, 64 sequences a step, 4000 steps) and
# none at T = 2048 with 32 pairs and 32 sequences. Here the same recipe at every length:
#   launcher A: seed 0 at T = 512, 2048, 4096 (64 sequences a step; 32 at 4096, a memory limit)
#   launcher B: seed 1 at T = 1024 for MHA, SWA, MLA, DMA (a separate copy of the results, merged after)
set -u
bash scripts/install_gpu_wheels.sh >/dev/null 2>&1
export TF_GPU_ALLOCATOR=cuda_malloc_async PYTHONPATH=. PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false XLA_PYTHON_CLIENT_MEM_FRACTION=0.4
L=$OUT/stage/logs; mkdir -p $L
cp results/mqar/lengths.json $OUT/stage/lengths_a.json; cp results/mqar/lengths.json $OUT/stage/lengths_b.json
COMMON="--head-dim 64 --d-models 128 --pairs 16 --batch 64 --max-batch-tokens 131072 --steps 4000 --lr 3e-3 --evals 8 --timeout 535"
(timeout 565 python3 experiments/mqar_grid.py --jobs 15 --gpus 0 1 2 3 --seq-lens 512 2048 4096 $COMMON \
   --start-before 30 --results $OUT/stage/lengths_a.json --workroot /tmp/mqar_a > $L/mqar_a.log 2>&1) &
(sleep 15; timeout 560 python3 experiments/mqar_grid.py --jobs 4 --gpus 3 2 1 0 --seq-lens 1024 --seeds 1 \
   --attentions mha swa mla dma $COMMON --start-before 30 --results $OUT/stage/lengths_b.json --workroot /tmp/mqar_b \
   > $L/mqar_b.log 2>&1) &
sleep 150; nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv > $L/smi.txt
wait
for f in mqar_a mqar_b; do echo "== $f"; tail -n 17 $L/$f.log; done
cat $L/smi.txt
tar -czf $OUT/results.tgz -C $OUT/stage . && rm -rf $OUT/stage
