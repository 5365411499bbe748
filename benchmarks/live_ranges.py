"""Time ``live_ranges`` (selection for every key, causal) and record it as JSON.

    python -m benchmarks.live_ranges --out results/benchmarks/live_ranges_cpu.json

Times the jitted call after warm-up (median of --repeats), B=1, Hb=8 bias heads, random
normal bias, for each T, and reports the compiled temporary memory next to what one T x T
bool mask would take.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics

import jax
import numpy as np

from benchmarks.common import result_header, write_json
from dma_jax.selection.ranges import live_ranges_unchecked
from dma_jax.timing import timed_runs


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[32768, 131072], help="sequence lengths T")
    parser.add_argument("--window", type=int, default=1024, help="keys kept per query")
    parser.add_argument("--heads", type=int, default=8, help="bias heads Hb (B=1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per length (median)")
    parser.add_argument("--out", default=None, help="JSON file to write")
    args = parser.parse_args(argv)

    rows = []
    for length in args.lengths:
        bias = jax.random.normal(jax.random.key(0), (1, args.heads, length))
        compiled = jax.jit(live_ranges_unchecked, static_argnames="window").lower(bias, window=args.window).compile()
        memory = compiled.memory_analysis()
        ends = np.asarray(compiled(bias).block_until_ready())
        times = timed_runs(compiled, bias, repeats=args.repeats, warmup=0)
        ever_kept = int((ends > np.arange(length)).sum())
        rows.append(
            dict(
                T=length,
                implementation="wavelet",
                median_s=statistics.median(times),
                times_s=times,
                temp_bytes=None if memory is None else memory.temp_size_in_bytes,
                dense_mask_bytes=args.heads * length * length,
                keys_ever_kept_per_head=ever_kept / args.heads,
            )
        )
        temp = rows[-1]["temp_bytes"]
        print(f"T={length:>7}  median {rows[-1]['median_s'] * 1e3:8.3f} ms  temp {(temp or 0) / 2**20:7.1f} MiB  "
              f"ever kept/head {ever_kept / args.heads:.0f}", flush=True)
    result = dict(
        **result_header("live_ranges", "benchmarks.live_ranges", argv),
        cpu=platform.processor() or platform.machine(),
        cpu_count=os.cpu_count(),
        window=args.window,
        bias_heads=args.heads,
        batch=1,
        rows=rows,
    )
    if args.out:
        write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
