#!/usr/bin/env bash
# For a GPU machine without internet access that has Python 3.12 and CUDA JAX but lacks the rest:
# fill gpu_wheels/ (git-ignored) here with the wheels it needs, then copy the repository with
# gpu_wheels/ (and data/tokens for LM runs) there and run scripts/install_gpu_wheels.sh first.
# grain 0.2.18 with array_record and portpicker, and jax-triton 0.3.1, were checked on an H200
# with jax 0.11.2 and Triton 3.6.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf gpu_wheels && mkdir -p gpu_wheels
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  "grain==0.2.18" "array_record==0.8.6" "portpicker>=1.6" "jax-triton==0.3.1" \
  "tokenizers>=0.20,<1" "tqdm>=4.66" "einops>=0.8,<0.9" -d gpu_wheels
ls -la gpu_wheels
