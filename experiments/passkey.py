"""Passkey retrieval past the training length: which attentions still find a needle at 2-8x the
length they trained at, and how reliably over seeds.

    python experiments/passkey.py --jobs 1 --results results/niah/passkey.json             # the GPU runs, one at a time
    python experiments/passkey.py --cells mha dma:64 --seeds 0 --steps 30 --train-len 256 --scales 1 2 \\
        --depths 0 1 --per-cell 2 model.d_model=64 model.num_layers=2 model.num_heads=2 model.num_kv_heads=1 \\
        data.global_batch_size=4 data.niah_share=0.5 \\
        --results runs/passkey_cpu/passkey.json --workroot runs/passkey_cpu                   # CPU scale

Every cell (``experiments/cells.py``: ``mha``, ``swa:W``, ``dma:W``, ``dma:W:lL[:sS]``) and seed
trains ``configs/passkey.py`` (language modelling with a share of single-needle rows, T =
--train-len); right after, ``eval.py --niah`` scores exact answers (teacher-forced, equal to
greedy decoding's) at --scales times the training length and --depths of the needle, --per-cell
prompts each; and the held-out text's loss in windows of --ppl-scale times the training length,
split at the training length by position in the document (``eval.py --perplexity --ppl-split-at``):
whether a model that loses the needle past its training length loses language modelling there too.

Writes --results (JSON: card, commands, each run's grid) and two plots beside it: accuracy against
context length per cell (mean over depths and seeds, range over seeds), and the (length, depth)
heatmaps of seed --heatmap-seed. Prints a table last. Runs already in --results are skipped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.cells import SYNTAX, parse_cell, parse_cells_or_exit  # noqa: E402
from experiments.launch import (Job, add_grid_arguments, base_model, report_summary, run_eval,  # noqa: E402
                                run_grid_from_args)

DEFAULT_CELLS = ("mha", "swa:256", "dma:256", "dma:256:l32")


def jobs(args, num_heads: int) -> list[Job]:
    out = []
    for seed in args.seeds:
        for cell in map(parse_cell, args.cells):
            overrides = (*cell.overrides(num_heads), f"data.seq_len={args.train_len}", f"steps={args.steps}",
                         f"optim.warmup_steps={max(1, args.steps // 20)}", f"log_every={max(1, args.steps // 20)}",
                         f"eval_every={args.steps}", f"checkpoint_every={max(1, args.steps // 4)}",
                         f"seed={seed}", f"data.seed={seed}", *args.overrides)
            record = {"cell": cell.spec, "attention": cell.attention, "window": cell.window, "seed": seed,
                      "train_len": args.train_len, "steps": args.steps}
            out.append(Job(f"{cell.name}_seed{seed}", args.config, overrides, record))
    return out


def by_length(results: dict) -> dict[str, dict[int, list[float]]]:
    """cell -> length -> each seed's exact-answer accuracy averaged over depths."""
    out: dict[str, dict[int, list[float]]] = {}
    for run in results["cells"].values():
        grid = run.get("niah") or []
        lengths = sorted({row["length"] for row in grid})
        for length in lengths:
            accs = [row["accuracy"] for row in grid if row["length"] == length]
            out.setdefault(run["cell"]["cell"], {}).setdefault(length, []).append(sum(accs) / len(accs))
    return out


def lm_summary(results: dict) -> list[dict]:
    """Per cell, over seeds: the held-out loss of tokens before and from the training length in
    their document (mean, min, max), for the runs scored with ``--ppl-scale``."""
    by_cell: dict[str, list[dict]] = {}
    for run in results["cells"].values():
        split = run.get("perplexity", {}).get("by_position")
        if split and split["after"]["loss"] is not None:
            by_cell.setdefault(run["cell"]["cell"], []).append(run["perplexity"])
    rows = []
    for cell, scored in sorted(by_cell.items()):
        row = {"cell": cell, "seeds": len(scored), "seq_len": scored[0]["seq_len"],
               "split_at": scored[0]["by_position"]["split_at"]}
        for side in ("before", "after"):
            losses = [p["by_position"][side]["loss"] for p in scored]
            row[side] = {"loss": sum(losses) / len(losses), "min": min(losses), "max": max(losses),
                         "tokens": scored[0]["by_position"][side]["tokens"]}
        rows.append(row)
    return rows


