"""DMA against cuDNN where a user first meets it: the dense regime and short sequences.

    python -m benchmarks.cudnn_parity --out results/benchmarks/cudnn_parity.json

Shapes of ``benchmarks.attention`` (B = 1, H = 32, Hkv = 8, D = 128, bf16, causal, random bias).
Three parts, each beside cuDNN's dense causal attention (``jax.nn.dot_product_attention``,
``implementation="cudnn"``) in the same process:

- dense regime (``--dense-lengths``, window None, so every query keeps every key it sees):
  ``dma_attention`` with ``implementation=None`` (which takes the folded-bias cuDNN path by itself,
  ``dma_jax.ops.dense``; the path taken is recorded) and with the Pallas kernels forced, forward
  and forward+backward; plus the folded path's largest error against a float32 reference, beside a
  bf16 dense reference's;
- sparse (``--sparse-lengths`` at ``--window``): the Pallas kernels' forward and forward+backward;
- the selection stage alone (live ranges, slots, both key tables) at the sparse lengths, and its
  share of the forward.

Every time is given twice: the median of single waited-for calls, and amortised over ``--calls``
back-to-back calls with one wait, as a training loop runs them. Ratios use the amortised times.
Writes JSON (card, versions, command) and prints a table last.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from benchmarks.attention import selection_stage
from benchmarks.common import forward_and_backward, inputs, median_ms, result_header, write_json
from dma_jax import PallasConfig, dma_attention, dma_attention_reference
from dma_jax.ops.attention import choose_path
from dma_jax.timing import amortised_seconds


# Written before the first GPU run (docs/performance.md); kept beside what it measures.
PREDICTION = ("dense regime (folded head dim 136 plus a few XLA ops building the folded q and k): 1.05-1.10x "
              "cuDNN's amortised time at 8K and 1.10-1.20x at 2K, forward and forward+backward")


def cudnn(q, k, v, *_):
    return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")


def timings(fn, args, *, repeats: int, calls: int) -> dict:
    """Single-call median and amortised milliseconds of a jitted ``fn(*args)``."""
    return dict(single_ms=median_ms(fn, *args, repeats=repeats),
                amortised_ms=amortised_seconds(fn, *args, calls=calls) * 1e3)


def dense_errors(length: int) -> dict:
    """Largest error of the automatic (folded-bias) path's output and four gradients against a
    float32 reference, beside a bf16 dense reference's, at T = ``length``."""
    q, k, v, bias = inputs(length, seed=3)
    cotangent = jax.random.normal(jax.random.key(5), q.shape, jnp.float32)
    f32 = lambda x: x.astype(jnp.float32)

    def value_and_grads(fn, *a):
        out, vjp = jax.vjp(fn, *a)
        return (out,) + vjp(cotangent.astype(out.dtype))

    reference = lambda *a: dma_attention_reference(*a, None)
    automatic = lambda *a: dma_attention(*a, None)
    with jax.default_matmul_precision("highest"):
        expected = jax.jit(lambda *a: value_and_grads(reference, *a))(f32(q), f32(k), f32(v), bias)
    bf16 = jax.jit(lambda *a: value_and_grads(reference, *a))(q, k, v, bias)
    got = jax.jit(lambda *a: value_and_grads(automatic, *a))(q, k, v, bias)
    result = {}
    for name, e, r, g in zip(("out", "dq", "dk", "dv", "dbias"), expected, bf16, got):
        err, ref_err = float(jnp.abs(f32(g) - e).max()), float(jnp.abs(f32(r) - e).max())
        result[name] = dict(max_err=err, bf16_reference_max_err=ref_err, within_2x=bool(err <= 2 * ref_err + 1e-6))
    return result


