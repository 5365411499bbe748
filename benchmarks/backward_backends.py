"""The backward passes on each backend, and forward+backward of the op, beside cuDNN.

    python -m benchmarks.backward_backends --lengths 4096 32768 --window 1024 \\
        --out results/benchmarks/backward_backends_h100.json

Shapes of ``benchmarks.attention``: B = 1, H = 32, Hkv = 8, D = 128, bf16, causal, random bias.
Per length, in one process:

- each backward pass alone (``PallasConfig.backward_backend``), the Triton kernel
  (``pallas_kernels.gpu.backward``: ``dma_backward_queries``, ``dma_backward_slots`` with
  transposed sums) and the Mosaic GPU kernel (``pallas_kernels.mosaic_gpu.backward_queries``,
  ``backward_slots``) on the same inputs (tables from the selection stage, lse and out from the
  forward kernel, a random output gradient), with the largest difference of their outputs;
- ``dma_attention`` forward+backward (gradients of q, k, v, bias) for each ``--pairs`` entry
  ``forward_backend/backward_backend``;
- cuDNN's dense causal forward+backward.

Every time is the median of single waited-for calls and amortised over ``--calls`` back-to-back
calls (ratios use the amortised times); cuDNN's forward runs first at each length to warm the
card. Writes JSON and prints a table last.
"""

from __future__ import annotations

import argparse
import traceback

import jax
import jax.numpy as jnp

from benchmarks.common import HEAD_DIM, HEADS, KV_HEADS, forward_and_backward, inputs, median_ms, result_header, write_json
from benchmarks.cudnn_parity import cudnn
from dma_jax import PallasConfig, dma_attention
from dma_jax.ops.pallas_gpu import _Call, _forward, _sequence_to_tiles, selection_stage
from dma_jax.timing import amortised_seconds
from pallas_kernels.gpu.backward import dma_backward_queries, dma_backward_slots

# Written before each Mosaic GPU pass first ran, kept beside what it measures.
PREDICTION = ("Mosaic GPU key-major pass (4 wgmma products of 64 keys x 64 rows x 128 per half tile, all 64 key and "
              "value rows re-gathered every tile, flush from registers): 3-4.5 ms at 32K against the Triton kernel's "
              "8.9 ms (H100), so forward+backward 18 -> 12-13 ms. Mosaic GPU query-major pass (3 wgmma products a "
              "64-key step, 128-row tiles, likely register spills): 2.5-3.5 ms at 32K against the Triton kernel's "
              "5.0 ms, so forward+backward with both about 10-11 ms")


def key_major_inputs(length, window, config):
    """The key-major pass' arguments (tile layout of the backward tiles)."""
    q, k, v, bias = inputs(length, seed=11)
    kt, vt = (jnp.transpose(x, (0, 2, 1, 3)) for x in (k, v))
    start, end, (table, table_bwd) = selection_stage(bias, window, length, causal=True, segment_ids=None,
                                                     key_mask=None, config=config)
    call = _Call(config, HEAD_DIM**-0.5, 0, True, KV_HEADS)
    out, lse = _forward(call, q, kt, vt, bias, start, end, table)
    d_out = jax.random.normal(jax.random.key(3), q.shape, q.dtype)
    delta = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)
    q_tiles, do_tiles, delta = (_sequence_to_tiles(x, KV_HEADS, config.block_q) for x in (q, d_out, delta))
    retile = lambda x: x.reshape((1, KV_HEADS, table_bwd.shape[2], -1) + x.shape[4:])
    return (retile(q_tiles), retile(do_tiles), retile(lse), retile(delta), kt, vt, bias, start, end, table_bwd)


