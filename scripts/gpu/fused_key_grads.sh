#!/usr/bin/env bash
# PallasConfig.fused_key_grads on one Hopper GPU: the query-major backward pass adds the key-major
# pass' float32 sums of dK and dV and writes them in bf16 (docs/kernels.md). First its GPU tests
# (equal to the unfused sums, dK within one fused multiply-add's rounding); then, with the variable at 0 and 1, each in its own
# processes: one 2K model layer's call (B = 32, H = Hkv = 8, w = 512, segments) and the default
# model's 2K train step, with MHA beside DMA in the unfused run (the 2K bar, both in one run).
# Predicted (docs/kernels.md): the layer's forward+backward about 0.26 ms shorter, the step about
# 1.2% more tokens/s; measured on an H100 (results/benchmarks/fused_key_grads_h100): 0.34 ms shorter,
# the step unchanged within noise. About 6 minutes on an H100.
#   bash scripts/gpu/fused_key_grads.sh [OUT_DIR]      (default results/benchmarks/fused_key_grads_<card>)
set -euo pipefail
source "$(dirname "$0")/environment.sh"
out=${1:-results/benchmarks/fused_key_grads_$card}
mkdir -p "$out"
python3 -m pytest -q -m gpu -k "fused" tests/ops/test_pallas_gpu.py 2>&1 | tail -5
for fused in 0 1; do
  export DMA_FUSED_KEY_GRADS=$fused
  python3 -m benchmarks.gpu_breakdown --lengths 2048 --window 512 --batch 32 --heads 8 --kv-heads 8 --segments \
    --out "$out/layer_2k_fused$fused.json"
  attentions=$([ "$fused" = 0 ] && echo "dma mha" || echo "dma")
  python3 -m benchmarks.model_throughput --lengths 2048 --attentions $attentions --repeats 3 --decode-tokens 4 \
    --inference-batch 1 --out-dir "$out/model_fused$fused"
done
