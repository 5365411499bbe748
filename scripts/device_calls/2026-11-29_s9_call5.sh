#!/usr/bin/env bash
# Session 9, call 5 on one H200 (2026-11-29), with the session's last 300 s: a second seed for MHA and
# DMA at T = 1024, d_model 64 (docs/results.md 1c; seed 0 gave 99.8% and 99.6%), two cells on the
# GPU (about 190 s each in session 8).
set -u
bash scripts/install_gpu_wheels.sh >/dev/null 2>&1
export TF_GPU_ALLOCATOR=cuda_malloc_async PYTHONPATH=. PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
S=$OUT/stage; L=$S/logs; mkdir -p $L
cp results/mqar/lengths.json $S/lengths.json
timeout 222 python3 experiments/mqar_grid.py --jobs 2 --gpus 0 --seq-lens 1024 --d-models 64 --attentions mha dma \
  --seeds 1 --head-dim 64 --pairs 16 --batch 64 --max-batch-tokens 131072 --steps 4000 --lr 3e-3 --evals 8 \
  --timeout 215 --start-before 10 --results $S/lengths.json --workroot /tmp/mqar_d > $L/mqar_d64_s1.log 2>&1
echo "== mqar d64 seed 1"; tail -n 6 $L/mqar_d64_s1.log
tar -czf $OUT/results.tgz -C $S . && rm -rf $S
