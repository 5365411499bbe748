#!/usr/bin/env bash
# Create .venv and install dma-jax with its test tools. CUDA JAX where an NVIDIA GPU is present.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
extras="test"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  extras="test,cuda"
fi
.venv/bin/python -m pip install -q -e ".[$extras]"
