"""Plot attention benchmark JSON files (from benchmarks/attention.py) into one PNG.

    python benchmarks/plot_attention.py benchmarks/results/attention_h200_*.json --out docs/img/attention_h200.png

Left: forward time against T; right: forward+backward. One line per kind (and per window for DMA).
"""

from __future__ import annotations

import argparse
import collections
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--baseline-window", type=int, default=1024, help="window of the reference and XLA-path lines")
    args = p.parse_args()
    series = collections.defaultdict(dict)
    cards = set()
    for path in args.files:
        data = json.load(open(path))
        cards.add(f"{data['card']}, JAX {data['jax']}")
        for row in data["rows"]:
            if "error" in row:
                continue
            if row["kind"] != "dma_pallas" and row["window"] not in (None, args.baseline_window):
                continue  # the reference and the XLA path at one window only, to keep the plot readable
            name = {"dma_pallas": "DMA", "reference": "reference", "dma_xla": "DMA XLA path"}.get(row["kind"], row["kind"])
            name = name if row["window"] is None else f"{name} w={row['window']}"
            series[name][row["T"]] = row
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    order = sorted(series, key=lambda n: (not n.startswith("DMA"), len(n), n))
    colors = {name: f"C{i % 10}" for i, name in enumerate(order)}  # one colour per line in both panels
    for ax, key, title in zip(axes, ("fwd_ms", "fwd_bwd_ms"), ("forward", "forward + backward")):
        for name in order:
            points = sorted((t, r[key]) for t, r in series[name].items() if key in r)
            if points:
                style = "-o" if name.startswith("DMA w") else "--s"
                ax.plot(*zip(*points), style, label=name, markersize=4, color=colors[name])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_ylabel("time (ms), selection included for DMA")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("B=1, H=32, Hkv=8, D=128, bf16, causal; " + "; ".join(sorted(cards)))
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
