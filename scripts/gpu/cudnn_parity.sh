#!/usr/bin/env bash
# DMA against cuDNN on one GPU where users first meet it: the dense regime (w >= T) at 2K and 8K,
# the sparse forward and the selection stage at 4K and 32K (w = 1024), single-call and amortised
# times (benchmarks.cudnn_parity); then the kernels launched per call and where the time goes
# (benchmarks.gpu_breakdown). About 3 minutes on an H100.
#   bash scripts/gpu/cudnn_parity.sh [OUT_DIR]      (default results/benchmarks)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-results/benchmarks}
site=""; [ -d gpu_wheels ] && site=:$(bash scripts/install_gpu_wheels.sh)
export PYTHONPATH=.$site PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
python3 -m benchmarks.gpu_breakdown --lengths 4096 32768 --window 1024 --out "$out/gpu_breakdown.json"
python3 -m benchmarks.cudnn_parity --out "$out/cudnn_parity.json"
