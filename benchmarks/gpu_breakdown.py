"""Where the time of one DMA call goes on the GPU: every kernel, from JAX's own profiler.

    python -m benchmarks.gpu_breakdown --lengths 4096 32768 --window 1024 --out results/benchmarks/gpu_breakdown.json

For each T (and each ``--order-statistics`` and ``--digit-bits``: the selection's range order
statistics, block counts or the wavelet matrix, and the wavelet matrix's bits per level, to compare
them in one run) it traces ``--runs`` calls of four jitted parts, with the shapes of
``benchmarks.attention`` (B = 1, H = 32, Hkv = 8, D = 128, bf16, causal, random bias; ``--batch``,
``--heads``, ``--kv-heads`` and ``--segments`` change them, e.g. to a model layer's call):
``live_ranges``, the whole selection stage of the Pallas path (live ranges,
slots, both key tables), the forward and the forward+backward through ``dma_attention``. From the
trace (``jax.profiler``, no Nsight needed) it reports per call: wall time (median, untraced),
amortised wall time (``--calls`` back-to-back calls, one wait), device busy time (the sum of kernel durations on the GPU's streams), the number of kernels
launched, and the kernels that take the most time. Wall minus busy is time the GPU sat idle:
launch gaps and host round trips (a ``while_loop`` reads its condition on the host every turn).
``--cudnn`` adds dense causal forward+backward on cuDNN at the same shape, for the backward's
comparison:

    python -m benchmarks.gpu_breakdown --lengths 2048 --window 512 --batch 32 --heads 8 --kv-heads 8 --segments --cudnn --out results/benchmarks/gpu_breakdown_lm_2k.json

Also draws ``<out>.png``: each call's wall time split into the DMA kernels, layout copies, the
other XLA kernels (mostly selection) and idle time. ``--plot-only`` redraws it from ``--out``.
"""

from __future__ import annotations

import argparse
import collections
import glob
import itertools
import os
import tempfile
from typing import NamedTuple

import jax
import jax.numpy as jnp

from benchmarks.attention import selection_stage
from benchmarks.common import (
    HEADS, KV_HEADS, add_output_arguments, card_label, forward_and_backward, inputs, median_ms, png_beside, replot,
    result_header, write_json,
)
from dma_jax import PallasConfig, dma_attention, live_ranges
from dma_jax.selection import order_statistics, ranges
from dma_jax.timing import amortised_seconds


def kernel_events(profile, device_prefix: str = "/device:GPU"):
    """(name, duration_ns) of every kernel or copy on a device stream of a ``jax.profiler.ProfileData``.

    Device planes are named ``/device:GPU:<n>``; their stream lines ``Stream #<id>(...)``. Other
    lines of a device plane (XLA modules, XLA ops, launch stats) restate the same time and are
    skipped.
    """
    for plane in profile.planes:
        if not plane.name.startswith(device_prefix):
            continue
        for line in plane.lines:
            if not line.name.startswith("Stream"):
                continue
            for event in line.events:
                yield event.name, float(event.duration_ns)


def summarise(events, runs: int, top: int) -> dict:
    """Per-call busy milliseconds, kernel count and the ``top`` kernels by time (per call)."""
    total = collections.Counter()
    count = collections.Counter()
    for name, duration in events:
        total[name] += duration
        count[name] += 1
    busy_ns = sum(total.values())
    kernels = [dict(name=name[:120], ms=ns / runs / 1e6, launches=count[name] / runs, share=ns / max(1.0, busy_ns))
               for name, ns in total.most_common(top)]
    return dict(busy_ms=busy_ns / runs / 1e6, kernels_per_call=sum(count.values()) / runs, top=kernels)


CATEGORIES = (  # (label, colour, substrings of kernel names), first match wins
    ("DMA forward kernel", "tab:blue", ("_forward_kernel",)),
    ("DMA backward, query-major", "tab:orange", ("_queries_kernel",)),
    ("DMA backward, key-major", "tab:red", ("_slots_kernel", "without_initial_refs")),
    ("DMA kernels on Mosaic GPU (one name for all)", "tab:cyan", ("mosaic_gpu",)),
    ("cuDNN attention (--cudnn)", "tab:purple", ("cudnn", "sdpa")),
    ("transposes and copies", "tab:gray", ("transpose", "Memcpy", "copy")),
)


