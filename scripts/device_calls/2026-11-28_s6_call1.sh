#!/usr/bin/env bash
# Session 6, call 1 on an nvidia-h200-x4 machine (2026-11-28).
#   GPUs 0-3: MQAR at T = 512, 1024, 2048, 4096, d_model 128, five attentions, one recipe for every
#             length (T/64 pairs, 65536 tokens a step, 4000 steps): 20 cells, five per GPU
#   GPU 3:    the kernels' PTX (wgmma or mma.sync) and Nsight Compute counters at T = 32K, beside them
set -u
bash scripts/install_gpu_wheels.sh >/dev/null 2>&1
export TF_GPU_ALLOCATOR=cuda_malloc_async PYTHONPATH=. PYTHONUNBUFFERED=1
L=$OUT/stage/logs; mkdir -p $L
cp results/mqar/long.json $OUT/stage/long.json 2>/dev/null
(timeout 565 python3 experiments/mqar_grid.py --jobs 20 --gpus 0 1 2 3 --head-dim 64 --seq-lens 512 1024 2048 4096 \
   --d-models 128 --pairs-ratio 64 --max-batch-tokens 65536 --steps 4000 --lr 3e-3 --evals 8 --start-before 30 \
   --timeout 540 --results $OUT/stage/long.json --workroot /tmp/mqar > $L/mqar.log 2>&1) &
(sleep 45; CUDA_VISIBLE_DEVICES=3 XLA_PYTHON_CLIENT_PREALLOCATE=false XLA_PYTHON_CLIENT_MEM_FRACTION=0.3 \
   timeout 420 bash scripts/profile_kernels.sh $OUT/stage/prof > $L/prof.log 2>&1) &
sleep 150; nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv > $L/smi.txt
wait
rm -rf $OUT/stage/prof/xla_dump.keep; (cd $OUT/stage/prof 2>/dev/null && mkdir -p ptx && cp xla_dump/*.ptx ptx/ 2>/dev/null; rm -rf xla_dump)
echo "== mqar"; tail -n 24 $L/mqar.log
echo "== prof"; tail -n 60 $L/prof.log
cat $L/smi.txt
tar -czf $OUT/results.tgz -C $OUT/stage . && rm -rf $OUT/stage
