"""Needle in a haystack (the paper's Fig. 8 at our scale): train one model per attention on
single needles at ``--train-len``, then score exact answers from 0.5x to 8x that length at
depths 0-100% (``eval.py --niah``, teacher-forced exact match = greedy decoding's answer).

    python experiments/niah.py --jobs 4 --results results/niah/niah.json

Writes --results (JSON: per attention the training record and the (length, depth) grid) and
one PNG of heatmaps beside it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.launch import ROOT, Job, run_grid  # noqa: E402

ATTENTIONS = ("mha", "swa", "nsa", "dma")


def evaluate(workdir: Path, args) -> list[dict]:
    out = workdir / "niah_eval.json"
    command = [sys.executable, str(ROOT / "eval.py"), "--workdir", str(workdir), "--out", str(out), "--no-progress",
               "--niah", "--niah-scales", *map(str, args.scales), "--niah-depths", *map(str, args.depths),
               "--niah-per-cell", str(args.per_cell), "--plots-dir", str(workdir)]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(out.read_text())["runs"][0]["niah"]


def plot(results: dict, path: Path, attentions):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(attentions), figsize=(3.2 * len(attentions) + 1, 3.4), squeeze=False)
    for ax, attention in zip(axes[0], attentions):
        rows = results["cells"].get(attention, {}).get("niah", [])
        ax.set_title(attention.upper(), fontsize=10)
        if not rows:
            ax.text(0.5, 0.5, "no result", ha="center", va="center", transform=ax.transAxes)
            continue
        lengths = sorted({r["length"] for r in rows})
        depths = sorted({r["depth"] for r in rows})
        grid = np.full((len(depths), len(lengths)), np.nan)
        for r in rows:
            grid[depths.index(r["depth"]), lengths.index(r["length"])] = r["accuracy"]
        ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", origin="lower", aspect="auto")
        for (i, j), v in np.ndenumerate(grid):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(lengths)), [str(n) for n in lengths], fontsize=7, rotation=45)
        ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths], fontsize=7)
        ax.set_xlabel("context length")
    axes[0][0].set_ylabel("needle depth")
    fig.suptitle(f"needle accuracy, trained at {results.get('train_len')}; "
                 f"{results.get('card', {}).get('device_kind', '')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--timeout", type=float, default=7200)
    p.add_argument("--results", default="results/niah/niah.json")
    p.add_argument("--workroot", default="runs/niah")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    jobs = [Job(attention, args.config, (f"model.attention={attention}", f"data.seq_len={args.train_len}",
                                         f"model.window={args.window}", f"steps={args.steps}",
                                         f"optim.warmup_steps={max(1, args.steps // 20)}",
                                         f"log_every={max(1, args.steps // 10)}", f"eval_every={args.steps}",
                                         "checkpoint_every=0", *args.overrides),
                {"attention": attention, "train_len": args.train_len, "window": args.window})
            for attention in args.attentions]
    results = run_grid(jobs, Path(args.results), Path(args.workroot), parallel=args.jobs, timeout_s=args.timeout)
    for attention in args.attentions:
        cell = results["cells"][attention]
        if "error" not in cell and "niah" not in cell:
            cell["niah"] = evaluate(Path(args.workroot) / attention, args)
    results.update(train_len=args.train_len, window=args.window, scales=args.scales, depths=args.depths)
    Path(args.results).write_text(json.dumps(results, indent=2))
    png = Path(args.results).with_suffix(".png")
    plot(results, png, args.attentions)
    print(f"wrote {args.results} and {png}")


if __name__ == "__main__":
    main()
