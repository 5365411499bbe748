"""The forward kernel on each backend, beside cuDNN's dense causal forward, in one process.

    python -m benchmarks.forward_backends --lengths 4096 32768 131072 --window 1024 \\
        --out results/benchmarks/forward_backends_h100.json

Backends (``PallasConfig.forward_backend``): "pallas_triton" (today's kernel, the Triton lowering
of Pallas), "jax_triton" (the same algorithm in the Triton language, launched with
``jax_triton.triton_call``), "mosaic_gpu" (Pallas Mosaic GPU). A variant is
``backend[:wW][:sS][:qQ][:kK][:contiguous]``: W warps, S pipeline stages, Q query positions and K
keys per step (defaults: the resolved ``PallasConfig``); ``contiguous`` replaces each tile's table
by the W keys just before the tile (same width, same work, but contiguous reads instead of
gathers: a diagnostic of what the gathers cost; its output differs, so it is not compared).
Shapes of ``benchmarks.attention``: B = 1, H = 32, Hkv = 8, D = 128, bf16, causal, random bias.

The kernels are timed alone, on key tables built once per tile size (the selection stage is not
in these times; ``benchmarks.gpu_breakdown`` times it), each as the median of single waited-for
calls and amortised over ``--calls`` back-to-back calls. Useful TFLOP/s count 4·D FLOPs per kept
(query head, key) pair over the amortised time. Each variant's output is compared with the first
variant's (largest absolute difference of out, and of the finite lse). A variant that fails to
compile or run records its error text instead of times. Beside each kernel, "op" times the whole
``dma_attention`` forward with that backend (selection stage, layouts, kernel). Writes JSON and
prints a table last.
"""

from __future__ import annotations

import argparse
import dataclasses
import traceback

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import HEAD_DIM, HEADS, KV_HEADS, inputs, kept_pairs, median_ms, result_header, write_json
from benchmarks.cudnn_parity import cudnn
from dma_jax import PallasConfig, dma_attention
from dma_jax.ops.pallas_gpu import MOSAIC_BLOCK_K, _Call, _forward, kernel_kv_layout, selection_stage
from dma_jax.timing import amortised_seconds

# Written before each backend's first run here, kept beside what it measures.
PREDICTION = ("jax_triton with a pipelined key loop (num_stages 3) and exp2: 1.2-1.5x faster than pallas_triton at "
              "32K and 128K, the same at 4K. mosaic_gpu (wgmma from shared memory, cp.async row gathers into "
              "swizzled slots, 2 stages; 1.79 ms at 32K on a synthetic table in its own test run): 1.8-2.0 ms at "
              "32K with real tables, about 1.5x faster than pallas_triton at every length")


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    backend: str
    warps: int | None = None
    stages: int | None = None
    block_q: int | None = None
    block_k: int | None = None
    contiguous: bool = False  # diagnostic: a sliding-window table of the same width (no scattered reads)


def parse_variant(text: str) -> Variant:
    """'jax_triton:w8:s3:q64:k64' -> Variant (fields left out keep the resolved config's)."""
    backend, *fields = text.split(":")
    names = dict(w="warps", s="stages", q="block_q", k="block_k")
    contiguous = "contiguous" in fields
    fields = [f for f in fields if f != "contiguous"]
    return Variant(text, backend, contiguous=contiguous, **{names[f[0]]: int(f[1:]) for f in fields})


