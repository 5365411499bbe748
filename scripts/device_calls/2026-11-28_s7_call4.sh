#!/usr/bin/env bash
# Session 7, call 4 on one H200 (2026-11-28). The key-major backward pass split into chunks of
# tiles (PallasConfig.slot_chunk_tiles), after call 3 showed it takes 8.6 of 18.5 ms at 32K.
#   1. chunk sizes 0 (one chunk, as before), 64 and 128 tiles at T = 4K and 32K, w = 1024
#   2. the kernel breakdown with the new default, and with XLA's CUDA graphs for every region
#      (--xla_gpu_graph_min_graph_size=1): how much of the idle time is launch gaps
#   3. the GPU tests, with the new chunked-pass tests
set -u
bash scripts/install_gpu_wheels.sh >/dev/null 2>&1
export TF_GPU_ALLOCATOR=cuda_malloc_async PYTHONPATH=. PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
L=$OUT/stage/logs; mkdir -p $L
timeout 170 python3 benchmarks/attention.py --lengths 4096 32768 --windows 1024 --no-baselines --reference-max 0 \
  --configs 32,32,4,2:32,32,32,4,2,0 32,32,4,2:32,32,32,4,2,64 32,32,4,2:32,32,32,4,2,128 \
  --out-dir $OUT/stage/chunks > $L/chunks.log 2>&1
timeout 60 python3 benchmarks/gpu_breakdown.py --lengths 4096 32768 --window 1024 --top 25 \
  --out $OUT/stage/gpu_breakdown.json > $L/breakdown.log 2>&1
XLA_FLAGS=--xla_gpu_graph_min_graph_size=1 timeout 60 python3 benchmarks/gpu_breakdown.py --lengths 4096 32768 \
  --window 1024 --top 25 --out $OUT/stage/gpu_breakdown_graphs.json > $L/breakdown_graphs.log 2>&1
timeout 250 python3 -m pytest -q -W ignore::DeprecationWarning tests/test_pallas_gpu.py > $L/gpu_tests.log 2>&1
echo "== chunks"; tail -n 8 $L/chunks.log
echo "== breakdown"; tail -n 10 $L/breakdown.log; grep -A3 "32768 forward_backward" $L/breakdown.log | head -4
echo "== breakdown, graphs"; tail -n 10 $L/breakdown_graphs.log
echo "== gpu tests"; tail -n 15 $L/gpu_tests.log
tar -czf $OUT/results.tgz -C $OUT/stage . && rm -rf $OUT/stage
