"""Print the worked example of docs/semantics.md and draw its pictures into docs/img/.

Run from the repository root:

    python docs/make_semantics_figures.py

The printed block is pasted verbatim into docs/semantics.md ("Worked example");
tests/test_plotting.py checks that the two still agree.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

EXAMPLE_BIAS = (0.5, 2.0, 1.0, 1.0, 0.1, 3.0, 1.0, 0.2)
EXAMPLE_WINDOW = 3
EXAMPLE_BLOCK_Q = 4


def _fmt(keys) -> str:
    return "{" + ", ".join(str(int(k)) for k in keys) + "}"


def worked_example_text(bias=EXAMPLE_BIAS, window: int = EXAMPLE_WINDOW, block_q: int = EXAMPLE_BLOCK_Q) -> str:
    """The worked example as plain text: kept sets from ``selection_mask``, ends from ``live_ranges``,
    tile key lists from ``tiles.tile_key_lists``.

    ``m_j`` is recomputed here from its definition (the w-th smallest index among the keys that
    beat key j) and shown next to the library's ``end_j``, which must equal ``max(j, m_j)``.
    """
    import jax.numpy as jnp

    from dma_jax import live_ranges, selection_mask
    from dma_jax.selection.tables import tile_key_lists

    bias = np.asarray(bias, np.float32)
    length = bias.shape[0]
    kept = np.asarray(selection_mask(jnp.asarray(bias)[None, None], window, length))[0, 0]
    ends = np.asarray(live_ranges(jnp.asarray(bias)[None, None], window))[0, 0]

    lines = [f"T={length}, w={window}", "bias = [" + ", ".join(f"{b:g}" for b in bias) + "]", ""]
    lines.append("query t | kept keys   | dropped at t")
    previous: set[int] = set()
    for t in range(length):
        keys = set(np.flatnonzero(kept[t]).tolist())
        dropped = sorted(previous - keys)
        lines.append(f"{t:7d} | {_fmt(sorted(keys)):11s} | {_fmt(dropped) if dropped else '-'}")
        previous = keys
    lines.append("")
    lines.append("key j | bias | keys that beat j      | m_j | end_j | kept by queries")
    for j in range(length):
        beats = [i for i in range(length) if bias[i] > bias[j] or (bias[i] == bias[j] and i > j)]
        m_j = sorted(beats)[window - 1] if len(beats) >= window else length  # T if too few
        end = int(ends[j])
        if end != max(j, m_j):
            raise AssertionError(f"key {j}: live_ranges gives end {end}, formula gives {max(j, m_j)}")
        queries = np.flatnonzero(kept[:, j])
        if queries.size:
            if queries.tolist() != list(range(j, end)):
                raise AssertionError(f"key {j}: kept by {queries.tolist()}, live range [{j}, {end})")
            span = f"[{j}, {end})"
        else:
            span = "none"
        lines.append(f"{j:5d} | {bias[j]:4g} | {_fmt(beats):21s} | {m_j:3d} | {end:5d} | {span}")
    lines.append("")
    lines.append(f"kept mask (# kept, . visible but dropped; rows: queries 0..{length - 1}, columns: keys)")
    for t in range(length):
        lines.append(" ".join("#" if kept[t, j] else ("." if j <= t else " ") for j in range(length)).rstrip())
    lines.append("")
    lists = np.asarray(tile_key_lists(jnp.asarray(ends)[None, None], length, block_q, window))[0, 0]
    lines.append(f"tile key lists, BM={block_q}: {window} carried slots + {block_q} own keys (-1 = empty)")
    for n, row in enumerate(lists):
        t0 = n * block_q
        needed = sorted(set(np.flatnonzero(kept[t0 : t0 + block_q].any(axis=0)).tolist()))
        if not set(needed) <= set(row.tolist()):
            raise AssertionError(f"tile {n} misses kept keys: {needed} not in {row.tolist()}")
        carried, own = row[:window].tolist(), row[window:].tolist()
        lines.append(
            f"tile {n} (queries {t0}..{t0 + block_q - 1}): carried {carried}, own {own}; "
            f"keys its queries keep: {_fmt(needed)}"
        )
    return "\n".join(lines)


def example_bias(length: int, seed: int) -> np.ndarray:
    """Random bias rounded to steps of 0.5, so that many keys tie."""
    rng = np.random.default_rng(seed)
    return (np.round(rng.normal(size=length) * 2.0) / 2.0).astype(np.float32)


def draw(out_dir: str, length: int = 48, window: int = 8, seed: int = 0) -> list[str]:
    """Write selection_example.png and selection_segments_example.png into ``out_dir``."""
    from dma_jax.plotting import plot_selection

    bias = example_bias(length, seed)
    paths = [plot_selection(bias, window, path=os.path.join(out_dir, "selection_example.png"))]
    # Two packed documents, a few padding keys (key_mask False) and one -inf key.
    segments = (np.arange(length) >= (length * 7) // 12).astype(np.int32)
    key_mask = np.ones(length, bool)
    key_mask[[5, 6, length - 8]] = False
    key_mask[length - 3 :] = False
    bias_seg = bias.copy()
    bias_seg[12] = -np.inf
    paths.append(
        plot_selection(
            bias_seg,
            window,
            segment_ids_row=segments,
            key_mask_row=key_mask,
            path=os.path.join(out_dir, "selection_segments_example.png"),
        )
    )
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--out", default=os.path.join(here, "img"), help="folder for the PNGs (default: docs/img)")
    args = parser.parse_args()
    print(worked_example_text())
    for path in draw(args.out):
        print("wrote", path)


if __name__ == "__main__":
    main()
