#!/usr/bin/env bash
# What real text costs a train step on one GPU: the embedding gradient's lookups on random and
# corpus tokens (benchmarks.embedding_grad), grain's batches by read threads
# (benchmarks.data_pipeline), then benchmarks.loop_overhead's rows for the window sweep's model
# (DMA and MHA) and the passkey model (DMA), with grain reading on four threads and on one. Needs
# data/tokens (python -m dma_jax.data.tokenize). results/benchmarks/real_data_step holds all of
# them, run as these commands on one H100 (about 3.5 minutes in all).
#   bash scripts/gpu/real_data_step.sh [OUT_DIR]      (default results/benchmarks/real_data_step)
# SPECS="CONFIG:ATTENTION:THREADS ..." picks the loop-overhead rows (default: all five below).
# Writes OUT_DIR/embedding_grad_CARD.json, OUT_DIR/data_pipeline_CARD.json (the host's side alone) and OUT_DIR/loop_CONFIG_ATTENTION_tTHREADS_CARD.json,
# and prints each benchmark's table.
set -uo pipefail
source "$(dirname "$0")/environment.sh"
out=${1:-results/benchmarks/real_data_step}
mkdir -p "$out"
python -m benchmarks.embedding_grad --config configs/window_sweep.py --out "$out/embedding_grad_$card.json"
python -m benchmarks.data_pipeline --config configs/window_sweep.py --out "$out/data_pipeline_$card.json"
for spec in ${SPECS:-window_sweep:dma:4 window_sweep:mha:4 window_sweep:dma:1 passkey:dma:4 passkey:dma:1}; do
  IFS=: read -r config attention threads <<< "$spec"
  echo "== $config $attention, $threads read threads"
  python -m benchmarks.loop_overhead --config "configs/$config.py" --steps 20 \
    --out "$out/loop_${config}_${attention}_t${threads}_$card.json" "model.attention=$attention" "data.read_threads=$threads"
done
