"""Needle in a haystack (the paper's Fig. 8 at our scale): train one model per attention on
single needles at ``--train-len``, then score exact answers from 0.5x to 8x that length at
depths 0-100% (``eval.py --niah``, teacher-forced exact match = greedy decoding's answer).

    python experiments/niah.py --jobs 4 --results results/niah/niah.json

Writes --results (JSON: per attention the training record and the (length, depth) grid) and
one PNG of heatmaps beside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.launch import Job, add_grid_arguments, evaluate_cells, run_grid_from_args, save_grid  # noqa: E402

ATTENTIONS = ("mha", "swa", "nsa", "dma")


def plot(results: dict, path: Path) -> list[Path]:
    """Heatmaps over (length, depth) of every attention in ``results``: exact answers at ``path``,
    answer-token accuracy beside it (``<path>_tokens.png``); returns the files written."""
    from dma_jax.evaluation.plots import heatmaps

    panels = {a.upper(): results["cells"][a].get("niah", []) for a in ATTENTIONS if a in results["cells"]}
    where = f"trained at {results.get('train_len')}; {results.get('card', {}).get('device_kind', '')}"
    token_path = path.with_name(path.stem + "_tokens.png")
    for value, file, what in (("accuracy", path, "exact answers"), ("token_accuracy", token_path, "answer tokens")):
        heatmaps(panels, "length", "depth", value, file, f"needle accuracy ({what}), {where}",
                 x_label="context length", y_label="needle depth", y_format=lambda d: f"{d:.0%}")
    return [path, token_path]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/niah.py")
    p.add_argument("--attentions", nargs="+", default=list(ATTENTIONS), choices=ATTENTIONS)
    p.add_argument("--train-len", type=int, default=1024)
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--scales", type=float, nargs="+", default=[0.5, 1, 2, 4, 8])
    p.add_argument("--depths", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    p.add_argument("--per-cell", type=int, default=16)
    add_grid_arguments(p, results="results/niah/niah.json", workroot="runs/niah", timeout=7200)
    args = p.parse_args()
    jobs = [Job(attention, args.config, (f"model.attention={attention}", f"data.seq_len={args.train_len}",
                                         f"model.window={args.window}", f"steps={args.steps}",
                                         f"optim.warmup_steps={max(1, args.steps // 20)}",
                                         f"log_every={max(1, args.steps // 10)}", f"eval_every={args.steps}",
                                         "checkpoint_every=0", *args.overrides),
                {"attention": attention, "train_len": args.train_len, "window": args.window})
            for attention in args.attentions]
    results = run_grid_from_args(jobs, args)
    flags = ["--niah", "--niah-scales", *map(str, args.scales), "--niah-depths", *map(str, args.depths),
             "--niah-per-cell", str(args.per_cell)]
    if not args.plot_only:
        evaluate_cells(results, Path(args.workroot), flags, "niah", Path(args.results))
    save_grid(results, args, train_len=args.train_len, window=args.window, scales=args.scales, depths=args.depths)
    png = Path(args.results).with_suffix(".png")
    written = plot(results, png)
    print(f"wrote {args.results} and {', '.join(map(str, written))}")


if __name__ == "__main__":
    main()
