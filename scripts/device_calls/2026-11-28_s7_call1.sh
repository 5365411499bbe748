#!/usr/bin/env bash
# Session 7, call 1 on one H200 (2026-11-28).
#   1. the kernels' tile configs at T = 4K and 32K, w = 1024: the default (spills) beside three
#      that spill nothing per benchmarks/results/kernel_ptx_sm90.json
#   2. selection alone: the wavelet matrix and the lazy selection kernel (never timed before)
set -u
bash scripts/install_gpu_wheels.sh >/dev/null 2>&1
export TF_GPU_ALLOCATOR=cuda_malloc_async PYTHONPATH=. PYTHONUNBUFFERED=1
L=$OUT/stage/logs; mkdir -p $L
timeout 330 python3 benchmarks/attention.py --lengths 4096 32768 --windows 1024 --no-baselines --reference-max 0 \
  --configs 32,32,4,2:32,32,32,4,2 32,64,8,2:32,64,32,8,2 16,64,4,2:16,32,32,4,2 16,64,8,2:16,32,32,8,2 \
  --out-dir $OUT/stage/configs > $L/configs.log 2>&1
timeout 150 python3 benchmarks/live_ranges.py --lengths 4096 32768 131072 --repeats 10 \
  --kernel-configs 64,64,4,1 128,128,8,1 --out $OUT/stage/live_ranges.json > $L/live_ranges.log 2>&1
echo "== configs"; tail -n 30 $L/configs.log
echo "== live_ranges"; tail -n 20 $L/live_ranges.log
tar -czf $OUT/results.tgz -C $OUT/stage . && rm -rf $OUT/stage
