"""One forward+backward of DMA through the Pallas kernels, for a profiler to watch.

    ncu -k regex:'forward_kernel|queries_kernel|slots_kernel' --launch-count 3 \\
        python3 -m benchmarks.profile_kernels --length 32768 --window 1024

(``scripts/profile_kernels.sh`` runs exactly that, with the sections worth reading.) The shapes are
``benchmarks.common``'s: B = 1, H = 32, Hkv = 8, D = 128, bf16, causal, random bias. The
call runs ``--runs`` times after one compile; the kernels launch once per run, so the profiler
sees the same work each time.
"""

from __future__ import annotations

import argparse

import jax

from benchmarks.common import forward_and_backward, inputs
from dma_jax import dma_attention


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--length", type=int, default=32768)
    p.add_argument("--window", type=int, default=1024)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--implementation", default="pallas", help="dma_attention's (pallas on the GPU; xla elsewhere)")
    args = p.parse_args(argv)
    q, k, v, bias = inputs(args.length)
    step = forward_and_backward(lambda q, k, v, b: dma_attention(q, k, v, b, args.window,
                                                                 implementation=args.implementation))
    compiled = step.lower(q, k, v, bias).compile()
    for _ in range(args.runs):
        jax.block_until_ready(compiled(q, k, v, bias))
    print(f"ran forward+backward {args.runs}x at T={args.length}, w={args.window} on {jax.devices()[0].device_kind}")


if __name__ == "__main__":
    main()
