#!/usr/bin/env bash
# Session 7, call 5 on one H200 (2026-11-28).
#   1. the key-major backward with more slots per program (64, 128), in chunks of 128 tiles: call 4
#      showed that chunks alone change nothing, so the pass is not short of programs; predicted
#      instead: it is bound by re-reading every tile's q and dO once per block of 32 slots
#   2. then MQAR at T = 2048, d_model 128, seed 0, MHA/SWA/DMA scored by pair distance
#      (--by-distance): how much of DMA's accuracy lies beyond its window
set -u
bash scripts/install_gpu_wheels.sh >/dev/null 2>&1
export TF_GPU_ALLOCATOR=cuda_malloc_async PYTHONPATH=. PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
L=$OUT/stage/logs; mkdir -p $L
timeout 140 python3 benchmarks/attention.py --lengths 4096 32768 --windows 1024 --no-baselines --reference-max 0 \
  --configs 32,32,4,2:32,32,32,4,2,128 32,32,4,2:32,32,64,4,2,128 32,32,4,2:32,32,64,8,2,128 \
  32,32,4,2:32,32,128,8,2,128 --out-dir $OUT/stage/slots > $L/slots.log 2>&1
timeout 385 python3 experiments/mqar_grid.py --jobs 3 --gpus 0 --seq-lens 2048 --d-models 128 --attentions mha swa dma \
  --head-dim 64 --pairs 16 --batch 64 --max-batch-tokens 131072 --steps 4000 --lr 3e-3 --evals 8 --by-distance \
  --timeout 335 --start-before 20 --results $OUT/stage/by_distance.json --workroot /tmp/mqar_bd > $L/mqar_bd.log 2>&1
echo "== slots"; tail -n 10 $L/slots.log
echo "== mqar"; tail -n 12 $L/mqar_bd.log
tar -czf $OUT/results.tgz -C $OUT/stage . && rm -rf $OUT/stage
