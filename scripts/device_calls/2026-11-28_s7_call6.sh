#!/usr/bin/env bash
# Session 7, call 6 on one H200 (2026-11-28): the key-major backward's stores behind a branch
# (pl.when: only in tiles where some slot's occupant changes). Calls 4 and 5 ruled out too few
# programs and q/dO re-reads; predicted now: the per-tile masked stores (and their layout
# conversions) are what the 9 ms pass spends its time on. Then the GPU tests that cover it.
set -u
bash scripts/install_gpu_wheels.sh >/dev/null 2>&1
export TF_GPU_ALLOCATOR=cuda_malloc_async PYTHONPATH=. PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
L=$OUT/stage/logs; mkdir -p $L
timeout 60 python3 benchmarks/gpu_breakdown.py --lengths 4096 32768 --window 1024 --top 25 \
  --out $OUT/stage/gpu_breakdown.json > $L/breakdown.log 2>&1
timeout 150 python3 -m pytest -q -W ignore::DeprecationWarning tests/test_pallas_gpu.py \
  -k "chunks or deterministic or bf16_T2048 or segments_keymask or fp16" > $L/gpu_tests.log 2>&1
echo "== breakdown"; grep -A4 "forward_backward  wall" $L/breakdown.log; tail -n 9 $L/breakdown.log
echo "== gpu tests"; tail -n 6 $L/gpu_tests.log
tar -czf $OUT/results.tgz -C $OUT/stage . && rm -rf $OUT/stage
