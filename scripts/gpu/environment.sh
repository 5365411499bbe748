# Sourced by the GPU scripts that name their results after the card: moves to the repository root,
# puts the carried wheels (grain, jax-triton, ...) on PYTHONPATH, and sets $card (h100, h200).
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
site=""; [ -d gpu_wheels ] && site=:$(bash scripts/install_gpu_wheels.sh)
export PYTHONPATH=.$site PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
card=$(python3 -c "import jax; print(jax.devices()[0].device_kind.split()[1].lower())")
