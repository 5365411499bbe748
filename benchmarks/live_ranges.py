"""Time ``live_ranges`` (selection for every key, causal) and record it as JSON.

    python benchmarks/live_ranges.py --out benchmarks/results/live_ranges_cpu.json
    python benchmarks/live_ranges.py --lengths 4096 32768 131072 --kernel-configs 64,128,4 32,128,4  # GPU

Times the jitted call after warm-up (median of --repeats), B=1, Hb=8 bias heads, random
normal bias, for each T, and reports the compiled temporary memory next to what one T x T
bool mask would take. Two implementations: the wavelet matrix in XLA
(``selection.live_ranges_unchecked``) and, on a GPU, the selection kernel
(``selection_scan.live_ranges_scan``) for each ``--kernel-configs`` entry
``block_keys,block_index,num_warps[,lazy]`` (lazy 1 or 0, default 0: see
``kth_beater``); every kernel result is checked equal to the wavelet's.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys

import jax
import numpy as np

from dma_jax.selection import live_ranges_unchecked
from dma_jax.selection_scan import live_ranges_scan
from dma_jax.timing import timed_runs
from pallas_kernels.common import KernelOptions


def variants(kernel_configs: list[str]) -> dict:
    """name -> jitted ``fn(bias, window)``: the wavelet matrix, plus each kernel config on a GPU."""
    out = {"wavelet": jax.jit(live_ranges_unchecked, static_argnames="window")}
    if jax.default_backend() != "gpu":
        return out
    for text in kernel_configs:
        block_keys, block_index, warps, lazy = ([int(x) for x in text.split(",")] + [0])[:4]
        options = KernelOptions(num_warps=warps, num_stages=1)
        out[f"kernel {text}"] = jax.jit(lambda b, window, o=options, bk=block_keys, bi=block_index, lz=bool(lazy):
                                        live_ranges_scan(b, window, options=o, block_keys=bk, block_index=bi, lazy=lz),
                                        static_argnames="window")
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[32768, 131072], help="sequence lengths T")
    parser.add_argument("--window", type=int, default=1024, help="keys kept per query")
    parser.add_argument("--heads", type=int, default=8, help="bias heads Hb (B=1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per length (median)")
    parser.add_argument("--kernel-configs", nargs="*", default=["64,128,4"],
                        help="selection kernel settings block_keys,block_index,num_warps[,lazy] (GPU only)")
    parser.add_argument("--out", default=None, help="JSON file to write")
    args = parser.parse_args(argv)

    rows = []
    for length in args.lengths:
        bias = jax.random.normal(jax.random.key(0), (1, args.heads, length))
        expected = None
        for name, fn in variants(args.kernel_configs).items():
            compiled = fn.lower(bias, window=args.window).compile()
            memory = compiled.memory_analysis()
            ends = np.asarray(compiled(bias).block_until_ready())
            expected = ends if expected is None else expected
            times = timed_runs(compiled, bias, repeats=args.repeats, warmup=0)
            ever_kept = int((ends > np.arange(length)).sum())
            rows.append(
                dict(
                    T=length,
                    implementation=name,
                    median_s=statistics.median(times),
                    times_s=times,
                    matches_wavelet=bool(np.array_equal(ends, expected)),
                    temp_bytes=None if memory is None else memory.temp_size_in_bytes,
                    dense_mask_bytes=args.heads * length * length,
                    keys_ever_kept_per_head=ever_kept / args.heads,
                )
            )
            temp = rows[-1]["temp_bytes"]
            print(f"T={length:>7}  {name:<18} median {rows[-1]['median_s'] * 1e3:8.3f} ms  "
                  f"temp {(temp or 0) / 2**20:7.1f} MiB  ever kept/head {ever_kept / args.heads:.0f}  "
                  f"matches wavelet: {rows[-1]['matches_wavelet']}", flush=True)
    result = dict(
        benchmark="live_ranges",
        command=" ".join([sys.executable.split("/")[-1]] + sys.argv),
        device=str(jax.devices()[0]),
        device_kind=jax.devices()[0].device_kind,
        cpu=platform.processor() or platform.machine(),
        cpu_count=__import__("os").cpu_count(),
        jax=jax.__version__,
        window=args.window,
        bias_heads=args.heads,
        batch=1,
        rows=rows,
    )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
