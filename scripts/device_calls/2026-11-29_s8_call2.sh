#!/usr/bin/env bash
# Session 8, call 2 on one H200 (2026-11-29).
#   1. the selection's wavelet matrix built with one batched sort (the new GPU default) against the
#      level-by-level build, profiled (benchmarks/gpu_breakdown.py). Predicted: live ranges at 32K
#      from 182 kernels / 0.92 ms of wall time to about 110 kernels / 0.6 ms; at 4K from 124
#      kernels / 0.63 ms to about 70 / 0.4 ms; 128K takes the two-key sort, not slower than levels
#   2. GPU tests not rerun since session 7's last kernel change, with the new build
#   3. training throughput of MHA, SWA and MLA on cuDNN's flash attention beside DMA (its current
#      default path), s3m and s10m, two processes on the GPU as in results/ppl/cost_h200.json
set -u
bash scripts/install_gpu_wheels.sh >/dev/null 2>&1
export TF_GPU_ALLOCATOR=cuda_malloc_async PYTHONPATH=. PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
S=$OUT/stage; L=$S/logs; mkdir -p $L
timeout 90 python3 benchmarks/gpu_breakdown.py --lengths 4096 32768 --window 1024 --top 25 --wavelet-build levels \
  --out $S/gpu_breakdown_h200_levels.json > $L/breakdown_levels.log 2>&1
timeout 120 python3 benchmarks/gpu_breakdown.py --lengths 4096 32768 131072 --window 1024 --top 25 \
  --out $S/gpu_breakdown_h200_sort.json > $L/breakdown_sort.log 2>&1
timeout 150 python3 -m pytest -q -x tests/test_pallas_gpu.py -k "default_implementation or shard_map or selection_kernel or float32" \
  > $L/gpu_tests.log 2>&1
timeout 230 python3 experiments/perplexity_scaling.py --sizes s3m s10m --attentions mha swa mla dma --jobs 2 --throughput \
  --timeout 200 --results $S/cost_h200_cudnn.json --workroot /tmp/cost steps=20 optim.warmup_steps=2 eval_every=20 \
  eval_batches=1 log_every=5 model.dense_implementation=cudnn > $L/cost.log 2>&1
echo "== levels"; tail -n 8 $L/breakdown_levels.log
echo "== sort"; tail -n 13 $L/breakdown_sort.log
echo "== gpu tests"; tail -n 4 $L/gpu_tests.log
echo "== cost"; tail -n 14 $L/cost.log
tar -czf $OUT/results.tgz -C $S . && rm -rf $S
