#!/usr/bin/env bash
# Create .venv and install dma-jax with everything the README's two commands need (the `test`
# extra: training, plots and the test tools). CUDA JAX where an NVIDIA GPU is present. Under
# CI=true also Triton (the kernel PTX report's tests); under DMA_INTEROP_TESTS=1 Triton, torch and
# transformers (the Doge interop tests, which are in the slow tier: pytest -m slow).
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
extras="test"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  extras="test,cuda"
fi
if [ "${DMA_INTEROP_TESTS:-}" = "1" ]; then
  # A CPU build of torch is enough for the interop tests; 2.13.0 avoids pulling a CUDA build.
  .venv/bin/python -m pip install -q --no-compile "torch==2.13.0"
  extras="$extras,interop,ptx"
elif [ "${CI:-}" = "true" ]; then
  extras="$extras,ptx"
fi
# --no-compile: pip would byte-compile every module of every package (about 30 s of the install
# on 2 CPU cores); Python compiles the modules a program imports, once, when it first imports them.
.venv/bin/python -m pip install -q --no-compile -e ".[$extras]"
