#!/usr/bin/env bash
# Session 9, call 3 on one H200 (2026-11-29).
#   1. MQAR split by pair distance for MHA and SWA at T = 2048, seed 0 (docs/results.md 1d): session
#      7's three-cell call timed out for them; two cells on the GPU fit in 270 s in session 8
#   2. the cost comparison's missing s10m cells on cuDNN: SWA and MLA, 20 steps each, then each model
#      timed alone by eval.py --throughput (results/ppl/cost_h200_cudnn.json)
set -u
bash scripts/install_gpu_wheels.sh >/dev/null 2>&1
export TF_GPU_ALLOCATOR=cuda_malloc_async PYTHONPATH=. PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
S=$OUT/stage; L=$S/logs; mkdir -p $L
cp results/mqar/by_distance.json $S/by_distance.json
timeout 300 python3 experiments/mqar_grid.py --jobs 2 --gpus 0 --seq-lens 2048 --d-models 128 --attentions mha swa \
  --retry-errors --head-dim 64 --pairs 16 --batch 64 --max-batch-tokens 131072 --steps 4000 --lr 3e-3 --evals 8 \
  --by-distance --timeout 285 --start-before 20 --results $S/by_distance.json --workroot /tmp/mqar_bd > $L/mqar_bd.log 2>&1
cp results/ppl/cost_h200_cudnn.json $S/cost_h200_cudnn.json
timeout 235 python3 experiments/perplexity_scaling.py --sizes s10m --attentions swa mla --jobs 2 --throughput \
  --timeout 180 --results $S/cost_h200_cudnn.json --workroot /tmp/cost steps=20 optim.warmup_steps=2 eval_every=20 \
  eval_batches=1 log_every=5 model.dense_implementation=cudnn > $L/cost.log 2>&1
echo "== mqar"; tail -n 6 $L/mqar_bd.log
echo "== cost"; tail -n 6 $L/cost.log
tar -czf $OUT/results.tgz -C $S . && rm -rf $S
