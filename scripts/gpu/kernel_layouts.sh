#!/usr/bin/env bash
# The kernels reading tensors where they lie, on one Hopper GPU: PallasConfig.kv_sequence_layout (k and
# v in (B, Tk, Hkv, D)) and q_sequence_backward (q, dO and dq in (B, T, H, D) where R = 1). First their
# GPU tests (bitwise equal to the transposed copies, kernel by kernel and for the op); then, each
# setting in its own processes: one 2K model layer's call (B = 32, H = Hkv = 8, w = 512, segments) for
# all four settings, and for neither and both also the 4K and 32K op (B = 1, H = 32, Hkv = 8,
# w = 1024; R = 4, so only k and v move) and the default model's 2K train step (DMA only).
# Both options are on by default; the variables are set to 0 or 1 for every run. Results on an H100
# and the predictions beside them: docs/performance.md. About 6-8 minutes on an H100.
#   bash scripts/gpu/kernel_layouts.sh [OUT_DIR]      (default results/benchmarks/kernel_layouts_<card>)
set -euo pipefail
source "$(dirname "$0")/environment.sh"
out=${1:-results/benchmarks/kernel_layouts_$card}
mkdir -p "$out"
python3 -m pytest -q -m gpu -k "sequence" tests/kernels tests/ops/test_pallas_gpu.py 2>&1 | tail -5
for kv in 0 1; do
  for q in 0 1; do
    export DMA_KV_SEQUENCE_LAYOUT=$kv DMA_Q_SEQUENCE_BACKWARD=$q
    python3 -m benchmarks.gpu_breakdown --lengths 2048 --window 512 --batch 32 --heads 8 --kv-heads 8 --segments \
      --out "$out/layer_2k_kv${kv}_q${q}.json"
    if [ "$kv" = "$q" ]; then
      python3 -m benchmarks.gpu_breakdown --lengths 4096 32768 --window 1024 --out "$out/op_kv${kv}_q${q}.json"
      python3 -m benchmarks.model_throughput --lengths 2048 --attentions dma --repeats 3 --decode-tokens 4 \
        --inference-batch 1 --out-dir "$out/model_kv${kv}_q${q}"
    fi
  done
done
