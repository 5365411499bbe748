#!/usr/bin/env bash
# The tests marked `gpu` (the Pallas kernels compiled for the GPU: accuracy against a float32
# reference at D 64/80/128/256, fp16/bf16/fp32, segments, key mask, Tq < Tk, window None,
# non-causal, the local-window variant, bitwise-reproducible gradients, the layouts, inside
# shard_map, the dense regime on cuDNN; the Mosaic GPU kernels and the jax-triton forward;
# what remat saves; the kernels' layout options and fused_key_grads). 65 tests; most of their
# time is compilation on the CPU, so they run in PROCESSES parallel pytest processes (default 4; 8
# took 207-263 s for 65 tests on an H100 machine with 16 CPU cores, the card to themselves) sharing
# the one GPU, each on every PROCESSES-th test; each process' log is gpu_tests.N.log
# in LOG_DIR (default: a temporary directory), and the exit code is nonzero if any process failed.
# Warnings are not suppressed: JAX 0.11's deprecation of the Triton lowering of Pallas shows in
# each log's warnings summary. The kernels are DMA_FORWARD_BACKEND's and
# DMA_BACKWARD_BACKEND's ("auto" when unset); set both to pallas_triton to test the
# Triton-lowered kernels on a Hopper GPU.
#   [PROCESSES=4] [LOG_DIR=dir] bash scripts/gpu/gpu_tests.sh [pytest options]
set -euo pipefail
cd "$(dirname "$0")/../.."
site=""; [ -d gpu_wheels ] && site=:$(bash scripts/install_gpu_wheels.sh)
export PYTHONPATH=.$site PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
processes=${PROCESSES:-4}
logs=${LOG_DIR:-$(mktemp -d)}
mkdir -p "$logs"
mapfile -t ids < <(python3 -m pytest -q --collect-only -m gpu tests/ "$@" | grep '::')
echo "${#ids[@]} GPU tests in $processes processes; logs in $logs"
pids=()
for ((p = 0; p < processes; p++)); do
  part=()
  for ((i = p; i < ${#ids[@]}; i += processes)); do part+=("${ids[i]}"); done
  [ ${#part[@]} -eq 0 ] && continue
  python3 -m pytest -q -m gpu "$@" "${part[@]}" > "$logs/gpu_tests.$p.log" 2>&1 &
  pids+=($!)
done
status=0
for p in "${!pids[@]}"; do
  wait "${pids[p]}" || status=1
  tail -n 3 "$logs/gpu_tests.$p.log"
done
exit $status
