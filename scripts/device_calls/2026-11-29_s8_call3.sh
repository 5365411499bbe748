#!/usr/bin/env bash
# Session 8, call 3 on one H200 (2026-11-29).
#   1. the selection without its binary search (call 2's profile showed jnp.searchsorted as a while
#      loop: per turn a select, an add and two device copies, 13 turns at 4K, 16 at 32K, each
#      reading its condition on the host) and, without segment_ids, without any segment grouping;
#      wavelet matrix built level by level against one sort. Predicted: live ranges at 4K from
#      0.66 ms of wall time to about 0.35 ms, at 32K from 0.97 to about 0.7 ms
#   2. MQAR's d_model axis at T = 1024 (docs/results.md 1c): MHA and DMA at d_model 64, seed 0,
#      1b's recipe, two cells on the GPU
set -u
bash scripts/install_gpu_wheels.sh >/dev/null 2>&1
export TF_GPU_ALLOCATOR=cuda_malloc_async PYTHONPATH=. PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
S=$OUT/stage; L=$S/logs; mkdir -p $L
timeout 80 python3 benchmarks/gpu_breakdown.py --lengths 4096 32768 --window 1024 --top 25 --wavelet-build levels \
  --out $S/gpu_breakdown_h200_nosearch_levels.json > $L/breakdown_levels.log 2>&1
timeout 80 python3 benchmarks/gpu_breakdown.py --lengths 4096 32768 --window 1024 --top 25 \
  --out $S/gpu_breakdown_h200_nosearch_auto.json > $L/breakdown_auto.log 2>&1
cp results/mqar/lengths.json $S/lengths.json
timeout 400 python3 experiments/mqar_grid.py --jobs 2 --gpus 0 --seq-lens 1024 --d-models 64 --attentions mha dma \
  --retry-errors --head-dim 64 --pairs 16 --batch 64 --max-batch-tokens 131072 --steps 4000 --lr 3e-3 --evals 8 \
  --timeout 380 --start-before 20 --results $S/lengths.json --workroot /tmp/mqar_d > $L/mqar_d.log 2>&1
echo "== levels"; tail -n 5 $L/breakdown_levels.log
echo "== auto"; tail -n 5 $L/breakdown_auto.log
echo "== mqar"; tail -n 8 $L/mqar_d.log
tar -czf $OUT/results.tgz -C $S . && rm -rf $S
