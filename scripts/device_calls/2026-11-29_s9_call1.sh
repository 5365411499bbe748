#!/usr/bin/env bash
# Session 9's first call on one H200 (written in session 8, run 2026-11-29). Times session 8's
# unmeasured kernel changes (docs/kernels.md, "The selection's
# binary search" and after): the fixed-turn pointer jumping (now the default), the sequence layout
# of the forward (:seq) and the key-major pass on wgmma (:tslots, with its own warps and stages),
# beside cuDNN in the same run; then their GPU tests.
set -u
bash scripts/install_gpu_wheels.sh >/dev/null 2>&1
export TF_GPU_ALLOCATOR=cuda_malloc_async PYTHONPATH=. PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
S=$OUT/stage; L=$S/logs; mkdir -p $L
timeout 80 python3 benchmarks/gpu_breakdown.py --lengths 4096 32768 --window 1024 --top 25 \
  --out $S/gpu_breakdown_h200_fixed_jumps.json > $L/breakdown.log 2>&1
timeout 260 python3 benchmarks/attention.py --lengths 4096 32768 --windows 1024 --reference-max 0 --configs \
  32,32,4,2:32,32,32,4,2 32,32,4,2:32,32,32,4,2:seq 32,32,4,2:32,32,32,4,2:tslots,slots=8/1 \
  32,32,4,2:32,32,32,4,2:tslots 32,32,4,2:32,32,32,4,2:seq,tslots,slots=4/1 --out-dir $S/options > $L/options.log 2>&1
timeout 200 python3 -m pytest -q -x tests/test_pallas_gpu.py -k "sequence_layout or key_major or deterministic" \
  > $L/gpu_tests.log 2>&1
echo "== breakdown"; tail -n 9 $L/breakdown.log
echo "== options"; tail -n 14 $L/options.log
echo "== gpu tests"; tail -n 3 $L/gpu_tests.log
tar -czf $OUT/results.tgz -C $S . && rm -rf $S
