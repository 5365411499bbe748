#!/usr/bin/env bash
# Whether the passkey model's train step is bitwise reproducible on this GPU, and which
# parameters' gradients vary if not (benchmarks.step_determinism), with XLA's defaults and with
# --xla_gpu_deterministic_ops=true. Needs data/tokens (python -m dma_jax.data.tokenize).
# docs/training.md ("Reproducibility") has an H100's results.
#   bash scripts/gpu/step_determinism.sh [OUT_DIR]      (default results/benchmarks/step_determinism)
# Writes OUT_DIR/passkey_CARD.json and OUT_DIR/passkey_xla_deterministic_CARD.json and prints
# each run's table.
set -uo pipefail
source "$(dirname "$0")/environment.sh"
out=${1:-results/benchmarks/step_determinism}
mkdir -p "$out"
python -m benchmarks.step_determinism --config configs/passkey.py --out "$out/passkey_$card.json"
XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_deterministic_ops=true" python -m benchmarks.step_determinism \
  --config configs/passkey.py --out "$out/passkey_xla_deterministic_$card.json"
