"""Plots of evaluation results: accuracy heatmaps and loss-against-compute lines."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def heatmap(rows: list[dict], x: str, y: str, value: str, path: str | Path, title: str, *, x_label=None, y_label=None):
    """A heatmap of ``value`` over the (x, y) pairs found in ``rows`` (missing cells blank)."""
    xs = sorted({r[x] for r in rows})
    ys = sorted({r[y] for r in rows})
    grid = np.full((len(ys), len(xs)), np.nan)
    for r in rows:
        grid[ys.index(r[y]), xs.index(r[x])] = r[value]
    fig, ax = plt.subplots(figsize=(max(5.5, 1.6 + 0.9 * len(xs)), max(3.2, 1.4 + 0.6 * len(ys))))
    image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto", origin="lower")
    for (i, j), v in np.ndenumerate(grid):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(xs)), [str(v) for v in xs])
    ax.set_yticks(range(len(ys)), [str(v) for v in ys])
    ax.set_xlabel(x_label or x)
    ax.set_ylabel(y_label or y)
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label=value)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def lines(series: dict[str, list[tuple[float, float]]], path: str | Path, title: str, x_label: str, y_label: str,
          *, log_x: bool = True):
    """One line per name of (x, y) points."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for name, points in sorted(series.items()):
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, "-o", label=name, markersize=4)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
