#!/usr/bin/env bash
# Planned for the next session's first call on one H200 (written in session 9, not yet run; rename it
# to its date once run).
#   1. GPU tests session 9 could not run: the non-causal case with segments (new Pallas path,
#      dma_jax/noncausal_tables.py), and the three its call 2 left when its time ran out
#   2. the issue's whole benchmark grid (T 4K-128K, w 512-4096) with session 9's defaults, beside
#      cuDNN and Pallas flash attention (docs/performance.md still shows session 6's grid)
set -u
bash scripts/install_gpu_wheels.sh >/dev/null 2>&1
export TF_GPU_ALLOCATOR=cuda_malloc_async PYTHONPATH=. PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
S=$OUT/stage; L=$S/logs; mkdir -p $L
timeout 200 python3 -m pytest -q -x tests/test_pallas_gpu.py \
  -k "noncausal or sequence_layout or default_implementation or key_major" > $L/gpu_tests.log 2>&1
timeout 360 python3 benchmarks/attention.py --repeats 5 --reference-max 0 --out-dir $S/grid > $L/grid.log 2>&1
echo "== gpu tests"; tail -n 4 $L/gpu_tests.log
echo "== grid"; tail -n 40 $L/grid.log
tar -czf $OUT/results.tgz -C $S . && rm -rf $S
