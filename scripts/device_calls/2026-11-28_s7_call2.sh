#!/usr/bin/env bash
# Session 7, call 2 on one H200 (2026-11-28): the d_model axis of the MQAR length grid at T = 1024.
#   d_model 64 and 256 (d128 is in results/mqar/lengths.json already), all five attentions, seed 0:
#   ten cells, all started at once on the one GPU (--start-before 30 leaves none for later).
#   Each job gets the launcher's default memory share (0.9 / 10 of the GPU; MEM_FRACTION is not set).
set -u
bash scripts/install_gpu_wheels.sh >/dev/null 2>&1
export TF_GPU_ALLOCATOR=cuda_malloc_async PYTHONPATH=. PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false
L=$OUT/stage/logs; mkdir -p $L
cp results/mqar/lengths.json $OUT/stage/lengths_d.json
(timeout 545 python3 experiments/mqar_grid.py --jobs 10 --gpus 0 --seq-lens 1024 --d-models 64 256 --head-dim 64 \
   --pairs 16 --batch 64 --max-batch-tokens 131072 --steps 4000 --lr 3e-3 --evals 8 --timeout 520 --start-before 30 \
   --results $OUT/stage/lengths_d.json --workroot /tmp/mqar_d > $L/mqar_d.log 2>&1) &
sleep 150; nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv > $L/smi.txt
wait
echo "== mqar_d"; tail -n 14 $L/mqar_d.log
cat $L/smi.txt
tar -czf $OUT/results.tgz -C $OUT/stage . && rm -rf $OUT/stage
