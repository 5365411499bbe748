"""Where a model's train step spends its GPU time, by part of the model and by pass: DMA against
MHA (and SWA) in one process, from JAX's own profiler.

    python -m benchmarks.step_profile --lengths 2048 --attentions dma mha --out results/benchmarks/step_profile_2k.json

For each T and attention it builds ``benchmarks.model_throughput``'s model (same flags: the default
12-block LM, or ``--model 1.7b``), runs its train step on random tokens with all-ones segment ids
(as a packed batch carries), traces ``--runs`` steps and sums every kernel's time per step. Each
kernel is put in a part of the model by its name and by the name stack XLA kept for the operation
that launched it (the compiled HLO's ``op_name``):

- DMA kernels: the Pallas kernels (Mosaic GPU or Triton-lowered);
- DMA selection: operations under the ``dma_selection`` scope (``dma_jax.selection.tables``) or in
  ``live_ranges`` / ``static_keep`` (the XLA path's selection);
- DMA layouts and glue: the rest of ``dma_attention``'s operations (transposes into and out of the
  kernels' layouts, the sums of the two backward passes, delta);
- cuDNN attention: cuDNN's kernels (MHA, SWA, and DMA where it takes the dense path);
- dense attention glue: the rest of ``dense_causal_attention`` (the segment mask);
- matmuls: cuBLAS / cuBLASLt / XLA GEMM kernels of the projections, the MLP and the LM head;
- other: norms, activations, the loss, the optimizer update, copies.

and in a pass by its name stack: forward (``jvp``), the forward recomputed by remat
(``rematted_computation``), backward (``transpose``), and the rest (the optimizer update). It prints
a table of milliseconds per step (part x pass) per attention, the difference between the first
two attentions, then each row's largest kernels, and draws ``<out>.png`` (stacked bars). The JSON
keeps each row's 300 largest kernels with their name stacks. The steps run without CUDA graphs
(``--xla_gpu_enable_command_buffer=``, set on import): in a graph the profiler names the graph,
not the instruction, for every kernel. On the CPU the same code reads the host thunks' times
instead of kernels (nested thunks overlap, so the totals there are only a check of the plumbing).
"""

from __future__ import annotations

import argparse
import collections
import os
import re

# XLA groups a step's kernels into CUDA graphs ("command buffers"); the profiler then names the
# graph, not the instruction, as every kernel's ``hlo_op``, and no kernel could be put in a part or
# a pass. Launch each kernel on its own instead (before JAX starts its backend).
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_gpu_enable_command_buffer=").strip()

import jax  # noqa: E402

from benchmarks.common import add_output_arguments, card_label, png_beside, replot, result_header, write_json
from benchmarks.gpu_breakdown import CATEGORIES, trace
from benchmarks.model_throughput import KINDS, add_model_arguments, shape_label, train_config
from dma_jax.evaluation.throughput import train_step_loop
from dma_jax.models import ModelConfig
from dma_jax.remat import SAVES
from dma_jax.selection.tables import SCOPE as SELECTION_SCOPE

PARTS = (  # (label, colour)
    ("DMA kernels", "tab:blue"),
    ("DMA selection", "tab:green"),
    ("DMA layouts and glue", "tab:gray"),
    ("cuDNN attention", "tab:purple"),
    ("dense attention glue", "tab:pink"),
    ("matmuls", "tab:orange"),
    ("other", "tab:olive"),
)
PASSES = ("forward", "recompute", "backward", "update")
# Kernel names as gpu_breakdown's categories know them: DMA's Pallas kernels, and cuDNN's.
DMA_KERNEL_NAMES = tuple(n for label, _, names in CATEGORIES if label.startswith("DMA") for n in names)
CUDNN_NAMES = next(names for label, _, names in CATEGORIES if label.startswith("cuDNN"))
MATMUL_NAMES = ("gemm", "nvjet", "cutlass", "xmma", "cublas", "sm90_", "dot")
SELECTION_NAMES = (SELECTION_SCOPE, "live_ranges", "static_keep")  # the XLA path selects outside key_tables


