#!/usr/bin/env bash
# The 2K language-model bar on one GPU (DMA with w = 512 training as fast as MHA on cuDNN), three
# measurements in one run: one model layer's DMA call against cuDNN at the model's shape
# (benchmarks.gpu_breakdown), a whole train step split by part of the model and by pass
# (benchmarks.step_profile), and the default model's tokens/s with each remat setting
# (benchmarks.model_throughput). Predicted about 7 minutes on an H100.
#   bash scripts/gpu/lm_2k_performance.sh [OUT_DIR]      (default results/benchmarks/lm_2k_<card>)
set -euo pipefail
source "$(dirname "$0")/environment.sh"
out=${1:-results/benchmarks/lm_2k_$card}
mkdir -p "$out"
python3 -m benchmarks.gpu_breakdown --lengths 2048 --window 512 --batch 32 --heads 8 --kv-heads 8 --segments --cudnn \
  --out "$out/gpu_breakdown.json"
python3 -m benchmarks.step_profile --lengths 2048 --attentions dma mha --out "$out/step_profile.json"
python3 -m benchmarks.model_throughput --lengths 2048 --attentions dma mha --remat-saves nothing selection attention \
  --repeats 3 --decode-tokens 4 --inference-batch 1 --out-dir "$out"
