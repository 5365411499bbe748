#!/usr/bin/env bash
# PallasConfig.kv_sequence_layout on one Hopper GPU: its GPU tests (bitwise equal to the transposed
# copy, kernel by kernel and for the op), then each setting timed in its own processes: one 2K
# model layer's call (B = 32, H = Hkv = 8, w = 512, segments), the 4K and 32K op (B = 1, H = 32,
# Hkv = 8, w = 1024), and the default model's 2K train step (DMA only). Predicted (docs/kernels.md):
# 2K layer forward 1.55 -> about 1.37 ms busy, 32K forward 2.59 -> about 2.42 ms, the 2K step about
# 2 ms (0.8%) shorter. About 6 minutes on an H100.
#   bash scripts/gpu/kv_sequence_layout.sh [OUT_DIR]      (default results/benchmarks/kv_sequence_layout_<card>)
set -euo pipefail
cd "$(dirname "$0")/../.."
site=""; [ -d gpu_wheels ] && site=:$(bash scripts/install_gpu_wheels.sh)
export PYTHONPATH=.$site PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
card=$(python3 -c "import jax; print(jax.devices()[0].device_kind.split()[1].lower())")  # h100, h200
out=${1:-results/benchmarks/kv_sequence_layout_$card}
mkdir -p "$out"
python3 -m pytest -q -m gpu -k "sequence_layout" tests/kernels tests/ops/test_pallas_gpu.py 2>&1 | tail -5
for layout in 0 1; do
  export DMA_KV_SEQUENCE_LAYOUT=$layout
  python3 -m benchmarks.gpu_breakdown --lengths 2048 --window 512 --batch 32 --heads 8 --kv-heads 8 --segments \
    --out "$out/gpu_breakdown_2k_layer_kv$layout.json"
  python3 -m benchmarks.gpu_breakdown --lengths 4096 32768 --window 1024 --out "$out/gpu_breakdown_kv$layout.json"
  python3 -m benchmarks.model_throughput --lengths 2048 --attentions dma --repeats 3 --decode-tokens 4 \
    --inference-batch 1 --out-dir "$out/model_kv$layout"
done
