"""Key tables of non-causal attention for the Pallas paths, with or without packed segments.

Not causal, every query of a segment keeps the same keys: the top-w of its segment (of the whole
row without ``segment_ids``). A kept key j is live for the queries ``[start_j, end_j)`` of its
segment (``tables.key_intervals``), one contiguous run of tiles, as the kernels need.

The table lists, per query tile, every key some query of the tile keeps, -1 padded, and gives
each key **the same column in every tile where it is live**: the key-major backward walks a
column across the tiles and writes a key's sums once, when the column's occupant changes.

With segments (contiguous runs, Tq == Tk), width 2·w' + tile_q (w' = min(w, Tk)):
- a segment that spans two tiles or more ("spanning") is live in a run of tiles, and at most two
  spanning segments are live in any tile: the one holding the tile's first query and the one
  holding its last (a segment between them lies inside the tile). Spanning segments alternate
  between two banks of w' columns, so those two use different banks; a kept key sits in its
  bank at its rank among its segment's kept keys (ascending position);
- a segment inside one tile is live in that tile only: its kept keys sit in the last tile_q
  columns, at their position in the tile.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dma_jax.selection.segments import segment_bounds
from dma_jax.selection.ranges import static_keep_unchecked


def kept_per_segment(window, kv_len: int) -> int:
    """The most keys a segment (or the row) keeps: w' = min(w, Tk), Tk for window None."""
    return kv_len if window is None else min(window, kv_len)


def table_width(window, kv_len: int, tile_q: int, segments: bool) -> int:
    """Columns of ``noncausal_table``: w' without segments, 2·w' + tile_q with them."""
    width = kept_per_segment(window, kv_len)
    return 2 * width + tile_q if segments else width


def noncausal_table(bias, window, tiles: int, tile_q: int, segment_ids=None, key_mask=None) -> jax.Array:
    """Keys listed per query tile, int32 (B, Hb, tiles, W), -1 padded; see the module docstring.

    bias: float (B, Hb, Tk); window: int or None (every valid key of the segment); tiles query
    tiles of ``tile_q`` positions (tiles past the queries list nothing); segment_ids: optional int
    (B, Tk) with Tq == Tk; key_mask: optional bool (B, Tk).
    """
    keep = static_keep_unchecked(bias, window, segment_ids, key_mask)
    width = kept_per_segment(window, bias.shape[-1])
    if segment_ids is None:  # one list for every tile: the kept keys in order
        order = jnp.argsort(~keep, axis=-1, stable=True)[..., :width].astype(jnp.int32)
        listed = jnp.where(jnp.take_along_axis(keep, order, axis=-1), order, -1)
        return jnp.broadcast_to(listed[:, :, None, :], bias.shape[:2] + (tiles, width))
    return jax.vmap(_segment_table, in_axes=(0, 0, None, None, None))(keep, segment_ids, tiles, tile_q, width)


def _segment_table(keep, segment_ids, tiles, tile_q, width):
    """One batch row: keep bool (Hb, T), segment_ids (T,) -> (Hb, tiles, 2 * width + tile_q)."""
    length = keep.shape[-1]
    first, end = segment_bounds(segment_ids)
    tile_of = lambda t: t // tile_q  # noqa: E731
    spanning = tile_of(first) != tile_of(end - 1)  # per position: its segment spans two tiles or more
    positions = jnp.arange(length, dtype=jnp.int32)
    # Banks alternate over spanning segments, in order of their first position.
    spanning_starts = jnp.cumsum((positions == first) & spanning)
    bank = (spanning_starts - 1) % 2

    # Each segment's kept keys in ascending order, packed from its first position on:
    # compact[first_s + r] = r-th kept key of segment s (targets are unique).
    kept_before = jnp.cumsum(keep, axis=-1) - keep  # kept keys before j in the row
    before_segment = kept_before[:, first]  # kept keys before j's segment
    rank = kept_before - before_segment
    count = (kept_before + keep)[:, end - 1] - before_segment  # kept keys of j's segment
    target = jnp.where(keep, first + rank, length)  # not kept: dropped
    heads = keep.shape[0]
    compact = jnp.full((heads, length + 1), -1, jnp.int32).at[jnp.arange(heads)[:, None], target].set(positions)

    tile_first = jnp.arange(tiles, dtype=jnp.int32) * tile_q
    live = tile_first < length
    tile_last = jnp.minimum(tile_first + tile_q, length) - 1
    slot = jnp.arange(width, dtype=jnp.int32)

    def bank_columns(pos, other=None):
        """The kept keys of ``pos``'s segment, in its bank (Hb, tiles, 2 * width); none where that
        segment does not span or is ``other``'s."""
        pos = jnp.minimum(pos, length - 1)
        use = live & spanning[pos] if other is None else live & spanning[pos] & (first[pos] != first[other])
        keys = jnp.where(slot[None, None, :] < count[:, pos][:, :, None],
                         compact[:, jnp.minimum(first[pos][:, None] + slot[None, :], length)], -1)
        keys = jnp.where(use[None, :, None], keys, -1)
        zeros = jnp.full_like(keys, -1)
        in_bank0 = (bank[pos] == 0)[None, :, None]
        return jnp.concatenate([jnp.where(in_bank0, keys, zeros), jnp.where(in_bank0, zeros, keys)], axis=-1)

    first_q = jnp.minimum(tile_first, length - 1)
    banks = bank_columns(first_q)
    banks = jnp.maximum(banks, bank_columns(tile_last, other=first_q))  # different banks: no overlap
    inside = tile_first[:, None] + jnp.arange(tile_q, dtype=jnp.int32)[None, :]  # (tiles, tile_q)
    safe = jnp.minimum(inside, length - 1)
    own = jnp.where((inside < length) & ~spanning[safe] & keep[:, safe], inside, -1)
    return jnp.concatenate([banks, own], axis=-1)