KEPT_KERNELS = 300  # the largest kernels (per HLO instruction) each row keeps, with their part, pass and name stack


def sanitise(name: str) -> str:
    """An HLO instruction name as profiler events spell it ("fusion.12" -> "fusion_12")."""
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


def op_names(hlo_text: str) -> dict[str, str]:
    """Instruction name (sanitised) -> the ``op_name`` of its metadata, from compiled HLO text."""
    names = {}
    for line in hlo_text.splitlines():
        match = re.match(r"\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=.*metadata=\{[^}]*op_name=\"([^\"]*)\"", line)
        if match:
            names[sanitise(match.group(1))] = match.group(2)
    return names


def profile_ops(profile, device_prefix: str = "/device:GPU"):
    """(kernel name, HLO instruction, duration_ns) of every kernel on a device stream of a
    ``jax.profiler.ProfileData``; on a profile with no device plane (the CPU), every host event
    that names its HLO instruction. The instruction is the event's ``hlo_op`` stat, else its name."""
    def stat(event, key):
        return next((value for name, value in getattr(event, "stats", ()) if name == key), None)

    device = [plane for plane in profile.planes if plane.name.startswith(device_prefix)]
    for plane in device or profile.planes:
        for line in plane.lines:
            if device and not line.name.startswith("Stream"):
                continue
            for event in line.events:
                hlo_op = stat(event, "hlo_op")
                if device or hlo_op:
                    yield event.name, sanitise(str(hlo_op or event.name)), float(event.duration_ns)


def part_of(kernel: str, op_name: str) -> str:
    """The model part (``PARTS``) of a kernel, from its name and its operation's name stack."""
    if any(n in kernel for n in DMA_KERNEL_NAMES):
        return "DMA kernels"
    if any(n in kernel.lower() for n in CUDNN_NAMES):
        return "cuDNN attention"
    if any(n in op_name for n in SELECTION_NAMES):
        return "DMA selection"
    if "dma_attention" in op_name:
        return "DMA layouts and glue"
    if "dense_causal_attention" in op_name or "dot_product_attention" in op_name:
        return "dense attention glue"
    if any(n in kernel.lower() for n in MATMUL_NAMES) or op_name.endswith("dot_general"):
        return "matmuls"
    return "other"


def pass_of(op_name: str) -> str:
    """The pass (``PASSES``) an operation belongs to, from its name stack."""
    if "rematted_computation" in op_name:
        return "recompute"
    if "transpose(" in op_name:
        return "backward"
    if "jvp(" in op_name:
        return "forward"
    return "update"


def split_step(events, names: dict[str, str], steps: int) -> dict:
    """Milliseconds per step of each (part, pass), the busy total, and the ``KEPT_KERNELS`` largest
    kernels (name, HLO instruction, ``op_name``, part, pass, ms per step), so that a part can be
    split further from the JSON alone."""
    table = collections.defaultdict(float)
    kernels = collections.Counter()
    for kernel, hlo_op, ns in events:
        op_name = names.get(hlo_op, "")
        table[(part_of(kernel, op_name), pass_of(op_name))] += ns / steps / 1e6
        kernels[(kernel, hlo_op, op_name)] += ns / steps / 1e6
    parts = {part: {p: table.get((part, p), 0.0) for p in PASSES} for part, _ in PARTS}
    largest = [dict(kernel=kernel[:80], hlo_op=hlo_op, op_name=op_name, part=part_of(kernel, op_name),
                    **{"pass": pass_of(op_name)}, ms=ms)
               for (kernel, hlo_op, op_name), ms in kernels.most_common(KEPT_KERNELS)]
    return dict(busy_ms=sum(table.values()), parts=parts, kernels=largest)


