#!/usr/bin/env bash
# Profile the three DMA attention kernels (forward, backward query pass, backward slot pass) with
# Nsight Compute, at the benchmark's shapes (T = 32K, w = 1024 unless given).
#   bash scripts/gpu/profile_kernels.sh OUT_DIR [benchmarks.profile_kernels options]   (OUT_DIR relative to the repository root)
# Writes OUT_DIR/kernels.ncu-rep and OUT_DIR/kernels.csv (every metric of the sections below).
# What to read first: SpeedOfLight (compute vs memory bound), the tensor pipes in
# ComputeWorkloadAnalysis and the instruction mix in InstructionStats (HGMMA = Hopper's wgmma,
# HMMA = the older mma path), WarpStateStats (what the warps wait on), Occupancy and LaunchStats
# (registers per thread, shared memory per block, grid size).
set -eu
cd "$(dirname "$0")/../.."
out=${1:?usage: scripts/gpu/profile_kernels.sh OUT_DIR [options]}; shift
mkdir -p "$out"
sections="--section SpeedOfLight --section LaunchStats --section Occupancy --section ComputeWorkloadAnalysis \
  --section MemoryWorkloadAnalysis --section InstructionStats --section WarpStateStats"
# The matrix instructions the compiled kernels use, without counters: XLA dumps each module's PTX.
XLA_FLAGS="--xla_dump_to=$out/xla_dump" python3 -m benchmarks.profile_kernels "$@" || true
echo "PTX files: $(ls "$out"/xla_dump/*.ptx 2>/dev/null | wc -l); the dump's files by extension:"
ls "$out/xla_dump" 2>/dev/null | sed 's/.*\.//' | sort | uniq -c || true
for f in "$out"/xla_dump/*.ptx; do
  [ -e "$f" ] || continue
  printf '%s wgmma=%s mma.sync=%s\n' "$(basename "$f")" "$(grep -c 'wgmma' "$f")" "$(grep -c 'mma.sync' "$f")"
done | sort | uniq | grep -v 'wgmma=0 mma.sync=0' || true
# Hardware counters (--clock-control none leaves the clocks as they are: locking them needs admin rights on some hosts).
ncu --clock-control none -k regex:'forward_kernel|queries_kernel|slots_kernel' --launch-count 3 $sections \
    -f -o "$out/kernels" python3 -m benchmarks.profile_kernels "$@"
ncu -i "$out/kernels.ncu-rep" --page details --csv > "$out/kernels.csv"
ncu -i "$out/kernels.ncu-rep" --page details --print-units base | grep -E \
  'forward_kernel|queries_kernel|slots_kernel|Duration|Compute \(SM\) Throughput|Memory Throughput|Registers Per|Achieved Occupancy|Dynamic Shared|Executed Ipc A' || true