def config_of(variant: Variant) -> PallasConfig:
    """The resolved ``PallasConfig`` a variant runs with."""
    base = PallasConfig(forward_backend=variant.backend)
    options = dataclasses.replace(base.options, num_warps=variant.warps or base.options.num_warps,
                                  num_stages=variant.stages or base.options.num_stages)
    config = dataclasses.replace(base, options=options, block_q=variant.block_q,
                                 block_k=variant.block_k or base.block_k)
    return config.resolve(head_dim=HEAD_DIM, per_bias=HEADS // KV_HEADS, dtype=jnp.bfloat16)


def kernel_call(config: PallasConfig, length: int, bias, window: int):
    """(jitted forward of (q, k, v, bias, start, end, table) in the kernels' layouts, its static
    tables): the tables are built once here, so only the kernel is timed."""
    start, end, (table, _) = jax.jit(lambda b: selection_stage(b, window, length, causal=True, segment_ids=None,
                                                               key_mask=None, config=config))(bias)
    call = _Call(config, HEAD_DIM**-0.5, 0, True, KV_HEADS)
    return jax.jit(lambda *a: _forward(call, *a)), (start, end, table)


def contiguous_table(table, block_q):
    """A table of the same shape listing, for tile n, the keys ``[n * block_q - W, n * block_q)``
    (-1 before key 0)."""
    tiles, width = table.shape[-2:]
    keys = jnp.arange(tiles)[:, None] * block_q - width + jnp.arange(width)[None, :]
    return jnp.broadcast_to(jnp.where(keys >= 0, keys, -1).astype(table.dtype), table.shape)


def measure(variants, length, window, *, calls, repeats) -> list[dict]:
    q, k, v, bias = inputs(length, seed=11)  # k, v: (B, Tk, Hkv, D)
    useful = 4 * HEAD_DIM * kept_pairs(bias, window) * (HEADS // KV_HEADS)
    rows, first = [], None
    dense = jax.jit(cudnn)
    # Warm the card first: the first variant timed in a process once gave an amortised time 2.4x
    # its own single-call median (H100, 32K).
    amortised_seconds(dense, q, k, v, calls=calls)
    for variant in variants:
        row = dict(variant=variant.name, T=length, window=window)
        try:
            config = config_of(variant)
            block_k = MOSAIC_BLOCK_K if variant.backend == "mosaic_gpu" else config.block_k
            row.update(block_q=config.block_q, block_k=block_k, warps=config.options.num_warps,
                       stages=config.options.num_stages)
            pad = -length % config.block_q
            qp = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0)))
            fn, tables = kernel_call(config, length, bias, window)
            if variant.contiguous:
                tables = tables[:2] + (contiguous_table(tables[2], config.block_q),)
            args = (qp, kernel_kv_layout(config, k), kernel_kv_layout(config, v), bias) + tables
            out, lse = jax.block_until_ready(fn(*args))
            row.update(single_ms=median_ms(fn, *args, repeats=repeats),
                       amortised_ms=amortised_seconds(fn, *args, calls=calls) * 1e3)
            row["useful_tflops"] = useful / (row["amortised_ms"] * 1e-3) / 1e12
            if not variant.contiguous:  # the whole op: selection stage, layouts and this kernel
                whole = jax.jit(lambda q, k, v, b: dma_attention(q, k, v, b, window, implementation=config))
                row.update(op_single_ms=median_ms(whole, q, k, v, bias, repeats=repeats),
                           op_amortised_ms=amortised_seconds(whole, q, k, v, bias, calls=calls) * 1e3)
                out = np.asarray(out[:, :length], np.float32)
                lse = np.asarray(lse, np.float32).reshape(-1)
                if first is None:
                    first = (out, lse, variant.name)
                else:
                    row.update(vs=first[2], out_max_diff=float(np.abs(out - first[0]).max()))
                    if first[1].shape == lse.shape:
                        finite = np.isfinite(first[1])
                        row.update(lse_max_diff=float(np.abs(lse[finite] - first[1][finite]).max()),
                                   empty_rows_match=bool(np.array_equal(np.isfinite(lse), finite)))
        except Exception:  # noqa: BLE001 - the exact error is the result for a route that fails
            text = traceback.format_exc()
            row["error"] = text if len(text) < 6000 else text[:3000] + "\n[...]\n" + text[-3000:]
        rows.append(row)
    cudnn_ms = amortised_seconds(dense, q, k, v, calls=calls) * 1e3  # timed again on a warm card
    for row in rows:
        if "amortised_ms" in row:
            row["speedup_vs_cudnn"] = cudnn_ms / row["amortised_ms"]
        if "op_amortised_ms" in row:
            row["op_speedup_vs_cudnn"] = cudnn_ms / row["op_amortised_ms"]
    baseline = dict(variant="cudnn dense causal", T=length, window=window,
                    single_ms=median_ms(dense, q, k, v, repeats=repeats), amortised_ms=cudnn_ms)
    return [baseline] + rows


