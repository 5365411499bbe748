"""Pictures of the dynamic-mask selection of one (batch, head) row.

``plot_selection`` draws the per-key bias above the causal kept-key mask and overlays every
key's live range ``[j, end_j)`` from ``live_ranges``, so one can see that the kept cells of a
key's column form exactly one contiguous run of queries starting at the key itself.
matplotlib is imported inside the function and renders with Agg (pyplot is not used), so importing ``dma_jax`` never
needs it.
"""

from __future__ import annotations

import os

import numpy as np

from dma_jax.ops.reference import selection_mask, visible_mask
from dma_jax.selection import live_ranges

_KEPT = "#1f4e9c"  # kept by the query
_SEEN = "#d9d9d9"  # visible to the query but not among its top-w
_HIDDEN = "#ffffff"  # not visible (future key, other segment, masked or -inf key)
_LIVE = "#f28e2b"  # live-range overlay
_NEVER = "#c0392b"  # marks a valid key that no query keeps


def plot_selection(
    bias_row,
    window: int | None,
    *,
    segment_ids_row=None,
    key_mask_row=None,
    path: str | os.PathLike,
) -> str:
    """Draw the causal dynamic-mask selection of one (batch, head) row and save it as a PNG.

    Top panel: the bias of every key (bars; keys that can never be kept, because
    ``key_mask_row`` is False or the bias is -inf, are marked with a grey cross). Bottom
    panel: the kept-key mask from ``dma_jax.selection_mask`` (queries down, keys across,
    causal, Tq == Tk): dark cells are kept, grey cells are visible but not in the query's
    top-``window``. An orange line in column j runs over the live range ``[j, end_j)``
    from ``dma_jax.live_ranges``; it covers exactly the kept cells of that column. Valid keys
    that no query keeps (``end_j == j``) get a red dot on the diagonal. Segment borders
    are drawn as thin black lines.

    Args:
      bias_row: float (T,), one score per key; NaN is rejected (as by ``selection_mask``).
      window: keys kept per query (int >= 1) or None (all visible keys).
      segment_ids_row: optional int (T,), contiguous runs of packed documents.
      key_mask_row: optional bool (T,), False keys (padding) are never kept.
      path: where to write the PNG; parent folders are created.

    Returns:
      ``path`` as a string.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    bias_np = np.asarray(bias_row, dtype=np.float32)
    if bias_np.ndim != 1:
        raise ValueError(f"bias_row must have shape (T,), got {bias_np.shape}")
    length = bias_np.shape[0]
    bias = bias_np[None, None, :]
    segment_ids = None if segment_ids_row is None else np.asarray(segment_ids_row, np.int32)[None, :]
    key_mask = None if key_mask_row is None else np.asarray(key_mask_row, bool)[None, :]
    for name, row in (("segment_ids_row", segment_ids), ("key_mask_row", key_mask)):
        if row is not None and row.shape != (1, length):
            raise ValueError(f"{name} must have shape (T,)=({length},), got {row.shape[1:]}")

    kept = np.asarray(
        selection_mask(bias, window, length, segment_ids=segment_ids, key_mask=key_mask)
    )[0, 0]
    seen = np.asarray(visible_mask(bias, length, segment_ids=segment_ids, key_mask=key_mask))[0, 0]
    ends = np.asarray(live_ranges(bias, window, segment_ids=segment_ids, key_mask=key_mask))[0, 0]
    valid = np.isfinite(bias_np) | (bias_np == np.inf)
    if key_mask is not None:
        valid &= key_mask[0]

    size = min(14.0, max(6.0, 0.16 * length + 3.0))
    fig = Figure(figsize=(size, size * 1.15))
    FigureCanvasAgg(fig)  # render with Agg, leaving pyplot's global backend alone
    ax_bias, ax_mask = fig.subplots(
        2,
        1,
        sharex=True,
        gridspec_kw={"height_ratios": [1, 3.2], "hspace": 0.06},
    )
    keys = np.arange(length)

    # Top: bias per key.
    finite = np.isfinite(bias_np) & valid
    floor = float(np.min(bias_np[finite])) if finite.any() else 0.0
    ax_bias.bar(keys[finite], bias_np[finite], width=0.8, color=_KEPT, alpha=0.85)
    if (~valid).any():
        ax_bias.plot(
            keys[~valid],
            np.full((~valid).sum(), min(floor, 0.0)),
            "x",
            color="grey",
            markersize=7,
            mew=2,
            label="never kept (masked or -inf)",
        )
    ax_bias.axhline(0.0, color="black", linewidth=0.6)
    ax_bias.set_ylabel("bias of key j")
    ax_bias.grid(axis="y", alpha=0.3)
    if (~valid).any():
        ax_bias.legend(loc="best", fontsize=8, framealpha=0.9)

    # Bottom: 0 hidden, 1 visible but dropped, 2 kept.
    state = np.where(kept, 2, np.where(seen, 1, 0))
    cmap = ListedColormap([_HIDDEN, _SEEN, _KEPT])
    ax_mask.imshow(
        state,
        cmap=cmap,
        vmin=0,
        vmax=2,
        interpolation="nearest",
        aspect="auto",
        extent=(-0.5, length - 0.5, length - 0.5, -0.5),
    )
    live = ends > keys
    ax_mask.vlines(keys[live], keys[live] - 0.35, ends[live] - 0.65, color=_LIVE, linewidth=1.6)
    ax_mask.plot(keys[live], ends[live] - 0.65, "_", color=_LIVE, markersize=5, mew=1.6)
    never = valid & ~live
    ax_mask.plot(keys[never], keys[never], "o", color=_NEVER, markersize=3.5)
    if segment_ids is not None:
        borders = np.flatnonzero(segment_ids[0, 1:] != segment_ids[0, :-1]) + 0.5
        for border in borders:
            ax_mask.axhline(border, color="black", linewidth=0.8)
            ax_mask.axvline(border, color="black", linewidth=0.8)
    ax_mask.set_xlim(-0.5, length - 0.5)
    ax_mask.set_ylim(length - 0.5, -0.5)
    ax_mask.set_xlabel("key index j")
    ax_mask.set_ylabel("query index t")
    step = max(1, length // 12)
    ax_mask.set_xticks(np.arange(0, length, step))
    ax_mask.set_yticks(np.arange(0, length, step))
    handles = [
        Patch(facecolor=_KEPT, label="kept by query t"),
        Patch(facecolor=_SEEN, edgecolor="#bbbbbb", label="visible, not in top-w"),
        Line2D([], [], color=_LIVE, linewidth=1.6, label="live range [j, end_j)"),
        Line2D([], [], color=_NEVER, marker="o", linestyle="none", markersize=4, label="valid key never kept"),
    ]
    ax_mask.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.95)

    ever_kept = int(live.sum())
    window_text = "all" if window is None else str(window)
    extras = []
    if segment_ids is not None:
        extras.append(f"{len(np.unique(segment_ids))} segments")
    if key_mask is not None:
        extras.append(f"{int((~key_mask).sum())} keys masked")
    extra = (", " + ", ".join(extras)) if extras else ""
    ax_bias.set_title(
        f"Dynamic mask selection: T={length}, w={window_text}{extra}; "
        f"{ever_kept} of {length} keys are ever kept",
        fontsize=11,
    )

    path = os.fspath(path)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path