def measure(kind, fn, args, length, window, repeats, calls, backward=True) -> dict:
    row = dict(kind=kind, T=length, window=window)
    try:
        row["fwd"] = timings(jax.jit(fn), args, repeats=repeats, calls=calls)
        if backward:
            row["fwd_bwd"] = timings(forward_and_backward(fn), args, repeats=repeats, calls=calls)
    except Exception as e:  # record and go on: one refused case must not lose the others
        row["error"] = repr(e)[:300]
    print(row, flush=True)
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dense-lengths", type=int, nargs="+", default=[2048, 8192])
    p.add_argument("--sparse-lengths", type=int, nargs="+", default=[4096, 32768])
    p.add_argument("--window", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=20, help="single waited-for calls (median)")
    p.add_argument("--calls", type=int, default=100, help="back-to-back calls per amortised time")
    p.add_argument("--out", default="results/benchmarks/cudnn_parity.json")
    args = p.parse_args(argv)
    result = dict(**result_header("cudnn_parity", "benchmarks.cudnn_parity", argv),
                  shape=dict(B=1, H=32, Hkv=8, D=128, dtype="bfloat16", causal=True), prediction=PREDICTION,
                  rows=[], errors={})
    pallas = PallasConfig()
    for length in args.dense_lengths:
        q, k, v, bias = inputs(length)
        path = choose_path(q, k, bias, None, segment_ids=None, implementation=None)
        result["rows"].append(measure("cudnn", cudnn, (q, k, v, bias), length, None, args.repeats, args.calls))
        row = measure("dma_auto", lambda *a: dma_attention(*a, None), (q, k, v, bias), length, None, args.repeats,
                      args.calls)
        row["path"] = type(path).__name__
        result["rows"].append(row)
        result["rows"].append(measure("dma_pallas", lambda *a: dma_attention(*a, None, implementation=pallas),
                                      (q, k, v, bias), length, None, args.repeats, args.calls))
    result["errors"][str(min(args.dense_lengths))] = dense_errors(min(args.dense_lengths))
    print("dense errors", result["errors"], flush=True)
    for length in args.sparse_lengths:
        q, k, v, bias = inputs(length)
        result["rows"].append(measure("cudnn", cudnn, (q, k, v, bias), length, None, args.repeats, args.calls))
        result["rows"].append(measure("dma_pallas", lambda *a: dma_attention(*a, args.window, implementation=pallas),
                                      (q, k, v, bias), length, args.window, args.repeats, args.calls))
        stage = jax.jit(selection_stage(args.window, length, pallas))
        result["rows"].append(measure("selection_stage", stage, (bias,), length, args.window, args.repeats,
                                      args.calls, backward=False))
        write_json(result, args.out)
    result["summary"] = summary(result["rows"])
    write_json(result, args.out)
    print(f"\n{'kind':<16}{'T':>7}{'w':>6}{'fwd single':>12}{'fwd amort':>11}{'f+b single':>12}{'f+b amort':>11}"
          f"{'fwd/cuDNN':>11}{'f+b/cuDNN':>11}")
    for row in result["rows"]:
        f, fb = row.get("fwd", {}), row.get("fwd_bwd", {})
        ratio = result["summary"].get(f"{row['kind']}/{row['T']}/{row['window']}", {})
        cells = [f.get("single_ms"), f.get("amortised_ms"), fb.get("single_ms"), fb.get("amortised_ms"),
                 ratio.get("fwd_vs_cudnn"), ratio.get("fwd_bwd_vs_cudnn")]
        text = "".join(f"{c:>11.3f} " if c is not None else f"{'-':>11} " for c in cells)
        print(f"{row['kind']:<16}{row['T']:>7}{str(row['window']):>6}{text}{row.get('error', '')[:60]}")
    print(f"(ms; ratios = amortised time / cuDNN's amortised time; {result['card']['device_kind']})")


def summary(rows) -> dict:
    """Amortised time over cuDNN's at the same T, per row (the selection stage: its share of the
    sparse forward at the same T)."""
    cudnn_rows = {r["T"]: r for r in rows if r["kind"] == "cudnn" and "fwd" in r}
    forward = {r["T"]: r for r in rows if r["kind"] == "dma_pallas" and r["window"] is not None and "fwd" in r}
    out = {}
    for r in rows:
        base = cudnn_rows.get(r["T"])
        if r["kind"] == "cudnn" or base is None or "fwd" not in r:
            continue
        entry = dict(fwd_vs_cudnn=r["fwd"]["amortised_ms"] / base["fwd"]["amortised_ms"])
        if "fwd_bwd" in r and "fwd_bwd" in base:
            entry["fwd_bwd_vs_cudnn"] = r["fwd_bwd"]["amortised_ms"] / base["fwd_bwd"]["amortised_ms"]
        if r["kind"] == "selection_stage" and r["T"] in forward:
            entry["share_of_forward"] = r["fwd"]["amortised_ms"] / forward[r["T"]]["fwd"]["amortised_ms"]
        out[f"{r['kind']}/{r['T']}/{r['window']}"] = entry
    return out


if __name__ == "__main__":
    main()
