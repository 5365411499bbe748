"""Perplexity against T/w: how much DMA, SWA and the local-window variant lose as they keep fewer
keys, at one model shape (``configs/window_sweep.py``: 12.9M parameters, Hkv = H/2, T = 2048).

    python experiments/window_sweep.py --results results/ppl/window_sweep.json      # the GPU sweep, one cell at a time
    python experiments/window_sweep.py --cells mha swa:64 dma:64 dma:64:l16 --seq-len 256 --batch 8 \\
        --tokens-per-param 0.5 model.d_model=128 model.num_layers=2 model.num_heads=4 model.num_kv_heads=2 \\
        --results results/ppl/window_sweep_cpu.json --workroot runs/window_sweep_cpu             # CPU scale

Cells are attention settings (``experiments/cells.py``: ``mha``, ``swa:W``, ``dma:W``,
``dma:W:lL[:sS]``); each trains for about ``--tokens-per-param`` tokens per parameter with every
seed of ``--seeds``, and the cells of ``--seeded-cells`` also with ``--extra-seeds``. After a cell
trains, ``eval.py`` scores it on the whole held-out split in the same worker: perplexity, the loss
of tokens at positions < w in their document and of the rest (``--ppl-split-at w``), and for DMA
the share of each query's kept keys that are among its ``--recent-keys`` (default w) latest
positions, and the learned A per layer.

``--cost`` trains nothing: it times each cell's train step and its decoding in this process, one
cell after another on the whole device (``experiments/cell_cost.py``), into --results' "cost"
(one entry per cell, whatever the seeds), so that the table puts tokens/s beside perplexity:

    python experiments/window_sweep.py --cost --results results/ppl/window_sweep.json
    python experiments/window_sweep.py --cost --recost swa:512 --results results/ppl/window_sweep.json   # time one again

Writes --results (JSON: card, commands, per-run records with wall time and FLOPs) and two plots
beside it: perplexity against attention FLOPs per token (mean and range over seeds), and the loss
split by position. Prints a table last. Cells already in --results are skipped (a sweep resumes).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.cell_cost import add_costs  # noqa: E402
from experiments.cells import SYNTAX, Cell, parse_cell, parse_cells_or_exit  # noqa: E402
from experiments.launch import (Job, add_grid_arguments, base_model, load_results, report_summary,  # noqa: E402
                                run_eval, run_grid_from_args)

DEFAULT_CELLS = ("mha", "swa:256", "swa:512", "swa:1024", "dma:256", "dma:512", "dma:1024", "dma:2048",
                 "dma:512:l64", "dma:512:l128", "dma:512:l64:s4")
SEEDED_CELLS = ("mha", "swa:512", "dma:512", "dma:512:l128")


def attention_flops_per_token(model, cell: Cell, seq_len: int) -> float:
    """Attention FLOPs of one training token (forward and backward, ``dma_jax.training.flops``)."""
    from dma_jax.training.flops import mean_kept_keys

    config = dataclasses.replace(model, attention=cell.attention, window=cell.window)
    return 12 * config.num_layers * config.num_heads * config.resolved_head_dim * mean_kept_keys(config, seq_len)


def jobs(args) -> list[Job]:
    from flax import nnx

    from dma_jax.models import DecoderLM
    from dma_jax.training.flops import count_params

    model = base_model(args.config, args.overrides)
    params = count_params(nnx.split(nnx.eval_shape(lambda: DecoderLM(model, rngs=nnx.Rngs(0))))[1])
    steps = max(2, math.ceil(args.tokens_per_param * params / (args.batch * args.seq_len)))
    seeded = {parse_cell(c) for c in args.seeded_cells}
    out = []
    for seed in sorted(set(args.seeds) | set(args.extra_seeds)):
        for cell in map(parse_cell, args.cells):
            if seed not in args.seeds and cell not in seeded:
                continue
            overrides = (*cell.overrides(model.num_heads), f"data.seq_len={args.seq_len}",
                         f"data.global_batch_size={args.batch}", f"steps={steps}", f"eval_every={steps}",
                         f"optim.warmup_steps={max(1, steps // 20)}", f"log_every={max(1, steps // 50)}",
                         f"checkpoint_every={max(1, steps // 5)}", f"seed={seed}", f"data.seed={seed}", *args.overrides)
            record = {"cell": cell.spec, "attention": cell.attention, "window": cell.window,
                      "local_window": cell.local_window, "sink_keys": cell.sink_keys, "seed": seed, "params": params,
                      "steps": steps, "tokens": steps * args.batch * args.seq_len,
                      "attention_flops_per_token": attention_flops_per_token(model, cell, args.seq_len)}
            out.append(Job(f"{cell.name}_seed{seed}", args.config, overrides, record))
    return out


def evaluate(args):
    """The eval.py pass run on each cell right after it trains (same worker, same GPU share)."""

    def after(workdir: Path, env: dict) -> dict:
        import json

        cell = json.loads((workdir / "config.json").read_text())["model"]
        split = cell["window"] or args.seq_len
        flags = ["--perplexity", "--ppl-split-at", str(split)]
        if args.ppl_max_batches:
            flags += ["--ppl-max-batches", str(args.ppl_max_batches)]
        if cell["attention"] == "dma":
            flags += ["--recent-keys", str(args.recent_keys or cell["window"])]
        return run_eval(workdir, flags, "perplexity", env, also=("recent_keys", "learned_A"))

    return after


def measure_costs(args) -> dict:
    """``--cost``: add the missing cells' costs to --results (created if absent) and return it."""
    path = Path(args.results)
    results = load_results(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    add_costs(results, path, [parse_cell(c) for c in args.cells], args.config, args.overrides, seq_len=args.seq_len,
              batch=args.batch, decode_tokens=args.decode_tokens, repeats=args.cost_repeats,
              redo=tuple(parse_cell(c).spec for c in args.recost), command=" ".join(["python", *sys.argv]))
    return results


def summary(results: dict) -> list[dict]:
    """One row per cell spec: perplexity mean/min/max over its seeds, the split losses' means, the
    recent-key share (mean over layers and seeds), GPU-seconds and attention FLOPs."""
    by_cell = {}
    for run in results["cells"].values():
        if "perplexity" in run:
            by_cell.setdefault(run["cell"]["cell"], []).append(run)
    rows = []
    costs = results.get("cost", {})
    for spec, runs in by_cell.items():
        cost = costs.get(spec, {})
        ppl = [r["perplexity"]["perplexity"] for r in runs]
        mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
        split = [r["perplexity"].get("by_position", {}) for r in runs]
        recent = [layer["recent_share"] for r in runs for layer in r.get("recent_keys", [])]
        rows.append({
            "cell": spec, "seeds": len(runs), "perplexity": mean(ppl), "min": min(ppl), "max": max(ppl),
            "loss_before_w": mean([s["before"]["loss"] for s in split if s and s["before"]["loss"] is not None]),
            "loss_after_w": mean([s["after"]["loss"] for s in split if s and s["after"]["loss"] is not None]),
            "recent_share": mean(recent), "wall_s": mean([r["wall_s"] for r in runs]),
            # the last in-training evaluation: the whole held-out split (eval.py's may be capped)
            "eval_perplexity": mean([r["eval"]["eval_perplexity"] for r in runs if (r.get("eval") or {}).get("eval_perplexity")]),
            "attention_flops_per_token": runs[0]["cell"]["attention_flops_per_token"],
            "window": runs[0]["cell"]["window"], "family": family(runs[0]["cell"]),
            "train_tokens_per_s": cost.get("train", {}).get("tokens_per_s_amortised"),
            "decode_tokens_per_s": cost.get("inference", {}).get("decode_tokens_per_s"),
        })
    return sorted(rows, key=lambda r: (r["family"], r["window"] or 0))


def family(cell: dict) -> str:
    """The line a cell is drawn on: its attention, and the variant's local keys and sinks."""
    name = cell["attention"].upper()
    name += f" l={cell['local_window']}" if cell.get("local_window") else ""
    return name + (f" s={cell['sink_keys']}" if cell.get("sink_keys") else "")


def plot(rows: list[dict], results: dict, path: Path) -> list[Path]:
    from dma_jax.evaluation.plots import bars, lines

    card = results.get("card", {}).get("device_kind", "")
    series = {}
    for r in rows:
        series.setdefault(r["family"], []).append((r["attention_flops_per_token"] / 1e6, r["perplexity"], r["min"], r["max"]))
    ticks = sorted({round(point[0], 1) for points in series.values() for point in points})
    lines(series, path, f"perplexity against attention FLOPs per token (mean, range over seeds)\n{card}",
          "attention MFLOPs per training token", "validation perplexity", log_y=True, log_x=True, xticks=ticks)
    split_path = path.with_name(path.stem + "_by_position.png")
    groups = {r["cell"]: {"t < w": r["loss_before_w"], "t >= w": r["loss_after_w"]} for r in rows
              if r["loss_before_w"] is not None and r["loss_after_w"] is not None}
    bars(groups, split_path, f"validation loss by position in the document (w = the cell's window)\n{card}",
         "loss (nats / token)")
    return [path, split_path]


def print_table(rows: list[dict]) -> None:
    print(f"\n{'cell':<18}{'seeds':>6}{'ppl':>9}{'range':>16}{'ppl all':>9}{'loss t<w':>10}{'loss t>=w':>10}"
          f"{'recent':>8}{'attn MFLOP/tok':>15}{'wall s':>8}{'train tok/s':>13}{'decode tok/s':>13}")
    fmt = lambda x, spec: format(x, spec) if x is not None else "-"  # noqa: E731
    for r in rows:
        spread = f"{r['min']:.2f}-{r['max']:.2f}"
        print(f"{r['cell']:<18}{r['seeds']:>6}{r['perplexity']:>9.2f}{spread:>16}{fmt(r['eval_perplexity'], '.2f'):>9}"
              f"{fmt(r['loss_before_w'], '.3f'):>10}{fmt(r['loss_after_w'], '.3f'):>10}{fmt(r['recent_share'], '.3f'):>8}"
              f"{r['attention_flops_per_token'] / 1e6:>15.2f}{r['wall_s']:>8.0f}"
              f"{fmt(r.get('train_tokens_per_s'), ',.0f'):>13}{fmt(r.get('decode_tokens_per_s'), ',.1f'):>13}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/window_sweep.py")
    p.add_argument("--cells", nargs="+", default=list(DEFAULT_CELLS), help=f"attention settings, each {SYNTAX}")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of every cell")
    p.add_argument("--seeded-cells", nargs="*", default=list(SEEDED_CELLS), help="cells also run with --extra-seeds")
    p.add_argument("--extra-seeds", type=int, nargs="*", default=[1, 2])
    p.add_argument("--tokens-per-param", type=float, default=7.5)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--recent-keys", type=int, default=0,
                   help="R of the recent-key share (eval.py --recent-keys); 0: the cell's window w")
    p.add_argument("--ppl-max-batches", type=int, default=0,
                   help="score at most this many held-out batches (0: the whole held-out split)")
    p.add_argument("--cost", action="store_true",
                   help="train nothing: time each cell's train step and decoding here, into --results' \"cost\"")
    p.add_argument("--decode-tokens", type=int, default=32, help="--cost: cached decoding steps timed (batch 1)")
    p.add_argument("--cost-repeats", type=int, default=5, help="--cost: timed train steps")
    p.add_argument("--recost", nargs="*", default=[], metavar="CELL",
                   help="--cost: time these cells again even if their cost is already in --results")
    add_grid_arguments(p, results="results/ppl/window_sweep.json", workroot="runs/window_sweep", timeout=4 * 3600)
    args = p.parse_args(argv)
    parse_cells_or_exit((*args.cells, *args.seeded_cells, *args.recost))
    if args.cost:
        results = measure_costs(args)
    else:
        results = run_grid_from_args(jobs(args) if not args.plot_only else [], args, after=evaluate(args))
    report_summary(results, args, summary(results), plot, print_table, "no cell has a perplexity yet",
                   seq_len=args.seq_len, batch=args.batch, tokens_per_param=args.tokens_per_param)


if __name__ == "__main__":
    main()
