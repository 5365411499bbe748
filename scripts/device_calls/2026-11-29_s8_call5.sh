#!/usr/bin/env bash
# Session 8, call 5 on one H200 (2026-11-29): the cost comparison at s10m, DMA beside MHA and SWA on
# cuDNN (MLA left for later: the session's device time is nearly spent). 20 steps each, then each
# model timed alone by eval.py --throughput.
set -u
bash scripts/install_gpu_wheels.sh >/dev/null 2>&1
export TF_GPU_ALLOCATOR=cuda_malloc_async PYTHONPATH=. PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
S=$OUT/stage; L=$S/logs; mkdir -p $L
cp results/ppl/cost_h200_cudnn.json $S/cost_h200_cudnn.json
timeout 215 python3 experiments/perplexity_scaling.py --sizes s10m --attentions dma mha swa --jobs 2 --throughput \
  --timeout 150 --results $S/cost_h200_cudnn.json --workroot /tmp/cost steps=20 optim.warmup_steps=2 eval_every=20 \
  eval_batches=1 log_every=5 model.dense_implementation=cudnn > $L/cost.log 2>&1
echo "== cost"; tail -n 6 $L/cost.log
tar -czf $OUT/results.tgz -C $S . && rm -rf $S
