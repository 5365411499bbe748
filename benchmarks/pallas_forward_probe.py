"""Probe: does the gathered-tile forward kernel lower through Pallas Triton, and how fast is it?

    python benchmarks/pallas_forward_probe.py [--lengths 4096 32768] [--window 1024]

Not the issue's benchmark (that is benchmarks/attention.py, with the backward): a first look at
the forward kernel against cuDNN dense causal on the same card. Prints a table; JSON to --out.
Checks the kernel against the XLA gathered path at the smallest length first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dma_jax.tiles import num_tiles, tile_key_lists
from dma_jax.xla_attention import dma_attention_xla, key_intervals
from pallas_kernels.dma_forward import dma_forward


def prepare(q, bias, window, block_q, block_k):
    batch, q_len, heads, head_dim = q.shape
    bias_heads = bias.shape[1]
    start, end = key_intervals(bias, window, q_len, causal=True, segment_ids=None, key_mask=None)
    lists = tile_key_lists(end, q_len, block_q, window)
    _, lists = lax.sort(((lists < 0).astype(jnp.int32), lists), num_keys=1, is_stable=True)
    counts = (lists >= 0).sum(-1).astype(jnp.int32)
    width = lists.shape[-1]
    lists = jnp.pad(lists, ((0, 0), (0, 0), (0, 0), (0, -(-width // block_k) * block_k - width)), constant_values=-1)
    return start, end, lists, counts


def pallas_dma(q, k, v, bias, window, block_q, block_k, num_warps, num_stages, interpret=False):
    batch, q_len, heads, head_dim = q.shape
    kv_len = k.shape[1]
    bias_heads = bias.shape[1]
    r = heads // bias_heads
    tiles = num_tiles(q_len, block_q)
    start, end, lists, counts = prepare(q, bias, window, block_q, block_k)
    qp = jnp.pad(q, ((0, 0), (0, tiles * block_q - q_len), (0, 0), (0, 0)))
    qp = qp.reshape(batch, tiles, block_q, bias_heads, r, head_dim).transpose(0, 3, 1, 2, 4, 5)
    qp = qp.reshape(batch, bias_heads, tiles, block_q * r, head_dim)
    out, _ = dma_forward(
        qp, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), bias, start, end, lists, counts,
        scale=head_dim**-0.5, block_q=block_q, block_k=block_k, q_offset=kv_len - q_len,
        interpret=interpret, num_warps=num_warps, num_stages=num_stages,
    )
    out = out.reshape(batch, bias_heads, tiles, block_q, r, head_dim).transpose(0, 2, 3, 1, 4, 5)
    return out.reshape(batch, tiles * block_q, heads, head_dim)[:, :q_len]


def bench(fn, *args, repeats=20):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[4096, 32768])
    p.add_argument("--window", type=int, default=1024)
    p.add_argument("--configs", default="32,64,4,2;64,64,4,2;32,32,4,2;64,64,8,2;32,64,4,3")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    heads, kv_heads, head_dim, dtype = 32, 8, 128, jnp.bfloat16
    configs = [tuple(int(x) for x in c.split(",")) for c in args.configs.split(";")]
    rows = []
    for length in args.lengths:
        keys = jax.random.split(jax.random.key(length), 4)
        q = jax.random.normal(keys[0], (1, length, heads, head_dim), dtype)
        k = jax.random.normal(keys[1], (1, length, kv_heads, head_dim), dtype)
        v = jax.random.normal(keys[2], (1, length, kv_heads, head_dim), dtype)
        bias = jax.random.normal(keys[3], (1, kv_heads, length), jnp.float32)
        cudnn = jax.jit(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn"))
        row = dict(T=length, cudnn_fwd_ms=bench(cudnn, q, k, v))
        sel = jax.jit(lambda b: key_intervals(b, args.window, length, causal=True, segment_ids=None, key_mask=None))
        row["live_ranges_ms"] = bench(sel, bias)
        lists = jax.jit(lambda b: prepare(q, b, args.window, 64, 64))
        row["selection_and_lists_ms"] = bench(lists, bias)
        if length == min(args.lengths):
            ref = jax.jit(lambda *a: dma_attention_xla(*a, args.window, causal=True, scale=None, segment_ids=None, key_mask=None))(
                q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32), bias)
        for bq, bk, warps, stages in configs:
            name = f"pallas_bq{bq}_bk{bk}_w{warps}_s{stages}"
            try:
                fn = jax.jit(lambda q, k, v, b: pallas_dma(q, k, v, b, args.window, bq, bk, warps, stages))
                if length == min(args.lengths):
                    err = float(jnp.abs(fn(q, k, v, bias).astype(jnp.float32) - ref).max())
                    row[name + "_maxerr"] = err
                row[name + "_ms"] = bench(fn, q, k, v, bias)
            except Exception as e:  # record and go on: this is a probe
                row[name + "_error"] = repr(e)[:400]
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = dict(device=str(jax.devices()[0]), card=jax.devices()[0].device_kind, jax=jax.__version__, command=" ".join(sys.argv), window=args.window, rows=rows)
    if args.out:
        json.dump(result, open(args.out, "w"), indent=2)
    print("\nT        cudnn_fwd  live_ranges  sel+lists  " + "  ".join(f"{c}" for c in configs))
    for row in rows:
        vals = [row.get(f"pallas_bq{c[0]}_bk{c[1]}_w{c[2]}_s{c[3]}_ms", float('nan')) for c in configs]
        print(f"{row['T']:<8} {row['cudnn_fwd_ms']:9.3f} {row['live_ranges_ms']:11.3f} {row['selection_and_lists_ms']:10.3f}  " + "  ".join(f"{x:8.3f}" for x in vals))


if __name__ == "__main__":
    main()