def measure(args, attention: str, length: int) -> dict:
    config = train_config(args, attention, length, args.remat_saves)
    batch = config.data.global_batch_size
    with train_step_loop(config, seq_len=length, batch=batch) as (one, lower):
        jax.block_until_ready(one())
        names = op_names(lower().compile().as_text())
        events = trace(one, (), args.runs, reader=profile_ops)
    row = dict(attention=attention, T=length, window=config.model.window, batch=batch, remat_saves=args.remat_saves,
               **split_step(events, names, args.runs))
    row["unattributed_ms"] = sum(ns for _, hlo_op, ns in events if hlo_op not in names) / args.runs / 1e6
    if row["unattributed_ms"] > 0.1 * row["busy_ms"]:
        print(f"warning: {row['unattributed_ms']:.1f} of {row['busy_ms']:.1f} ms per step ran in kernels whose "
              "HLO instruction the compiled module does not name; their part and pass are guesses", flush=True)
    return row


def print_table(result: dict) -> None:
    rows = result["rows"]
    for length in sorted({r["T"] for r in rows}):
        at = [r for r in rows if r["T"] == length]
        print(f"\nT = {length}: milliseconds per train step (forward / recompute / backward / update = total)")
        print(f"{'part':<22}" + "".join(f"{r['attention']:>34}" for r in at)
              + (f"{at[0]['attention'] + ' - ' + at[1]['attention']:>14}" if len(at) > 1 else ""))
        for part, _ in (*PARTS, ("total", None)):
            cells, totals = [], []
            for r in at:
                split = ([sum(r["parts"][p][q] for p in r["parts"]) for q in PASSES] if part == "total"
                         else [r["parts"][part][q] for q in PASSES])
                totals.append(sum(split))
                cells.append(" / ".join(f"{x:5.1f}" for x in split) + f" = {sum(split):6.1f}")
            diff = f"{totals[0] - totals[1]:14.1f}" if len(totals) > 1 else ""
            print(f"{part:<22}" + "".join(f"{c:>34}" for c in cells) + diff)
        for r in at:
            print(f"\n{r['attention']}, T = {length}: largest kernels (ms per step, part, pass, end of name stack)")
            for k in r.get("kernels", [])[:10]:
                print(f"  {k['ms']:7.2f}  {k['kernel'][:40]:40s} {k['part']:<21} {k['pass']:<9} {k['op_name'][-60:]}")


def plot(result: dict, path: str) -> str:
    """Stacked bars per (T, attention): milliseconds per step in each part, hatched by pass."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = result["rows"]
    fig = Figure(figsize=(11, 1.6 + 0.7 * len(rows)))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    hatches = {"forward": "", "recompute": "..", "backward": "//", "update": "xx"}
    for y, row in enumerate(rows):
        left = 0.0
        for part, colour in PARTS:
            for p in PASSES:
                ms = row["parts"][part][p]
                ax.barh(y, ms, left=left, color=colour, hatch=hatches[p], edgecolor="black", linewidth=0.3,
                        label=(part if p == "forward" else None) if y == 0 else None)
                left += ms
        ax.text(left, y, f" {left:.1f} ms", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [f"{r['attention']}, T = {r['T']}" for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("GPU milliseconds per train step (plain: forward, dots: remat recompute, "
                  "stripes: backward, crosses: update)", fontsize=8)
    ax.set_xlim(0, max(r["busy_ms"] for r in rows) * 1.18)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"Where a train step's time goes ({result['shape']}; {card_label(result)})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[2048])
    p.add_argument("--attentions", nargs="+", default=["dma", "mha"], choices=KINDS)
    add_model_arguments(p)
    p.add_argument("--remat-saves", choices=SAVES, default=ModelConfig.remat_saves,
                   help="what the rematerialised blocks keep")
    p.add_argument("--runs", type=int, default=3, help="traced steps")
    add_output_arguments(p, "step_profile.json")
    args = p.parse_args(argv)
    if args.plot_only:
        result = replot(args, plot)
        print_table(result)
        return result
    result = dict(**result_header("step_profile", "benchmarks.step_profile", argv), shape=shape_label(args),
                  settings=dict(vars(args)), rows=[])
    for length in args.lengths:
        for attention in args.attentions:
            result["rows"].append(measure(args, attention, length))
            write_json(result, args.out)
            print(f"{attention} T={length}: {result['rows'][-1]['busy_ms']:.1f} ms busy per step", flush=True)
    plot(result, png_beside(args.out))
    print_table(result)
    return result


if __name__ == "__main__":
    main()