def table(rows) -> str:
    lines = [f"{'T':>7} {'variant':<26} {'single ms':>9} {'amort ms':>9} {'x cuDNN':>8} {'TFLOP/s':>8} {'max diff':>9} "
             f"{'op ms':>7} {'op x cuDNN':>10}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['T']:>7} {r['variant']:<26} FAILED: {r['error'].strip().splitlines()[-1][:80]}")
            continue
        fmt = lambda key, spec: format(r[key], spec) if key in r else "-"  # noqa: E731
        lines.append(f"{r['T']:>7} {r['variant']:<26} {fmt('single_ms', '9.3f')} {fmt('amortised_ms', '9.3f')} "
                     f"{fmt('speedup_vs_cudnn', '8.2f')} {fmt('useful_tflops', '8.1f')} {fmt('out_max_diff', '9.2e')} "
                     f"{fmt('op_amortised_ms', '7.3f')} {fmt('op_speedup_vs_cudnn', '10.2f')}")
    return "\n".join(lines)


def plot(result: dict, out) -> None:
    """Speed-up over cuDNN's dense causal forward against T, per backend: the kernel alone (solid)
    and the whole forward op (dashed); contiguous-table diagnostics are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.common import card_label

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    rows = [r for r in result["rows"] if "speedup_vs_cudnn" in r and not r["variant"].endswith("contiguous")]
    for i, name in enumerate(dict.fromkeys(r["variant"] for r in rows)):
        mine = sorted((r for r in rows if r["variant"] == name), key=lambda r: r["T"])
        color = f"C{i}"
        ax.plot([r["T"] for r in mine], [r["speedup_vs_cudnn"] for r in mine], "o-", color=color,
                label=f"{name}: kernel")
        if all("op_speedup_vs_cudnn" in r for r in mine):
            ax.plot([r["T"] for r in mine], [r["op_speedup_vs_cudnn"] for r in mine], "s--", color=color,
                    label=f"{name}: whole op")
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="T (causal, w = 1024)", ylabel="cuDNN time / DMA time (amortised)")
    ax.set_title(f"DMA forward against cuDNN dense causal\n{card_label(result)}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[4096, 32768, 131072])
    p.add_argument("--window", type=int, default=1024)
    p.add_argument("--variants", nargs="+",
                   default=["pallas_triton", "jax_triton", "mosaic_gpu", "pallas_triton:contiguous",
                            "jax_triton:contiguous", "mosaic_gpu:contiguous"])
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", default=None)
    p.add_argument("--prediction", default=PREDICTION,
                   help="what this run is expected to show, written before it (kept in the JSON)")
    args = p.parse_args(argv)
    variants = [parse_variant(v) for v in args.variants]
    rows = []
    for length in args.lengths:
        rows += measure(variants, length, args.window, calls=args.calls, repeats=args.repeats)
        print(table(rows[-len(variants) - 1:]), flush=True)
    result = dict(result_header("forward_backends", "benchmarks.forward_backends", argv), prediction=args.prediction,
                  versions=_versions(), rows=rows)
    if args.out:
        path = write_json(result, args.out)
        plot(result, path.with_suffix(".png"))
    print(table(rows))


def _versions() -> dict:
    versions = dict(jax=jax.__version__)
    for name in ("jaxlib", "triton", "jax_triton"):
        try:
            versions[name] = __import__(name).__version__
        except Exception as error:  # noqa: BLE001
            versions[name] = f"not importable: {type(error).__name__}"
    return versions


if __name__ == "__main__":
    main()
