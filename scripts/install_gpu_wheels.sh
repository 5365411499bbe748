#!/usr/bin/env bash
# On the GPU machine (no internet): install the carried wheels of gpu_wheels/ without touching
# its JAX. Then run with PYTHONPATH=. (the package is not pip-installed there).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps gpu_wheels/*.whl
