"""Per-tile key tables: which keys a tile of consecutive queries can keep, from live ranges.

Every fast path reads the selection through two things built here:

- ``key_intervals``: per key, the (call) queries that keep it, ``start_j <= t' < end_j``. Causal:
  ``[j, end_j)`` from ``live_ranges``; not causal: a kept key's segment (or every query).
- key tables, one row per tile of ``tile_q`` consecutive queries. A causal tile starting at
  sequence position t0 keeps only keys that are live at t0 and came before it (at most w: the kept
  set of query t0), each in its slot (``slots``), plus the tile's own keys ``[t0, t0 + tile_q)``.
  A non-causal tile lists its segments' kept keys (``noncausal``).

Fast paths gather those ``w + tile_q`` rows and run dense math on them with the exact mask, so
the work follows the kept keys: O(T * (w + tile_q)) instead of O(T^2). ``key_tables`` is the one
builder the GPU and TPU kernel wrappers call; ``tile_key_lists`` serves the XLA path.

The bounds need each segment to be one contiguous run (packed documents).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.ad_checkpoint import checkpoint_name

from dma_jax.remat import SELECTION
from dma_jax.selection import noncausal
from dma_jax.selection.ranges import live_ranges_unchecked, static_keep_unchecked
from dma_jax.selection.segments import segment_bounds
from dma_jax.selection.slots import carried_key_table, key_slots


def num_tiles(q_len: int, block_q: int) -> int:
    return -(-q_len // block_q)


def key_intervals(bias, window, q_len, *, causal, segment_ids, key_mask, local_window=0, sink_keys=0):
    """Per key, the queries that keep it: ``start <= t' < end``, int32 (B, Hb, Tk) each.

    Causal: ``t' = t + Tk - Tq`` and ``[start, end) = [j, end_j)`` from ``live_ranges`` (with the
    local-window variant's ``local_window`` and ``sink_keys``).
    Not causal: ``t' = t``; a kept key spans ``[0, Tq)``, or with ``segment_ids`` (Tq == Tk) its
    segment's positions; any other key ``[0, 0)``.
    """
    kv_len = bias.shape[-1]
    if causal:
        end = live_ranges_unchecked(bias, window, segment_ids, key_mask, local_window, sink_keys)
        start = jnp.broadcast_to(jnp.arange(kv_len, dtype=jnp.int32), end.shape)
        return start, end
    keep = static_keep_unchecked(bias, window, segment_ids, key_mask)
    if segment_ids is None:
        first, end = jnp.zeros((1, 1, 1), jnp.int32), jnp.full((1, 1, 1), q_len, jnp.int32)
    else:
        first, end = (x[:, None, :] for x in segment_bounds(segment_ids))
    return jnp.where(keep, first, 0).astype(jnp.int32), jnp.where(keep, end, 0).astype(jnp.int32)


def carried_keys(
    ends: jax.Array,
    q_len: int,
    block_q: int,
    window: int,
    *,
    segment_ids: jax.Array | None = None,
    key_mask: jax.Array | None = None,
    bias: jax.Array | None = None,
) -> jax.Array:
    """Keys carried into each query tile from before it, one slot per kept-set position.

    Args:
      ends: int32 (B, Hb, Tk) from ``live_ranges``.
      q_len: Tq; queries are the last Tq of Tk positions (bottom-right causal).
      block_q: queries per tile.
      window: the window ``ends`` was computed with.
      segment_ids, key_mask, bias: the masks ``ends`` was computed with (see ``slots``).

    Returns:
      int32 (B, Hb, ceil(Tq / block_q), window): for tile n (queries
      ``[n * block_q, (n + 1) * block_q)`` of the call) the keys ``j < t0`` with
      ``ends[j] > t0``, ``t0 = Tk - Tq + n * block_q``, each in its slot (``slots.key_slots``),
      -1 where a slot is empty. A key keeps one slot in every tile it is carried into.
    """
    slots = key_slots(ends, window, segment_ids=segment_ids, key_mask=key_mask, bias=bias)
    return carried_key_table(ends, slots, q_len, block_q, window)


def tile_key_lists(ends: jax.Array, q_len: int, block_q: int, window: int, **masks) -> jax.Array:
    """int32 (B, Hb, tiles, window + block_q): carried keys (by slot), then the tile's own keys.

    ``masks``: ``segment_ids``, ``key_mask``, ``bias`` as given to ``live_ranges``.

    Own keys past Tk are -1. Every key a query of the tile keeps is in its list; the list
    may hold keys no query keeps (masked by the exact per-element test).
    """
    kv_len = ends.shape[-1]
    tiles = num_tiles(q_len, block_q)
    carried = carried_keys(ends, q_len, block_q, window, **masks)
    own = (kv_len - q_len) + jnp.arange(tiles)[:, None] * block_q + jnp.arange(block_q)[None, :]
    own = jnp.where(own < kv_len, own, -1).astype(jnp.int32)
    own = jnp.broadcast_to(own, carried.shape[:2] + own.shape)
    return jnp.concatenate([carried, own], axis=-1)


def table_width(window, kv_len: int, tile_q: int, *, causal: bool, segments: bool) -> int:
    """Columns a ``key_tables`` table needs for tiles of ``tile_q`` queries, before padding.

    Causal: w' = min(w, Tk) slots (Tk for window None); the tile's own keys are not listed.
    Not causal: w', or 2·w' + tile_q with segments (``noncausal.table_width``).
    """
    if causal:
        return noncausal.kept_per_segment(window, kv_len)
    return noncausal.table_width(window, kv_len, tile_q, segments)


class KeyTables(NamedTuple):
    """The selection as the kernels read it.

    start, end: int32 (B, Hb, Tk), ``key_intervals``. tables: one int32 (B, Hb, tiles, width)
    table per tiling asked of ``key_tables``, -1 padded.
    """

    start: jax.Array
    end: jax.Array
    tables: tuple[jax.Array, ...]


SCOPE = "dma_selection"  # the selection stage's ops carry this in their name stack (benchmarks.step_profile)


def key_tables(
    bias: jax.Array,
    window: int | None,
    q_len: int,
    tile_sizes: Sequence[int],
    width: int,
    *,
    causal: bool,
    segment_ids: jax.Array | None,
    key_mask: jax.Array | None,
    local_window: int = 0,
    sink_keys: int = 0,
) -> KeyTables:
    """Live ranges and the key table of each tiling: the selection stage of the kernel paths.

    Args:
      bias: float (B, Hb, Tk) (no gradient flows through the selection).
      window, causal, segment_ids, key_mask, local_window, sink_keys: as ``dma_attention``
        (already checked). The local-window variant keeps w keys a query too and evicts one key per
        new key, so its tables are DMA's: only the live ranges differ.
      q_len: Tq.
      tile_sizes: query positions per tile of each table; the first is the coarsest and the others
        divide it. Every table covers ``ceil(Tq / tile_sizes[0]) * (tile_sizes[0] // tile_q)``
        tiles, so a finer tiling re-tiles the coarse one by a reshape; tiles past the queries list
        nothing.
      width: columns of every table, at least ``table_width(..., tile_sizes[0], ...)``; the rest
        is -1 (callers round it up to the key blocks their kernels read).

    Causal tables hold the keys carried into each tile, each in its slot (``carried_keys``);
    non-causal ones each tile's kept keys, a key in one column across its tiles (``noncausal``).
    """
    with jax.named_scope(SCOPE):
        return _key_tables(bias, window, q_len, tile_sizes, width, causal=causal, segment_ids=segment_ids,
                           key_mask=key_mask, local_window=local_window, sink_keys=sink_keys)


def _key_tables(bias, window, q_len, tile_sizes, width, *, causal, segment_ids, key_mask, local_window, sink_keys):
    bias = lax.stop_gradient(bias)
    kv_len = bias.shape[-1]
    coarse = tile_sizes[0]
    tiles = num_tiles(q_len, coarse)
    start, end = key_intervals(bias, window, q_len, causal=causal, segment_ids=segment_ids, key_mask=key_mask,
                               local_window=local_window, sink_keys=sink_keys)
    if causal:
        slots_per_tile = noncausal.kept_per_segment(window, kv_len)
        slots = key_slots(end, slots_per_tile, segment_ids=segment_ids, key_mask=key_mask, bias=bias)

    def table_for(tile_q):
        if coarse % tile_q:
            raise ValueError(f"tile size {tile_q} must divide the first tile size {coarse}")
        count = tiles * (coarse // tile_q)
        if causal:
            table = carried_key_table(end, slots, q_len, tile_q, slots_per_tile)
            table = jnp.pad(table, ((0, 0), (0, 0), (0, count - table.shape[2]), (0, 0)), constant_values=-1)
        else:
            table = noncausal.noncausal_table(bias, window, count, tile_q, segment_ids, key_mask)
        if table.shape[-1] > width:
            raise ValueError(f"width {width} is below the {table.shape[-1]} columns the tables need")
        return jnp.pad(table, ((0, 0), (0, 0), (0, 0), (0, width - table.shape[-1])), constant_values=-1)

    # Named so that a rematerialised block can keep the tables (dma_jax.ops.remat).
    return checkpoint_name(KeyTables(start, end, tuple(table_for(tile_q) for tile_q in tile_sizes)), SELECTION)
