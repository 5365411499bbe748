#!/usr/bin/env bash
# On a GPU machine without internet access: install the wheels of gpu_wheels/
# (scripts/prepare_gpu_wheels.sh) into a folder of their own, without touching the machine's JAX,
# and print that folder. Use it as: export PYTHONPATH=.:$(bash scripts/install_gpu_wheels.sh)
# (the package itself is not pip-installed there: run from the repository root).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${GPU_SITE:-/tmp/dma_jax_gpu_site}
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$target" gpu_wheels/*.whl >&2
echo "$target"
