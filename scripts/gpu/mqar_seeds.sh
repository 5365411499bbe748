#!/usr/bin/env bash
# MQAR with seeds on one GPU, a batch of runs at a time (experiments/mqar_seeds.py): up to JOBS runs
# of the grid side by side, each with READ_PROCESSES grain worker processes for its batches. Runs
# cut off earlier are retried; runs already in RESULTS are skipped; a run that would start more
# than 10 s after the call began waits for the next call. Four runs of 6000 steps at T = 1024 take
# 327-399 s each on an H100 and keep it at 100% utilisation (docs/results.md, 1e); six at once ran
# out of its memory. Keep TIMEOUT above 420 s for T = 1024.
#   [JOBS=4] [SEQ_LENS="1024 2048"] [TIMEOUT=500] [READ_PROCESSES=3] [RESULTS=results/mqar/seeds.json] \
#   [WORKROOT=runs/mqar_seeds] bash scripts/gpu/mqar_seeds.sh
# Writes RESULTS (with its plot beside it).
set -uo pipefail
source "$(dirname "$0")/environment.sh"
# shellcheck disable=SC2086
python3 experiments/mqar_seeds.py --jobs "${JOBS:-4}" --seq-lens ${SEQ_LENS:-1024 2048} --lr-search-seeds 0 \
  --start-before 10 --timeout "${TIMEOUT:-500}" --retry-errors --results "${RESULTS:-results/mqar/seeds.json}" \
  --workroot "${WORKROOT:-runs/mqar_seeds}" "data.read_processes=${READ_PROCESSES:-3}"
