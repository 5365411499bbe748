"""Plot attention benchmark JSON files (from ``benchmarks.attention``) into one PNG.

    python -m benchmarks.plot_attention results/benchmarks/attention_h200_*.json --out docs/img/attention_h200.png

Left: forward time against T; right: forward+backward. One line per kind (and per window for DMA,
and per tile config where a file compares several). ``benchmarks.attention`` draws its own run
the same way (``plot_results``).
"""

from __future__ import annotations

import argparse
import collections
import json

from benchmarks.common import card_label


def _line_name(row: dict, several_configs: bool) -> str:
    name = {"dma_pallas": "DMA", "reference": "reference", "dma_xla": "DMA XLA path"}.get(row["kind"], row["kind"])
    name = name if row["window"] is None else f"{name} w={row['window']}"
    if several_configs and row["kind"] == "dma_pallas" and row.get("config"):
        name += f" [{row['config']}]"
    return name


def plot_results(results: list[dict], out: str, baseline_window: int = 1024) -> None:
    """Draw the rows of ``attention.json`` results (dicts with 'card' and 'rows') into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = collections.defaultdict(dict)
    cards = set()
    for data in results:
        cards.add(card_label(data))
        rows = [r for r in data["rows"] if "error" not in r]
        several_configs = len({r.get("config") for r in rows if r["kind"] == "dma_pallas"}) > 1
        for row in rows:
            if row["kind"] != "dma_pallas" and row["window"] not in (None, baseline_window):
                continue  # the reference and the XLA path at one window only, to keep the plot readable
            series[_line_name(row, several_configs)][row["T"]] = row
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
        ax.legend(fontsize=7)
    fig.suptitle("B=1, H=32, Hkv=8, D=128, bf16, causal; " + "; ".join(sorted(cards)))
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--baseline-window", type=int, default=1024, help="window of the reference and XLA-path lines")
    args = p.parse_args()
    results = []
    for path in args.files:
        with open(path) as f:
            results.append(json.load(f))
    plot_results(results, args.out, args.baseline_window)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
