#!/usr/bin/env bash
# Session 8, call 4 on one H200 (2026-11-29).
#   1. the rest of call 2's cost comparison at s3m: call 2 trained all eight cells but timed only MHA
#      and SWA at s3m (on cuDNN) before its time ran out; DMA (with this session's selection) and MLA
#      train again for 20 steps and are each timed alone by eval.py --throughput
#   2. MQAR's d_model axis at T = 1024 (docs/results.md 1c): MHA and DMA at d_model 256, seed 0,
#      1b's recipe, two cells on the GPU
set -u
bash scripts/install_gpu_wheels.sh >/dev/null 2>&1
export TF_GPU_ALLOCATOR=cuda_malloc_async PYTHONPATH=. PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
S=$OUT/stage; L=$S/logs; mkdir -p $L
cp results/ppl/cost_h200_cudnn.json $S/cost_h200_cudnn.json
timeout 170 python3 experiments/perplexity_scaling.py --sizes s3m --attentions dma mla --jobs 2 --throughput \
  --timeout 150 --results $S/cost_h200_cudnn.json --workroot /tmp/cost steps=20 optim.warmup_steps=2 eval_every=20 \
  eval_batches=1 log_every=5 model.dense_implementation=cudnn > $L/cost.log 2>&1
cp results/mqar/lengths.json $S/lengths.json
timeout 370 python3 experiments/mqar_grid.py --jobs 2 --gpus 0 --seq-lens 1024 --d-models 256 --attentions mha dma \
  --retry-errors --head-dim 64 --pairs 16 --batch 64 --max-batch-tokens 131072 --steps 4000 --lr 3e-3 --evals 8 \
  --timeout 350 --start-before 20 --results $S/lengths.json --workroot /tmp/mqar_d > $L/mqar_d.log 2>&1
echo "== cost"; tail -n 6 $L/cost.log
echo "== mqar"; tail -n 6 $L/mqar_d.log
tar -czf $OUT/results.tgz -C $S . && rm -rf $S
