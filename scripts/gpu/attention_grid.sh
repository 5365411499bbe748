#!/usr/bin/env bash
# The attention benchmark grid on one GPU: DMA (the default Pallas kernels) beside cuDNN dense
# causal and JAX's Pallas flash attention, T = 4K..128K, w = 512..4096, B = 1, H = 32, Hkv = 8,
# D = 128, bf16, forward and forward+backward, with the accuracy check first. About 6 minutes on
# an H200.
#   bash scripts/gpu/attention_grid.sh [OUT_DIR]      (default results/benchmarks/grid)
# Writes OUT_DIR/attention.json and attention.png, and prints the table last.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-results/benchmarks/grid}
site=""; [ -d gpu_wheels ] && site=:$(bash scripts/install_gpu_wheels.sh)
export PYTHONPATH=.$site PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
python3 -m benchmarks.attention --check --repeats 5 --reference-max 0 --out-dir "$out"
