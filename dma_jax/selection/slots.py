"""Slot assignment: each kept key takes the slot of the key it evicts.

Under causal selection with a full kept set, each new key that is kept evicts exactly one key
of its segment (the one whose live range ends where the new key arrives). So the w slots of a
query's kept set can be given out once for the whole sequence: the first ``w`` valid keys of a
segment take slots ``0 .. w-1`` in order, and every later kept key inherits the slot of the key
it evicts. Keys sharing a slot have disjoint live ranges, in index order.

That gives, for each tile of queries, the keys carried into it as a fixed (tiles, w) table
(slot s of tile n holds the occupant of slot s at the tile's first query, or -1), built with a
scatter, a running max and pointer jumping: no sort, O(T log T) worst case, no T x T array.
A key-major pass can walk one slot across tiles and meet each key in one unbroken run.

Needs each segment to be one contiguous run (packed documents).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from dma_jax.selection.segments import segment_bounds


def _row_slots(ends, valid, segment, window):
    """Slot of every key of one row (-1 for keys never kept). All arrays (T,)."""
    length = ends.shape[0]
    index = jnp.arange(length, dtype=jnp.int32)
    first_of_run, run_end = segment_bounds(segment)
    valid_before = jnp.cumsum(valid.astype(jnp.int32)) - valid.astype(jnp.int32)
    rank_in_run = valid_before - valid_before[first_of_run]
    kept_ever = ends > index
    root = valid & (rank_in_run < window)
    # The key evicted at query t is the one whose range ends at t, within t's own run.
    evicted = kept_ever & (ends < run_end)
    evictee = jnp.full((length,), -1, jnp.int32).at[jnp.where(evicted, ends, length)].set(index, mode="drop")
    pointer = jnp.where(kept_ever & ~root & (evictee >= 0), evictee, index)
    # Pointer jumping: after k turns each key points 2^k steps back along its chain (a root
    # points to itself), so ceil(log2(T)) turns reach every root. A fixed count of turns, not a
    # while loop: on the GPU a while loop reads its condition on the host every turn, which
    # stalls the launch queue (docs/kernels.md, the selection's binary search).
    for _ in range(max(1, (length - 1).bit_length())):
        pointer = pointer[pointer]
    return jnp.where(kept_ever, rank_in_run[pointer], -1)


def _carried_span(ends, tiles, block_q, q_offset):
    """The first and last tile that carry each key (``first > last``: none). Tile n starts at
    ``t0 = q_offset + n * block_q`` and carries key j iff ``j < t0 < ends[j]``. ends: (..., Tk)."""
    index = jnp.arange(ends.shape[-1], dtype=jnp.int32)
    first = jnp.maximum(0, jnp.floor_divide(index - q_offset, block_q) + 1)
    last = jnp.minimum(tiles - 1, jnp.floor_divide(ends - q_offset - 1, block_q))
    return first, last


def _row_carried(ends, slots, tiles, block_q, window, q_offset):
    length = ends.shape[0]
    # The (tiles, window) table is the selection's largest array (32 MiB a row at 32K, w = 1024):
    # built in int16 where every key index fits, widened to int32 only by the last step.
    dtype = jnp.int16 if length <= 2**15 else jnp.int32
    index = jnp.arange(length, dtype=dtype)
    first, last = _carried_span(ends, tiles, block_q, q_offset)
    carried = (slots >= 0) & (first <= last)
    table = jnp.full((tiles, window), -1, dtype)
    table = table.at[jnp.where(carried, first, tiles), jnp.maximum(slots, 0)].set(index, mode="drop")
    table = lax.cummax(table, axis=0).astype(jnp.int32)
    tile_start = q_offset + jnp.arange(tiles, dtype=jnp.int32)[:, None] * block_q
    alive = (table >= 0) & (ends[jnp.maximum(table, 0)] > tile_start)
    # where(alive, table, -1), written so that XLA cannot share the -1 with the scatter's initial
    # array: shared, that array was materialised and read again here.
    return jnp.where(alive, table + 1, 0) - 1


def key_slots(ends, window, *, segment_ids=None, key_mask=None, bias=None):
    """int32 (B, Hb, Tk): the slot in [0, window) of every key ever kept, -1 otherwise.

    Args:
      ends: int32 (B, Hb, Tk) from ``live_ranges`` with the same window and masks.
      window: the window (int).
      segment_ids, key_mask, bias: as given to ``live_ranges``; ``bias`` may be omitted when
        it has no -inf/NaN (validity then comes from ``key_mask`` alone).
    """
    batch, heads, length = ends.shape
    valid = jnp.ones((batch, heads, length), bool)
    if key_mask is not None:
        valid = valid & key_mask[:, None, :]
    if bias is not None:
        valid = valid & ~jnp.isnan(bias) & (bias != -jnp.inf)
    segment = jnp.zeros((batch, length), jnp.int32) if segment_ids is None else segment_ids.astype(jnp.int32)
    row = lambda e, v, s: _row_slots(e, v, s, window)
    return jax.vmap(jax.vmap(row, in_axes=(0, 0, None)))(ends, valid, segment)


def ever_carried(ends, q_len, block_q):
    """bool (B, Hb, Tk): whether ``carried_key_table(ends, ...)`` lists key j in some tile of
    ``block_q`` queries (the last Tq = ``q_len`` positions of the sequence are the queries): a tile
    start t0 with ``j < t0 < ends[j]``. Every kept key has a slot, and keys sharing a slot have
    disjoint live ranges, so no other key takes its cell there; no scatter is needed."""
    kv_len = ends.shape[-1]
    first, last = _carried_span(ends, -(-q_len // block_q), block_q, kv_len - q_len)
    return first <= last


def carried_key_table(ends, slots, q_len, block_q, window):
    """int32 (B, Hb, tiles, window): slot s of tile n holds the key carried into tile n in slot s.

    Tile n holds queries ``[n * block_q, (n + 1) * block_q)`` of the call, whose first query
    is ``t0 = Tk - Tq + n * block_q`` of the sequence; its carried keys are the keys ``j < t0``
    with ``ends[j] > t0``. Empty slots are -1.
    """
    kv_len = ends.shape[-1]
    tiles = -(-q_len // block_q)
    row = lambda e, s: _row_carried(e, s, tiles, block_q, window, kv_len - q_len)
    return jax.vmap(jax.vmap(row))(ends, slots)
