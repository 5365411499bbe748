#!/usr/bin/env bash
# Session 7, call 3 on one H200 (2026-11-28): where a DMA call's time goes. Every kernel of
# live_ranges, the selection stage, the forward and the forward+backward at T = 4K and 32K,
# w = 1024, from JAX's profiler; alone on the GPU.
set -u
bash scripts/install_gpu_wheels.sh >/dev/null 2>&1
export TF_GPU_ALLOCATOR=cuda_malloc_async PYTHONPATH=. PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
L=$OUT/stage/logs; mkdir -p $L
timeout 240 python3 benchmarks/gpu_breakdown.py --lengths 4096 32768 --window 1024 --top 25 \
  --out $OUT/stage/gpu_breakdown.json > $L/breakdown.log 2>&1
tail -n 90 $L/breakdown.log
tar -czf $OUT/results.tgz -C $OUT/stage . && rm -rf $OUT/stage
