#!/usr/bin/env bash
# Create .venv and install dma-jax with its test tools. CUDA JAX where an NVIDIA GPU is present;
# torch and transformers (for the Doge interop tests) and triton (for the kernel PTX report) under
# CI=true or DMA_INTEROP_TESTS=1.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
extras="test"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  extras="test,cuda"
fi
if [ "${CI:-}" = "true" ] || [ "${DMA_INTEROP_TESTS:-}" = "1" ]; then
  # The Doge interop tests need torch; 2.13.0 is the CPU build these machines keep on disk.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  extras="$extras,interop,ptx"
fi
.venv/bin/python -m pip install -q -e ".[$extras]"
