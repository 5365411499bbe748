#!/usr/bin/env bash
# Fill gpu_wheels/ (git-ignored) with the wheels the offline GPU machine lacks: the checked ones
# from shared/wheels/gpu-py312 (grain, array_record, portpicker, jax-triton) and, from PyPI here,
# tokenizers, tqdm and einops for Python 3.12. Carry gpu_wheels (and data/tokens for LM runs) with
# the device tool, then run scripts/install_gpu_wheels.sh there first.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf gpu_wheels && mkdir -p gpu_wheels
shared=""
for d in ../shared ./shared; do [ -d "$d/wheels/gpu-py312" ] && shared="$d" && break; done
if [ -n "$shared" ]; then cp "$shared"/wheels/gpu-py312/*.whl gpu_wheels/; else echo "no shared/wheels/gpu-py312 found" >&2; fi
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  "tokenizers>=0.20,<1" "tqdm>=4.66" "einops>=0.8,<0.9" -d gpu_wheels
ls -la gpu_wheels
