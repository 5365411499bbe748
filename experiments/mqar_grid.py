"""MQAR accuracy grid (the paper's Fig. 6 at our scale): attention x sequence length x d_model.

Every cell trains ``configs/mqar.py`` from scratch and is scored by its final evaluation (query
accuracy on held-out MQAR examples of the training slice). Windows and the number of key-value
pairs scale with the length: w = T / --window-ratio, pairs = T / --pairs-ratio (or --pairs at every
length); NSA selects
max(3, w / 32) blocks of 32 (its selected tokens match the window).

    python experiments/mqar_grid.py --jobs 8 --head-dim 64 --results results/mqar/grid.json
    python experiments/mqar_grid.py --attentions dma swa --seq-lens 64 128 --d-models 32 --steps 300 \
        --batch 32 --results runs/mqar_cpu/grid.json --workroot runs/mqar_cpu   # a CPU-sized try

With --by-distance each cell keeps its final checkpoint and ``eval.py`` scores it right after
training, on the same GPU: accuracy over queries whose pair lies inside the window (what a sliding
window could recall) and beyond it, drawn against length in ``<results>_beyond.png`` and against
the pair's distance, one line per cell, in ``<results>_distance.png``.

Cells already in --results are skipped, so a grid can be finished over several runs. Writes
--results (JSON: card, commands, per-cell final records and wall time) and a heatmap PNG beside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.launch import Job, add_grid_arguments, run_eval, run_grid_from_args, save_grid  # noqa: E402

ATTENTIONS = ("mha", "swa", "mla", "nsa", "dma")


def heads(head_dim: int | None, d_model: int) -> tuple[str, ...]:
    """Overrides for ``d_model / head_dim`` query heads and one kv head (none: the config's heads)."""
    if head_dim is None:
        return ()
    if d_model % head_dim:
        raise SystemExit(f"--head-dim {head_dim} does not divide d_model {d_model}")
    return (f"model.num_heads={d_model // head_dim}", "model.num_kv_heads=1")


def cell_name(attention: str, seq_len: int, d_model: int, seed: int) -> str:
    return f"{attention}_T{seq_len}_d{d_model}" + (f"_s{seed}" if seed else "")


def jobs(args) -> list[Job]:
    """One job per (seed, length, d_model, attention), shortest lengths first so whole columns finish early."""
    out = []
    for seed in args.seeds:
        for seq_len in args.seq_lens:
            for d_model in args.d_models:
                for attention in args.attentions:
                    out.append(one_job(args, attention, seq_len, d_model, seed))
    return out


def one_job(args, attention: str, seq_len: int, d_model: int, seed: int) -> Job:
    window = max(8, seq_len // args.window_ratio)
    pairs = args.pairs or max(1, seq_len // args.pairs_ratio)
    batch = min(args.batch, max(1, args.max_batch_tokens // seq_len))
    overrides = (
        f"model.attention={attention}", f"model.d_model={d_model}", f"model.window={window}",
        f"model.nsa_num_selected={max(3, window // 32)}", f"data.seq_len={seq_len}",
        f"data.mqar_num_kv_pairs={pairs}", f"steps={args.steps}", f"data.global_batch_size={batch}",
        f"optim.peak_lr={args.lr}", f"optim.warmup_steps={max(1, args.steps // 20)}",
        f"eval_every={max(1, args.steps // args.evals)}", f"checkpoint_every={0 if args.by_distance else -1}",
        f"log_every={max(1, args.steps // 10)}",
        f"seed={seed}", f"data.seed={seed}", *heads(args.head_dim or None, d_model), *args.overrides,
    )
    cell = {"attention": attention, "seq_len": seq_len, "d_model": d_model, "window": window,
            "num_kv_pairs": pairs, "batch": batch, "seed": seed}
    return Job(cell_name(attention, seq_len, d_model, seed), args.config, overrides, cell)


def final_accuracy(cell: dict) -> float | None:
    """Query accuracy of the cell's last evaluation in training (None if it did not finish)."""
    return (cell.get("eval") or {}).get("eval_accuracy")


def beyond_window_accuracy(cell: dict) -> float | None:
    """``eval.py``'s accuracy over queries whose pair lies beyond the window (``--by-distance`` cells)."""
    return (cell.get("mqar") or [{}])[0].get("beyond_window")


def mean_accuracy(results: dict, attention: str, seq_len: int, d_model: int, value=final_accuracy) -> dict | None:
    """The cell's coordinates with ``value`` of its runs: mean, min and max over the seeds that have one."""
    where = {"attention": attention, "seq_len": seq_len, "d_model": d_model}
    runs = [c for c in results["cells"].values()
            if value(c) is not None and all(c["cell"].get(k) == v for k, v in where.items())]
    if not runs:
        return None
    accuracies = [value(c) for c in runs]
    return {**runs[0]["cell"], "accuracy": sum(accuracies) / len(accuracies), "min": min(accuracies),
            "max": max(accuracies), "seeds": len(runs)}


def plotted_axes(results: dict, attentions, seq_lens, d_models) -> tuple[list, list, list]:
    """The attentions, lengths and d_models to draw: those of this call and every cell already in
    the results file, so a call that adds a few cells redraws the whole grid."""
    cells = [c["cell"] for c in results["cells"].values() if "cell" in c]
    attentions = [a for a in ATTENTIONS if a in attentions or any(c["attention"] == a for c in cells)]
    seq_lens = sorted(set(seq_lens) | {c["seq_len"] for c in cells})
    d_models = sorted(set(d_models) | {c["d_model"] for c in cells})
    return attentions, seq_lens, d_models


def plot(results: dict, path: Path, attentions, seq_lens, d_models):
    from dma_jax.evaluation.plots import heatmaps

    panels = {}
    for attention in attentions:
        cells = [mean_accuracy(results, attention, t, d) for t in seq_lens for d in d_models]
        panels[attention.upper()] = [c for c in cells if c]
    title = f"MQAR query accuracy, mean over seeds ({setting(results)}); {device(results)}"
    heatmaps(panels, "seq_len", "d_model", "accuracy", path, title, x_label="sequence length", xs=seq_lens, ys=d_models)
    plot_lengths(results, path.with_name(path.stem + "_lines.png"), attentions, seq_lens, d_models)
    plot_lengths(results, path.with_name(path.stem + "_beyond.png"), attentions, seq_lens, d_models,
                 beyond_window_accuracy, "accuracy on queries whose pair lies beyond the window")
    plot_distances(results, path.with_name(path.stem + "_distance.png"))


def plot_distances(results: dict, path: Path):
    """Accuracy against the distance from query to pair, one line per ``--by-distance`` cell (its
    windows in the title); nothing when no cell was scored by distance."""
    from dma_jax.evaluation.plots import distance_lines

    rows, windows = {}, set()
    for cell in results["cells"].values():
        row = (cell.get("mqar") or [None])[0]
        if row and row.get("by_distance"):
            c = cell["cell"]
            rows[f"{c['attention'].upper()} T={c['seq_len']} d{c['d_model']} seed {c.get('seed', 0)}"] = row
            if row.get("window"):
                windows.add(row["window"])
    if rows:
        window = ", ".join(str(w) for w in sorted(windows)) or "none"
        distance_lines(rows, path, f"MQAR accuracy by pair distance (window {window}); {device(results)}")


def plot_lengths(results: dict, path: Path, attentions, seq_lens, d_models, value=final_accuracy,
                 what: str = "query accuracy"):
    """``value`` against sequence length, one line per attention (and d_model), the seeds' range as
    error bars; nothing when no cell has a value."""
    from dma_jax.evaluation.plots import lines

    series = {}
    for attention in attentions:
        for d in d_models:
            cells = [mean_accuracy(results, attention, t, d, value) for t in seq_lens]
            points = [(c["seq_len"], c["accuracy"], c["min"], c["max"]) for c in cells if c]
            if points:
                series[attention.upper() + (f" d{d}" if len(d_models) > 1 else "")] = points
    if series:
        lines(series, path, f"MQAR ({setting(results)}), mean and range over seeds\n{device(results)}",
              "sequence length", what, xticks=seq_lens)


def setting(results: dict) -> str:
    """The grid's window and pairs, as its plot titles state them."""
    return f"w = T/{results.get('window_ratio')}, pairs = {results.get('pairs') or 'T/' + str(results.get('pairs_ratio'))}"


def device(results: dict) -> str:
    return results.get("card", {}).get("device_kind", "")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/mqar.py")
    p.add_argument("--attentions", nargs="+", default=list(ATTENTIONS), choices=ATTENTIONS)
    p.add_argument("--seq-lens", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    p.add_argument("--d-models", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--head-dim", type=int, default=64,
                   help="heads of this size (d_model / head_dim of them, one kv head); 0: the config's heads")
    p.add_argument("--window-ratio", type=int, default=8)
    p.add_argument("--pairs-ratio", type=int, default=32)
    p.add_argument("--pairs", type=int, default=0, help="this many key-value pairs at every length (0: T / --pairs-ratio)")
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--max-batch-tokens", type=int, default=32768,
                   help="fewer sequences per batch at long T: batch = min(--batch, this / T)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--evals", type=int, default=5, help="evaluations per run (the eval curve is kept)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed (model and data)")
    p.add_argument("--by-distance", action="store_true",
                   help="keep each cell's final checkpoint and score it with eval.py right after training: "
                        "accuracy inside and beyond the window, and by pair distance (stored as the cell's 'mqar')")
    p.add_argument("--distance-examples", type=int, default=512, help="held-out examples for --by-distance")
    add_grid_arguments(p, results="results/mqar/grid.json", workroot="runs/mqar", timeout=3600)
    args = p.parse_args()
    after = None
    if args.by_distance:
        flags = ["--mqar", "--mqar-examples", str(args.distance_examples)]
        after = lambda workdir, env: run_eval(workdir, flags, "mqar", env)  # noqa: E731
    results = run_grid_from_args(jobs(args), args, after=after)
    save_grid(results, args, window_ratio=args.window_ratio, pairs_ratio=args.pairs_ratio, pairs=args.pairs or None, steps=args.steps,
              batch=args.batch, lr=args.lr, seeds=args.seeds)
    png = Path(args.results).with_suffix(".png")
    asked = ([], [], []) if args.plot_only else (args.attentions, args.seq_lens, args.d_models)
    plot(results, png, *plotted_axes(results, *asked))  # --plot-only: what the file holds
    print(f"wrote {args.results} and {png}")


if __name__ == "__main__":
    main()
