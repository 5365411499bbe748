"""Train one small model per attention on the same task and compare them: the README's main job.

By default DMA, MHA and SWA learn MQAR from ``configs/mqar_quick.py`` (a few minutes on a 2-core
CPU, less on a GPU). Prints a table of held-out query accuracy, loss, parameters, wall time and
training speed, and saves a plot of accuracy against step. Each trained model is then scored by
``eval.py`` on 512 held-out examples (``--eval-examples``), split by how far back each query's
pair lies: the table's "beyond w" column is the accuracy on queries whose pair lies beyond the
window (where one layer of sliding window cannot see it), and ``distance.png`` draws accuracy
against that distance:

    python experiments/compare.py
    python experiments/compare.py --attentions dma mha swa mla nsa --out runs/compare_all steps=3000

Runs that finished already (in ``--out``/results.json) are not run again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.launch import ROOT, Job, evaluate_cells, run_grid  # noqa: E402
from experiments.mqar_grid import beyond_window_accuracy  # noqa: E402

ATTENTIONS = ("mha", "swa", "mla", "nsa", "dma")


def table(results: dict, attentions) -> str:
    """Markdown table: one row per attention, in the order asked."""
    window = next((c["mqar"][0].get("window") for c in results["cells"].values() if c.get("mqar")), None)
    head = (f"| attention | query accuracy | beyond w = {window or '?'} | eval loss | params | wall | train tokens/s |\n"
            "|---|---|---|---|---|---|---|")
    rows = []
    for attention in attentions:
        cell = results["cells"].get(attention, {})
        if "error" in cell or not cell.get("eval"):
            rows.append(f"| {attention} | failed: {cell.get('error', 'not run')[:60]!r} | | | | | |")
            continue
        ev, train = cell["eval"], cell["train"]
        beyond = beyond_window_accuracy(cell)
        rows.append(f"| {attention} | {ev['eval_accuracy']:.1%} | {'-' if beyond is None else f'{beyond:.1%}'} | "
                    f"{ev['eval_loss']:.3f} | {cell['params']:,} | {cell['wall_s']:.0f} s | {train['tokens_per_s']:,.0f} |")
    return "\n".join([head, *rows])


def plot(results: dict, path: Path, attentions) -> None:
    from dma_jax.evaluation.plots import lines

    series = {a.upper(): [(r["step"], r["eval_accuracy"]) for r in results["cells"][a].get("eval_curve", [])]
              for a in attentions if results["cells"].get(a, {}).get("eval_curve")}
    card = results.get("card", {}).get("device_kind", "")
    lines(series, path, f"held-out query accuracy while training; {card}", "step", "accuracy", log_x=False)


def plot_distance(results: dict, path: Path, attentions) -> Path | None:
    """Accuracy against how far back each query's pair lies (eval.py's buckets), one line per model."""
    from dma_jax.evaluation.plots import distance_lines

    scored = {a.upper(): results["cells"][a]["mqar"][0] for a in attentions if results["cells"].get(a, {}).get("mqar")}
    if not scored:
        return None
    window = next(iter(scored.values())).get("window")
    return distance_lines(scored, path, f"held-out query accuracy by pair distance (window {window})", "accuracy")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs" / "mqar_quick.py"))
    p.add_argument("--attentions", nargs="+", default=["dma", "mha", "swa"], choices=ATTENTIONS)
    p.add_argument("--out", default="runs/compare", help="workdirs, results.json and compare.png go here")
    p.add_argument("--jobs", type=int, default=1, help="models trained at a time (a GPU fits several)")
    p.add_argument("--eval-examples", type=int, default=512, help="held-out examples eval.py scores per model")
    p.add_argument("overrides", nargs="*", help="key=value overrides for every model, as train.py takes")
    args = p.parse_args(argv)
    out, config = Path(args.out).resolve(), str(Path(args.config).resolve())  # train.py runs from the repo root
    jobs = [Job(a, config, (f"model.attention={a}", *args.overrides), {"attention": a}) for a in args.attentions]
    results = run_grid(jobs, out / "results.json", out, parallel=args.jobs)
    evaluate_cells(results, out, ["--mqar", "--mqar-examples", str(args.eval_examples)], "mqar", out / "results.json")
    plot(results, out / "compare.png", args.attentions)
    distance = plot_distance(results, out / "distance.png", args.attentions)
    print(table(results, args.attentions))
    print(f"wrote {out / 'results.json'}, {out / 'compare.png'}" + (f" and {distance}" if distance else ""))
    failed = [a for a in args.attentions if not results["cells"].get(a, {}).get("eval")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
