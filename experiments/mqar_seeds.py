"""MQAR with seeds: does an attention learn associative recall reliably, not once?

    python experiments/mqar_seeds.py --jobs 4 --results results/mqar/seeds.json          # the GPU grid
    python experiments/mqar_seeds.py --seq-lens 128 --pairs 4 --lrs 3e-3 --seeds 0 1 --steps 60 \\
        --batch 8 --cells mha dma:{w} model.d_model=32 \\
        --results runs/mqar_seeds_cpu/seeds.json --workroot runs/mqar_seeds_cpu         # CPU scale

Every combination of cell (``experiments/cells.py``, with ``{w}`` standing for the window
T / --window-ratio and ``{l}`` for w / 8), length, number of key-value pairs, learning rate and
seed trains ``configs/mqar.py`` from scratch for --steps steps. Right after training, ``eval.py
--mqar`` scores the final checkpoint on held-out examples: accuracy over all queries and over the
queries whose pair lies beyond the window (what a sliding window cannot recall).

With ``--lr-search-seeds 0`` only seed 0 runs every learning rate; the other seeds run at the rate
with seed 0's best accuracy, in a later call once seed 0's runs are in --results (80 runs instead of
120 for the default grid).

Per (cell, T, pairs) the summary takes the learning rate with the best mean accuracy over the
seeds every rate ran (all seeds, or the searched ones) and reports, at that rate: the mean, min
and max accuracy over all its seeds, the beyond-window accuracy and the share of seeds above
--solved (0.9). Writes --results (JSON: card, commands, every run, the
summary) and a bar plot beside it; prints a table last. Runs already in --results are skipped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.cells import SYNTAX, parse_cell  # noqa: E402
from experiments.launch import (Job, add_grid_arguments, base_model, load_results, report_summary,  # noqa: E402
                                run_eval, run_grid_from_args)

DEFAULT_CELLS = ("mha", "swa:{w}", "dma:{w}", "dma:{w}:hq", "dma:{w}:l{l}")


def cell_at(template: str, window: int):
    """The ``Cell`` of a template such as ``dma:{w}:l{l}`` at window w (l = w / 8, at least 1)."""
    try:
        return parse_cell(template.format(w=window, l=max(1, window // 8)))
    except (KeyError, IndexError, ValueError) as e:
        raise SystemExit(f"bad cell template {template!r} ({e}); want {SYNTAX}, with {{w}} and {{l}} for numbers")


def searched_lrs(results: dict, search_seeds, lrs) -> dict[tuple, float]:
    """(cell template, T, pairs) -> the rate of ``lrs`` with the best mean accuracy over
    ``search_seeds``, for the groups where every rate has a score on all of them."""
    scores: dict[tuple, dict[float, dict[int, float]]] = {}
    for run in results.get("cells", {}).values():
        c = run.get("cell", {})
        if c.get("seed") in search_seeds and accuracy(run) is not None:
            scores.setdefault((c["cell"], c["seq_len"], c["num_kv_pairs"]), {}).setdefault(c["lr"], {})[c["seed"]] = accuracy(run)
    best = {}
    for group, by_lr in scores.items():
        if all(set(search_seeds) <= set(by_lr.get(lr, {})) for lr in lrs):
            best[group] = max(lrs, key=lambda lr: sum(by_lr[lr][s] for s in search_seeds))
    return best


def jobs(args, num_heads: int, results: dict | None = None) -> list[Job]:
    """Every run of the grid; with ``args.lr_search_seeds``, the other seeds only at the rate the
    searched seeds chose (``searched_lrs`` over ``results``), and not yet where they have not."""
    search = args.lr_search_seeds
    chosen = searched_lrs(results or {}, search, args.lrs) if search else {}
    out = []
    # length-major: every seed of one length runs before the next length, so each length's spread
    # over seeds is complete as early as the learning-rate search allows
    for seq_len in args.seq_lens:
        for seed in args.seeds:
            window = max(1, seq_len // args.window_ratio)
            for pairs in args.pairs:
                for lr in args.lrs:
                    for template in args.cells:
                        cell = cell_at(template, window)
                        if search and seed not in search and chosen.get((template, seq_len, pairs)) != lr:
                            continue  # only at the chosen rate; none chosen yet: a later call runs it
                        overrides = (*cell.overrides(num_heads), f"data.seq_len={seq_len}",
                                     f"data.mqar_num_kv_pairs={pairs}", f"data.global_batch_size={args.batch}",
                                     f"steps={args.steps}", f"optim.peak_lr={lr}",
                                     f"optim.warmup_steps={max(1, args.steps // 20)}",
                                     f"eval_every={args.steps}", f"log_every={max(1, args.steps // 20)}",
                                     "checkpoint_every=0", f"seed={seed}", f"data.seed={seed}", *args.overrides)
                        record = {"cell": template, "spec": cell.spec, "attention": cell.attention, "window": window,
                                  "seq_len": seq_len, "num_kv_pairs": pairs, "lr": lr, "seed": seed,
                                  "steps": args.steps, "batch": args.batch}
                        name = f"{cell.name}_T{seq_len}_p{pairs}_lr{lr:g}_s{seed}"
                        out.append(Job(name, args.config, overrides, record))
    return out


def accuracy(run: dict) -> float | None:
    """The held-out accuracy of ``eval.py --mqar`` (else the last in-training evaluation)."""
    scored = (run.get("mqar") or [{}])[0].get("accuracy")
    return scored if scored is not None else (run.get("eval") or {}).get("eval_accuracy")


def beyond(run: dict) -> float | None:
    return (run.get("mqar") or [{}])[0].get("beyond_window")


def summary(results: dict, solved: float) -> list[dict]:
    """One row per (cell, T, pairs) at its best learning rate (best mean accuracy over seeds)."""
    groups: dict[tuple, dict[float, list[dict]]] = {}
    for run in results["cells"].values():
        if accuracy(run) is None:
            continue
        c = run["cell"]
        groups.setdefault((c["cell"], c["seq_len"], c["num_kv_pairs"]), {}).setdefault(c["lr"], []).append(run)
    rows = []
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    for (cell, seq_len, pairs), by_lr in groups.items():
        lr_means = {lr: mean([accuracy(r) for r in runs]) for lr, runs in by_lr.items()}
        # Rates are compared on the seeds they all ran (all of them when every rate ran every seed).
        common = set.intersection(*({r["cell"]["seed"] for r in runs} for runs in by_lr.values()))
        compared = {lr: mean([accuracy(r) for r in runs if r["cell"]["seed"] in common]) if common else lr_means[lr]
                    for lr, runs in by_lr.items()}
        best = max(compared, key=compared.get)
        accs = [accuracy(r) for r in by_lr[best]]
        rows.append({"cell": cell, "seq_len": seq_len, "num_kv_pairs": pairs, "window": by_lr[best][0]["cell"]["window"],
                     "best_lr": best, "lr_means": {str(k): v for k, v in sorted(lr_means.items())},
                     "lr_chosen_on_seeds": sorted(common),
                     "seeds": len(accs), "accuracy": mean(accs), "min": min(accs), "max": max(accs),
                     "beyond_window": mean([b for b in map(beyond, by_lr[best]) if b is not None]),
                     "solved_share": sum(a > solved for a in accs) / len(accs),
                     "wall_s": mean([r["wall_s"] for r in by_lr[best] if "wall_s" in r])})
    return sorted(rows, key=lambda r: (r["seq_len"], r["num_kv_pairs"], r["cell"]))


def plot(rows: list[dict], results: dict, path: Path) -> list[Path]:
    from dma_jax.evaluation.plots import bars

    groups: dict[str, dict[str, float]] = {}
    for r in rows:
        groups.setdefault(f"T={r['seq_len']}, {r['num_kv_pairs']} pairs", {})[r["cell"].replace("l{l}", "l=w/8").replace("{w}", "w")] = r["accuracy"]
    card = results.get("card", {}).get("device_kind", "")
    bars(groups, path, f"MQAR accuracy at the best learning rate (mean over seeds), w = T/{results.get('window_ratio')}\n{card}",
         "query accuracy")
    return [path]


def print_table(rows: list[dict]) -> None:
    print(f"\n{'cell':<16}{'T':>6}{'pairs':>6}{'w':>6}{'best lr':>9}{'seeds':>6}{'acc':>7}{'range':>13}"
          f"{'beyond w':>9}{'solved':>8}")
    for r in rows:
        b = "-" if r["beyond_window"] is None else f"{r['beyond_window']:.3f}"
        print(f"{r['cell']:<16}{r['seq_len']:>6}{r['num_kv_pairs']:>6}{r['window']:>6}{r['best_lr']:>9g}{r['seeds']:>6}"
              f"{r['accuracy']:>7.3f}{r['min']:>6.2f}-{r['max']:<6.2f}{b:>9}{r['solved_share']:>8.2f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/mqar.py")
    p.add_argument("--cells", nargs="+", default=list(DEFAULT_CELLS), help=f"templates of {SYNTAX} with {{w}}, {{l}}")
    p.add_argument("--seq-lens", type=int, nargs="+", default=[1024, 2048])
    p.add_argument("--pairs", type=int, nargs="+", default=[16, 64])
    p.add_argument("--window-ratio", type=int, default=8, help="w = T / this")
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--lr-search-seeds", type=int, nargs="*", default=None, metavar="SEED",
                   help="run every learning rate with these seeds only; the other seeds run at the rate they "
                        "chose (best mean accuracy), once their runs are in --results")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--eval-examples", type=int, default=512, help="held-out examples eval.py scores per run")
    p.add_argument("--solved", type=float, default=0.9, help="a seed counts as solved above this accuracy")
    add_grid_arguments(p, results="results/mqar/seeds.json", workroot="runs/mqar_seeds", timeout=3 * 3600)
    args = p.parse_args(argv)
    num_heads = base_model(args.config, args.overrides).num_heads
    todo = [] if args.plot_only else jobs(args, num_heads, load_results(Path(args.results)))
    flags = ["--mqar", "--mqar-examples", str(args.eval_examples)]
    results = run_grid_from_args(todo, args, after=lambda workdir, env: run_eval(workdir, flags, "mqar", env))
    report_summary(results, args, summary(results, args.solved), plot, print_table, "no run has an accuracy yet",
                   window_ratio=args.window_ratio, steps=args.steps, batch=args.batch, solved=args.solved)


if __name__ == "__main__":
    main()