def split_by_category(row: dict) -> dict:
    """Milliseconds per call of each category of ``CATEGORIES``, the other XLA kernels (busy time
    not in those, including kernels below the row's top list) and idle time (wall - busy)."""
    parts = {label: 0.0 for label, _, _ in CATEGORIES}
    for kernel in row["top"]:
        for label, _, needles in CATEGORIES:
            if any(n in kernel["name"] for n in needles):
                parts[label] += kernel["ms"]
                break
    parts["other XLA kernels (selection, ...)"] = row["busy_ms"] - sum(parts.values())
    parts["GPU idle (launch gaps)"] = max(0.0, row["wall_ms"] - row["busy_ms"])
    return parts


def variant_of(row: dict) -> str:
    """The selection variant a row ran: its order statistics and digit bits (older files: the
    digit bits alone, or ``selection``, BITS:JUMPS)."""
    bits = str(row.get("digit_bits", row.get("selection", "-")))
    return f"{row['order_statistics']}:{bits}" if "order_statistics" in row else bits


def plot(result: dict, path: str) -> None:
    """Stacked bars, one per (T, part), of ``split_by_category``; one panel per T."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted({row["T"] for row in result["rows"]})
    colours = [c for _, c, _ in CATEGORIES] + ["tab:green", "white"]
    fig, axes = plt.subplots(1, len(lengths), figsize=(6 * len(lengths), 4.2), squeeze=False)
    for ax, length in zip(axes[0], lengths):
        rows = [row for row in result["rows"] if row["T"] == length]
        for y, row in enumerate(rows):
            left = 0.0
            for (label, ms), colour in zip(split_by_category(row).items(), colours):
                ax.barh(y, ms, left=left, color=colour, edgecolor="black", linewidth=0.4, label=label if y == 0 else None)
                left += ms
            ax.text(left, y, f" {row['wall_ms']:.2f} ms", va="center", fontsize=8)
        several = len({variant_of(row) for row in rows}) > 1
        ax.set_yticks(range(len(rows)), [row["part"].replace("_", " ") + (f" ({variant_of(row)})" if several else "")
                                         for row in rows])
        ax.invert_yaxis()
        ax.set_xlabel("milliseconds per call")
        ax.set_title(f"T = {length}, w = {result['window']}")
        ax.set_xlim(0, max(row["wall_ms"] for row in rows) * 1.2)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=2, frameon=False)
    flags = f", XLA_FLAGS={result['xla_flags']}" if result.get("xla_flags") else ""
    fig.suptitle(f"Where a DMA call's time goes ({card_label(result)}{flags})", fontsize=10)
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


class Shape(NamedTuple):
    """The attention call's shape: ``benchmarks.attention``'s by default (B = 1, H = 32, Hkv = 8);
    ``segments``: pass all-ones segment ids (as a model's packed batches do); ``cudnn``: also time
    dense causal attention on cuDNN at this shape."""

    batch: int = 1
    heads: int = HEADS
    kv_heads: int = KV_HEADS
    segments: bool = False
    cudnn: bool = False


def trace(fn, args, runs: int, reader=kernel_events) -> list:
    """Kernel events of ``runs`` calls of the (already compiled) ``fn``: what ``reader`` takes
    from the ``jax.profiler.ProfileData`` (default ``kernel_events``)."""
    from jax.profiler import ProfileData

    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder):
            for _ in range(runs):
                jax.block_until_ready(fn(*args))
        paths = glob.glob(os.path.join(folder, "**", "*.xplane.pb"), recursive=True)
        if not paths:
            raise RuntimeError("the profiler wrote no .xplane.pb")
        return list(reader(ProfileData.from_file(paths[0])))


def parts(length: int, window: int, shape: Shape = Shape()):
    """(name, jitted fn, args) of the four parts at one length (five with ``shape.cudnn``)."""
    q, k, v, bias = inputs(length, batch=shape.batch, heads=shape.heads, kv_heads=shape.kv_heads)
    segment_ids = jnp.ones((shape.batch, length), jnp.int32) if shape.segments else None
    stage = selection_stage(window, length, PallasConfig(), per_bias=shape.heads // shape.kv_heads,
                            segment_ids=segment_ids)
    attend = lambda q, k, v, b: dma_attention(q, k, v, b, window, segment_ids=segment_ids, implementation="pallas")
    out = [
        ("live_ranges", jax.jit(lambda b: live_ranges(b, window, segment_ids=segment_ids)), (bias,)),
        ("selection_stage", jax.jit(stage), (bias,)),
        ("forward", jax.jit(attend), (q, k, v, bias)),
        ("forward_backward", forward_and_backward(attend), (q, k, v, bias)),
    ]
    if shape.cudnn:  # dense causal attention at the same shape, on cuDNN's fused kernels
        dense = lambda q, k, v, b: jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")
        out.append(("cudnn_forward_backward", forward_and_backward(dense), (q, k, v, bias)))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[4096, 32768])
    p.add_argument("--window", type=int, default=1024)
    p.add_argument("--runs", type=int, default=5, help="traced calls per part")
    p.add_argument("--repeats", type=int, default=10, help="untraced timed calls per part (median)")
    p.add_argument("--calls", type=int, default=100, help="back-to-back calls per amortised time")
    p.add_argument("--order-statistics", nargs="+", choices=ranges.ORDER_STATISTICS_METHODS,
                   default=[ranges.ORDER_STATISTICS],
                   help="the live ranges' range order statistics, one pass each (dma_jax.selection.ranges)")
    p.add_argument("--digit-bits", type=int, nargs="+", default=[order_statistics.DIGIT_BITS],
                   help="bits per wavelet-matrix level of the selection, one pass each (1: binary)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=HEADS)
    p.add_argument("--kv-heads", type=int, default=KV_HEADS)
    p.add_argument("--segments", action="store_true", help="all-ones segment ids, as a model's batches carry")
    p.add_argument("--cudnn", action="store_true", help="also time cuDNN's dense causal forward+backward")
    p.add_argument("--top", type=int, default=12, help="kernels listed per part")
    add_output_arguments(p, "gpu_breakdown.json")
    args = p.parse_args(argv)
    png = png_beside(args.out)
    if args.plot_only:
        replot(args, plot)
        print(f"wrote {png}")
        return
    result = dict(**result_header("gpu_breakdown", "benchmarks.gpu_breakdown", argv),
                  xla_flags=os.environ.get("XLA_FLAGS", ""), window=args.window, rows=[])
    shape = Shape(args.batch, args.heads, args.kv_heads, args.segments, args.cudnn)
    result["shape"] = shape._asdict()
    for method, digit_bits in itertools.product(args.order_statistics, args.digit_bits):
        ranges.ORDER_STATISTICS, order_statistics.DIGIT_BITS = method, digit_bits
        jax.clear_caches()  # the selection's jitted functions were traced with the previous values
        for length in args.lengths:
            for name, fn, fn_args in parts(length, args.window, shape):
                wall_ms = median_ms(fn, *fn_args, repeats=args.repeats)
                amortised_ms = amortised_seconds(fn, *fn_args, calls=args.calls) * 1e3
                row = dict(T=length, part=name, order_statistics=method, digit_bits=digit_bits, wall_ms=wall_ms,
                           amortised_ms=amortised_ms, **summarise(trace(fn, fn_args, args.runs), args.runs, args.top))
                result["rows"].append(row)
                write_json(result, args.out)
                print(f"T={length:6d} {method}:{digit_bits} {name:17s} wall {wall_ms:7.3f} ms  amortised {amortised_ms:7.3f} ms  "
                      f"busy {row['busy_ms']:7.3f} ms  kernels {row['kernels_per_call']:6.1f}", flush=True)
                for kernel in row["top"][:6]:
                    print(f"      {kernel['ms']:7.3f} ms  x{kernel['launches']:5.1f}  {kernel['name'][:90]}")
    plot(result, png)
    print(f"\n{'T':>6s} {'variant':>10s} {'part':17s} {'wall ms':>8s} {'amort ms':>8s} {'busy ms':>8s} {'kernels':>8s}")
    for row in result["rows"]:
        print(f"{row['T']:6d} {variant_of(row):>10s} {row['part']:17s} {row['wall_ms']:8.3f} {row['amortised_ms']:8.3f} "
              f"{row['busy_ms']:8.3f} {row['kernels_per_call']:8.1f}")


if __name__ == "__main__":
    main()
