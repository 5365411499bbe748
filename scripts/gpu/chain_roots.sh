#!/usr/bin/env bash
# The selection's pointer jumping as XLA gathers (DMA_CHAIN_ROOTS=xla, the default) against one
# Triton kernel (DMA_CHAIN_ROOTS=triton), on one Hopper GPU: first the kernel's GPU test (equal to
# the gathers inside key_slots), then, each setting in its own process, the op's breakdown at 4K and
# 32K (B = 1, H = 32, Hkv = 8, w = 1024), with the selection timed alone, and one 2K model layer
# (B = 32, H = Hkv = 8, w = 512, segments). About 3 minutes on an H100. The prediction beside the
# result: docs/kernels.md (Slots).
#   bash scripts/gpu/chain_roots.sh [OUT_DIR]      (default results/benchmarks/chain_roots_<card>)
set -euo pipefail
source "$(dirname "$0")/environment.sh"
out=${1:-results/benchmarks/chain_roots_$card}
mkdir -p "$out"
python3 -m pytest -q -m gpu tests/kernels/test_jax_triton_chain_roots.py 2>&1 | tail -3
for roots in xla triton; do
  export DMA_CHAIN_ROOTS=$roots
  python3 -m benchmarks.gpu_breakdown --lengths 4096 32768 --window 1024 --out "$out/op_$roots.json"
  python3 -m benchmarks.gpu_breakdown --lengths 2048 --window 512 --batch 32 --heads 8 --kv-heads 8 --segments \
    --out "$out/layer_2k_$roots.json"
done
