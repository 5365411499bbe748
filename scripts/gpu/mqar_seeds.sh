#!/usr/bin/env bash
# MQAR with seeds on one GPU, in a fixed slice of machine time (experiments/mqar_seeds.py): waves of
# up to JOBS runs of the grid side by side, each with READ_PROCESSES grain worker processes for its
# batches, every run ending within CALL_SECONDS of the start. After the first wave, a run starts only
# while 1.1x the longest run so far is left; the rest wait for the next call. Runs cut off earlier
# are retried; runs already in RESULTS are skipped. Six runs at once ran out of an H100's memory.
#   [JOBS=4] [SEQ_LENS="1024 2048"] [CALL_SECONDS=500] [READ_PROCESSES=3] [RESULTS=results/mqar/seeds.json] \
#   [WORKROOT=runs/mqar_seeds] bash scripts/gpu/mqar_seeds.sh
# Writes RESULTS (with its plot beside it).
set -uo pipefail
source "$(dirname "$0")/environment.sh"
# shellcheck disable=SC2086
python3 experiments/mqar_seeds.py --jobs "${JOBS:-4}" --seq-lens ${SEQ_LENS:-1024 2048} --lr-search-seeds 0 \
  --start-before 10 --call-seconds "${CALL_SECONDS:-500}" --timeout "${CALL_SECONDS:-500}" --retry-errors --results "${RESULTS:-results/mqar/seeds.json}" \
  --workroot "${WORKROOT:-runs/mqar_seeds}" "data.read_processes=${READ_PROCESSES:-3}"