def print_lm_table(rows: list[dict]) -> None:
    if not rows:
        return
    print(f"\nheld-out loss in windows of {rows[0]['seq_len']}, by position in the document")
    print(f"{'cell':<16}{'seeds':>6}{'< ' + str(rows[0]['split_at']):>10}{'>= ' + str(rows[0]['split_at']):>10}"
          f"{'tokens >=':>11}")
    for r in rows:
        print(f"{r['cell']:<16}{r['seeds']:>6}{r['before']['loss']:>10.3f}{r['after']['loss']:>10.3f}"
              f"{r['after']['tokens']:>11,.0f}")


def summary(results: dict) -> list[dict]:
    rows = []
    for cell, lengths in by_length(results).items():
        for length, accs in sorted(lengths.items()):
            rows.append({"cell": cell, "length": length, "seeds": len(accs), "accuracy": sum(accs) / len(accs),
                         "min": min(accs), "max": max(accs)})
    return sorted(rows, key=lambda r: (r["cell"], r["length"]))


def plot(rows: list[dict], results: dict, path: Path, heatmap_seed: int) -> list[Path]:
    from dma_jax.evaluation.plots import heatmaps, lines

    card = results.get("card", {}).get("device_kind", "")
    series: dict[str, list[tuple]] = {}
    for r in rows:
        series.setdefault(r["cell"], []).append((r["length"], r["accuracy"], r["min"], r["max"]))
    lines(series, path, f"passkey accuracy against context length (trained at {results.get('train_len')})\n{card}",
          "context length (tokens)", "exact answers (mean over depths; range over seeds)",
          xticks=sorted({r["length"] for r in rows}))
    panels = {run["cell"]["cell"]: run.get("niah", []) for run in results["cells"].values()
              if run["cell"]["seed"] == heatmap_seed and run.get("niah")}
    heat_path = path.with_name(path.stem + "_depths.png")
    heatmaps(panels, "length", "depth", "accuracy", heat_path, f"passkey accuracy by length and depth, seed {heatmap_seed}",
             x_label="context length", y_label="needle depth", y_format=lambda d: f"{d:.0%}")
    return [path, heat_path]


def print_table(rows: list[dict]) -> None:
    print(f"\n{'cell':<16}{'length':>8}{'seeds':>6}{'exact':>8}{'range':>13}")
    for r in rows:
        print(f"{r['cell']:<16}{r['length']:>8}{r['seeds']:>6}{r['accuracy']:>8.3f}{r['min']:>7.2f}-{r['max']:<5.2f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/passkey.py")
    p.add_argument("--cells", nargs="+", default=list(DEFAULT_CELLS), help=f"attention settings, each {SYNTAX}")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--train-len", type=int, default=1024)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--scales", type=float, nargs="+", default=[1, 2, 4, 8], help="scored lengths / --train-len")
    p.add_argument("--depths", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    p.add_argument("--per-cell", type=int, default=16, help="prompts per (length, depth)")
    p.add_argument("--heatmap-seed", type=int, default=0)
    p.add_argument("--ppl-scale", type=float, default=2.0,
                   help="held-out loss in windows of this times --train-len, split at --train-len (0: not scored)")
    add_grid_arguments(p, results="results/niah/passkey.json", workroot="runs/passkey", timeout=3 * 3600)
    args = p.parse_args(argv)
    if args.ppl_scale < 0:
        p.error(f"--ppl-scale must be >= 0, got {args.ppl_scale}")
    parse_cells_or_exit(args.cells)
    num_heads = base_model(args.config, args.overrides).num_heads
    flags = ["--niah", "--niah-scales", *map(str, args.scales), "--niah-depths", *map(str, args.depths),
             "--niah-per-cell", str(args.per_cell)]
    if args.ppl_scale:
        flags += ["--perplexity", "--ppl-seq-len", str(round(args.ppl_scale * args.train_len)),
                  "--ppl-split-at", str(args.train_len)]
    results = run_grid_from_args([] if args.plot_only else jobs(args, num_heads), args,
                                 after=lambda workdir, env: run_eval(workdir, flags, "niah", env, also=("perplexity",)))
    lm_rows = lm_summary(results)
    report_summary(results, args, summary(results), lambda *a: plot(*a, args.heatmap_seed),
                   lambda rows: (print_table(rows), print_lm_table(lm_rows)), "no run has a needle grid yet",
                   train_len=args.train_len, steps=args.steps, scales=args.scales, depths=args.depths,
                   ppl_scale=args.ppl_scale, lm_summary=lm_rows)


if __name__ == "__main__":
    main()
