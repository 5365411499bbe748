#!/usr/bin/env bash
# MQAR with seeds on one GPU, a batch of runs at a time (experiments/mqar_seeds.py): first how fast
# the host makes MQAR batches with and without grain worker processes (benchmarks.data_pipeline),
# then up to JOBS runs of the grid side by side, each with READ_PROCESSES worker processes for its
# batches. Runs cut off earlier are retried; runs already in RESULTS are skipped; a run that would
# start more than 10 s after the call began waits for the next call. With the defaults (4 runs of
# 6000 steps at T = 1024, 327-384 s each on an H100 without worker processes) a call fits 10 minutes.
#   [JOBS=4] [SEQ_LENS="1024 2048"] [TIMEOUT=500] [READ_PROCESSES=3] [RESULTS=results/mqar/seeds.json] \
#   [WORKROOT=runs/mqar_seeds] bash scripts/gpu/mqar_seeds.sh [OUT_DIR]   (default results/benchmarks/data_pipeline)
# Writes OUT_DIR/mqar_CARD.json (the batch timing) and RESULTS (with its plot beside it).
set -uo pipefail
source "$(dirname "$0")/environment.sh"
out=${1:-results/benchmarks/data_pipeline}
mkdir -p "$out"
processes=${READ_PROCESSES:-3}
python3 -m benchmarks.data_pipeline --config configs/mqar.py --threads 4 --processes 0 "$processes" --batches 40 \
  --out "$out/mqar_$card.json" data.seq_len=1024 data.mqar_num_kv_pairs=16
# shellcheck disable=SC2086
python3 experiments/mqar_seeds.py --jobs "${JOBS:-4}" --seq-lens ${SEQ_LENS:-1024 2048} --lr-search-seeds 0 \
  --start-before 10 --timeout "${TIMEOUT:-500}" --retry-errors --results "${RESULTS:-results/mqar/seeds.json}" \
  --workroot "${WORKROOT:-runs/mqar_seeds}" "data.read_processes=$processes"
