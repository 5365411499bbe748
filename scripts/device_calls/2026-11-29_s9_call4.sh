#!/usr/bin/env bash
# Session 9, call 4 on one H200 (2026-11-29): MQAR's d_model axis at T = 1024 (docs/results.md 1c),
# MLA and SWA at d_model 64, seed 0, 1b's recipe (lr 3e-3). Session 7's cells ran out of memory with
# more processes on the GPU; two at a time fit (MHA took 183 s for this cell).
set -u
bash scripts/install_gpu_wheels.sh >/dev/null 2>&1
export TF_GPU_ALLOCATOR=cuda_malloc_async PYTHONPATH=. PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
S=$OUT/stage; L=$S/logs; mkdir -p $L
cp results/mqar/lengths.json $S/lengths.json
timeout 265 python3 experiments/mqar_grid.py --jobs 2 --gpus 0 --seq-lens 1024 --d-models 64 --attentions mla swa \
  --retry-errors --head-dim 64 --pairs 16 --batch 64 --max-batch-tokens 131072 --steps 4000 --lr 3e-3 --evals 8 \
  --timeout 250 --start-before 20 --results $S/lengths.json --workroot /tmp/mqar_d > $L/mqar_d64.log 2>&1
echo "== mqar d64"; tail -n 6 $L/mqar_d64.log
tar -czf $OUT/results.tgz -C $S . && rm -rf $S
