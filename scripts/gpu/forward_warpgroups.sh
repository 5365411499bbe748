#!/usr/bin/env bash
# PallasConfig.forward_warpgroups on one Hopper GPU: the Mosaic GPU forward with two warpgroups of
# 64 rows sharing each gathered key step, against one warpgroup of 128 rows (docs/kernels.md).
# First the forward's GPU tests (two warpgroups equal one bitwise, and the reference); then the
# kernel alone and the op at 4K, 32K and 128K (w = 1024, B = 1, H = 32, Hkv = 8), with three
# pipeline stages beside two; then the default model's 2K train step with the variable at 1 and
# 2, each in its own process, MHA on cuDNN beside DMA in the first.
# Predicted: the 32K kernel 10-25% faster with two warpgroups if two CTAs still fit an SM (128
# registers a thread or fewer), no faster if not; three stages slower (one CTA an SM). Not yet
# run on a GPU. About 6 minutes on an H100.
#   bash scripts/gpu/forward_warpgroups.sh [OUT_DIR]      (default results/benchmarks/forward_warpgroups_<card>)
set -euo pipefail
source "$(dirname "$0")/environment.sh"
out=${1:-results/benchmarks/forward_warpgroups_$card}
mkdir -p "$out"
python3 -m pytest -q -m gpu tests/kernels/test_mosaic_gpu_forward.py 2>&1 | tail -5
python3 -m benchmarks.forward_backends --variants mosaic_gpu mosaic_gpu:g2 mosaic_gpu:g2:s3 \
  --out "$out/forward.json" --prediction "two warpgroups 10-25% off the 32K and 128K kernel if two CTAs still fit an SM, none if not; three stages slower than two"
for warpgroups in 1 2; do
  attentions=$([ "$warpgroups" = 1 ] && echo "dma mha" || echo "dma")
  DMA_FORWARD_WARPGROUPS=$warpgroups python3 -m benchmarks.model_throughput --lengths 2048 --attentions $attentions \
    --repeats 3 --decode-tokens 4 --inference-batch 1 --out-dir "$out/model_warpgroups$warpgroups"
done
