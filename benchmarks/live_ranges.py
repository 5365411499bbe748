"""Time ``live_ranges`` (selection for every key, causal) and record it as JSON.

    python benchmarks/live_ranges.py --out benchmarks/results/live_ranges_cpu.json

Times the jitted call after warm-up (median of --repeats), B=1, Hb=8 bias heads, random
normal bias, for each T, and reports the compiled temporary memory next to what one T x T
bool mask would take.
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
from dma_jax.timing import timed_runs


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[32768, 131072], help="sequence lengths T")
    parser.add_argument("--window", type=int, default=1024, help="keys kept per query")
    parser.add_argument("--heads", type=int, default=8, help="bias heads Hb (B=1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per length (median)")
    parser.add_argument("--out", default=None, help="JSON file to write")
    args = parser.parse_args(argv)

    fn = jax.jit(live_ranges_unchecked, static_argnames="window")
    rows = []
    for length in args.lengths:
        bias = jax.random.normal(jax.random.key(0), (1, args.heads, length))
        compiled = fn.lower(bias, args.window).compile()
        memory = compiled.memory_analysis()
        ends = compiled(bias).block_until_ready()
        times = timed_runs(compiled, bias, repeats=args.repeats, warmup=0)
        ever_kept = int((np.asarray(ends) > np.arange(length)).sum())
        rows.append(
            dict(
                T=length,
                median_s=statistics.median(times),
                times_s=times,
                temp_bytes=None if memory is None else memory.temp_size_in_bytes,
                dense_mask_bytes=args.heads * length * length,
                keys_ever_kept_per_head=ever_kept / args.heads,
            )
        )
        print(f"T={length:>7}  median {rows[-1]['median_s'] * 1e3:8.1f} ms  "
              f"temp {rows[-1]['temp_bytes'] / 2**20:7.1f} MiB  ever kept/head {ever_kept / args.heads:.0f}")
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
