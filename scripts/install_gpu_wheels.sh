#!/usr/bin/env bash
# On a GPU machine without internet access: install the wheels of gpu_wheels/
# (scripts/prepare_gpu_wheels.sh) without touching its JAX. Then run from the repository root
# with PYTHONPATH=. (the package is not pip-installed there).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps gpu_wheels/*.whl