def pass_rows(length, window, *, calls, repeats):
    from pallas_kernels.mosaic_gpu.backward_queries import dma_backward_queries_mosaic
    from pallas_kernels.mosaic_gpu.backward_slots import dma_backward_slots_mosaic

    config = PallasConfig(forward_backend="pallas_triton", backward_backend="auto").resolve(
        head_dim=HEAD_DIM, per_bias=HEADS // KV_HEADS, dtype=jnp.bfloat16)
    args = jax.jit(lambda: key_major_inputs(length, window, config))()
    common = dict(scale=HEAD_DIM**-0.5, block_q=config.block_q_bwd, q_offset=0)
    passes = {
        "query-major pass": (("dq", "dk_own", "dv_own", "db_own"), dict(
            triton=lambda *a: dma_backward_queries(*a, block_k=config.block_k_bwd, options=config.options_bwd,
                                                   **common),
            mosaic_gpu=lambda *a: dma_backward_queries_mosaic(*a, block_k=64, **common))),
        "key-major pass": (("dk", "dv", "dbias"), dict(
            triton=lambda *a: dma_backward_slots(*a, block_slots=config.block_slots, transposed=True,
                                                 options=config.options_slots, **common),
            mosaic_gpu=lambda *a: dma_backward_slots_mosaic(*a, **common))),
    }
    rows = []
    for part, (names, kernels) in passes.items():
        results = {}
        for variant, kernel in kernels.items():
            fn = jax.jit(kernel)
            row = dict(part=part, variant=variant, T=length, window=window)
            try:
                results[variant] = jax.block_until_ready(fn(*args))
                row.update(single_ms=median_ms(fn, *args, repeats=repeats),
                           amortised_ms=amortised_seconds(fn, *args, calls=calls) * 1e3)
            except Exception:  # noqa: BLE001 - the error text is the result for a kernel that fails
                row["error"] = traceback.format_exc()[-3000:]
            rows.append(row)
        if len(results) == 2:
            f32 = lambda x: x.astype(jnp.float32)  # noqa: E731
            rows[-1].update(
                max_diff_vs_triton={n: float(jnp.abs(f32(a) - f32(b)).max()) for n, a, b in zip(names, *results.values())},
                max_abs_triton={n: float(jnp.abs(f32(a)).max()) for n, a in zip(names, results["triton"])})
    return rows


def op_rows(length, window, pairs, *, calls, repeats):
    q, k, v, bias = inputs(length, seed=11)
    rows = []
    for pair in pairs:
        forward, backward = pair.split("/")
        config = PallasConfig(forward_backend=forward, backward_backend=backward)
        row = dict(part="forward+backward", variant=pair, T=length, window=window)
        try:
            fn = forward_and_backward(lambda q, k, v, b, c=config: dma_attention(q, k, v, b, window, implementation=c))
            row.update(single_ms=median_ms(fn, q, k, v, bias, repeats=repeats),
                       amortised_ms=amortised_seconds(fn, q, k, v, bias, calls=calls) * 1e3)
        except Exception:  # noqa: BLE001
            row["error"] = traceback.format_exc()[-3000:]
        rows.append(row)
    dense = forward_and_backward(cudnn)
    cudnn_ms = amortised_seconds(dense, q, k, v, calls=calls) * 1e3
    for row in rows:
        if "amortised_ms" in row:
            row["speedup_vs_cudnn"] = cudnn_ms / row["amortised_ms"]
    rows.append(dict(part="forward+backward", variant="cudnn dense causal", T=length, window=None,
                     single_ms=median_ms(dense, q, k, v, repeats=repeats), amortised_ms=cudnn_ms))
    return rows


def table(rows) -> str:
    lines = [f"{'part':<17}{'variant':<28}{'T':>7}{'single ms':>11}{'amort. ms':>11}{'vs cuDNN':>10}"]
    for r in rows:
        fmt = lambda key, spec: format(r[key], spec) if key in r else "-".rjust(int(spec.split(".")[0]))  # noqa: E731
        lines.append(f"{r['part']:<17}{r['variant']:<28}{r['T']:>7}{fmt('single_ms', '11.3f')}"
                     f"{fmt('amortised_ms', '11.3f')}{fmt('speedup_vs_cudnn', '10.2f')}"
                     + ("  ERROR " + r["error"].strip().splitlines()[-1][:90] if "error" in r else ""))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[4096, 32768])
    p.add_argument("--window", type=int, default=1024)
    p.add_argument("--pairs", nargs="+", default=["pallas_triton/pallas_triton", "auto/pallas_triton", "auto/auto"],
                   help="forward_backend/backward_backend of each op variant")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--out", default="results/benchmarks/backward_backends.json")
    args = p.parse_args(argv)
    result = dict(**result_header("backward_backends", "benchmarks.backward_backends", argv), prediction=PREDICTION,
                  shape=dict(B=1, H=HEADS, Hkv=KV_HEADS, D=HEAD_DIM, dtype="bfloat16", causal=True), rows=[])
    for length in args.lengths:
        q, k, v, _ = inputs(length, seed=11)
        # Warm the card (the Triton query-major pass' amortised time stays 1.8-3.6x its single
        # call with this too, H100: unexplained, docs/performance.md).
        amortised_seconds(jax.jit(cudnn), q, k, v, calls=args.calls)
        result["rows"] += pass_rows(length, args.window, calls=args.calls, repeats=args.repeats)
        result["rows"] += op_rows(length, args.window, args.pairs, calls=args.calls, repeats=args.repeats)
        write_json(result, args.out)
        print(table(result["rows"]), flush=True)
    print(table(result["rows"]))


if __name__ == "__main__":
    main()
