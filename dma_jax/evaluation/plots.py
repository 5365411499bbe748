"""Plots of evaluation results: accuracy heatmaps and loss-against-compute lines."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402


def heatmaps(panels: dict[str, list[dict]], x: str, y: str, value: str, path: str | Path, title: str, *,
             x_label=None, y_label=None, xs=None, ys=None, y_format=str):
    """One heatmap of ``value`` over (x, y) per panel, side by side, on one 0-1 colour scale.

    ``panels``: panel title -> rows (dicts with keys x, y, value). Axes: ``xs``/``ys`` when given,
    else the values found in the rows; cells without a row show "-", panels without rows say so.
    """
    found = [r for rows in panels.values() for r in rows]
    xs = sorted({r[x] for r in found}) if xs is None else list(xs)
    ys = sorted({r[y] for r in found}) if ys is None else list(ys)
    width = max(5.5, 1.6 + 0.9 * len(xs)) if len(panels) == 1 else 2.6 + 0.5 * len(xs)
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels) + 1, max(3.2, 1.4 + 0.6 * len(ys))),
                             squeeze=False)
    image = None
    for ax, (name, rows) in zip(axes[0], panels.items()):
        ax.set_title(name, fontsize=10)
        if not rows:
            ax.text(0.5, 0.5, "no result", ha="center", va="center", transform=ax.transAxes)
            continue
        grid = np.full((len(ys), len(xs)), np.nan)
        for r in rows:
            grid[ys.index(r[y]), xs.index(r[x])] = r[value]
        image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto", origin="lower")
        for (i, j), v in np.ndenumerate(grid):
            ax.text(j, i, "-" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(xs)), [str(v) for v in xs], fontsize=8, rotation=45 if len(xs) > 4 else 0)
        ax.set_yticks(range(len(ys)), [y_format(v) for v in ys], fontsize=8)
        ax.set_xlabel(x_label or x)
    axes[0][0].set_ylabel(y_label or y)
    if image is not None:
        fig.colorbar(image, ax=list(axes[0]), label=value)
    fig.suptitle(title, fontsize=10, y=1.02)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def heatmap(rows: list[dict], x: str, y: str, value: str, path: str | Path, title: str, *, x_label=None, y_label=None):
    """A heatmap of ``value`` over the (x, y) pairs found in ``rows`` (missing cells "-")."""
    return heatmaps({"": rows}, x, y, value, path, title, x_label=x_label, y_label=y_label)


def lines(series: dict[str, list[tuple[float, ...]]], path: str | Path, title: str, x_label: str, y_label: str,
          *, log_x: bool = True, log_y: bool = False, xticks=None):
    """One line per name of (x, y) points; points given as (x, y, low, high) also draw that range
    as an error bar (e.g. the spread over seeds); a mean that rounding puts a hair outside its own
    range (three seeds of 0.2 average to 0.20000000000000004) gets a zero-length bar on that side.
    ``xticks``: label exactly these x values."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for name, points in sorted(series.items()):
        points = sorted(points)
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        line, = ax.plot(xs, ys, "-o", label=name, markersize=4)
        ranged = [p for p in points if len(p) == 4]
        if ranged:
            x, y, low, high = (np.array(c, dtype=float) for c in zip(*ranged))
            ax.errorbar(x, y, yerr=np.maximum([y - low, high - y], 0.0), fmt="none", ecolor=line.get_color(), capsize=3)
    if log_x:
        ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.tick_params(axis="y", which="minor", labelsize=7)
    if xticks is not None:
        ax.set_xticks(list(xticks), [f"{x:g}" for x in xticks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel(x_label)
    ax.grid(True, which="both", alpha=0.3)
    return _finish(fig, ax, path, title, y_label)


def distance_lines(slices: dict[str, dict], path: str | Path, title: str, y_label: str = "query accuracy"):
    """MQAR accuracy against how far back each query's pair lies: one line per name of an
    ``mqar_accuracy`` row (its ``by_distance`` buckets, drawn at their upper ends)."""
    series = {name: [(b["hi"], b["accuracy"]) for b in row["by_distance"]] for name, row in slices.items()}
    return lines(series, path, title, "distance from the query back to its value (bucket's upper end)", y_label,
                 xticks=sorted({x for points in series.values() for x, _ in points}))


def _finish(fig, ax, path, title: str, y_label: str):
    """Y label, title and legend; save to ``path`` and close."""
    ax.set_ylabel(y_label)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bars(groups: dict[str, dict[str, float]], path: str | Path, title: str, y_label: str):
    """Grouped bars: one group per outer key (e.g. model size), one bar per inner key (e.g. attention)."""
    names = sorted({name for bars_ in groups.values() for name in bars_})
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for i, name in enumerate(names):
        xs = [g + (i - (len(names) - 1) / 2) * width for g, bars_ in enumerate(groups.values()) if name in bars_]
        ys = [bars_[name] for bars_ in groups.values() if name in bars_]
        ax.bar(xs, ys, width, label=name)
    ax.set_xticks(range(len(groups)), list(groups), rotation=45 if len(groups) > 5 else 0,
                  ha="right" if len(groups) > 5 else "center")
    ax.grid(True, axis="y", alpha=0.3)
    return _finish(fig, ax, path, title, y_label)
