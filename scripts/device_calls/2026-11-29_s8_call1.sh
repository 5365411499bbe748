#!/usr/bin/env bash
# Session 8, call 1 on one H200 (2026-11-29).
# MQAR at T = 2048, d_model 128, DMA only, seeds 0 and 1, scored by pair distance (--by-distance):
# how much of DMA's accuracy lies beyond its window. Session 7 ran three cells on the GPU and all
# were cut off; two cells leave each about 0.065 s a step (predicted 4000 steps in ~300 s).
set -u
bash scripts/install_gpu_wheels.sh >/dev/null 2>&1
export TF_GPU_ALLOCATOR=cuda_malloc_async PYTHONPATH=. PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
L=$OUT/stage/logs; mkdir -p $L
cp results/mqar/by_distance.json $OUT/stage/by_distance.json
timeout 520 python3 experiments/mqar_grid.py --jobs 2 --gpus 0 --seq-lens 2048 --d-models 128 --attentions dma \
  --seeds 0 1 --retry-errors --head-dim 64 --pairs 16 --batch 64 --max-batch-tokens 131072 --steps 4000 --lr 3e-3 \
  --evals 8 --by-distance --timeout 500 --start-before 20 --results $OUT/stage/by_distance.json \
  --workroot /tmp/mqar_bd > $L/mqar_bd.log 2>&1
echo "== mqar"; tail -n 15 $L/mqar_bd.log
rm -rf /tmp/mqar_bd/*/checkpoints 2>/dev/null
tar -czf $OUT/results.tgz -C $OUT/stage . && rm -rf $OUT/stage
