"""Per-tile key lists: which keys a tile of consecutive queries can keep, from live ranges.

A tile of ``block_q`` consecutive causal queries starting at (full-sequence) position t0 keeps
only keys that are live at t0 and came before it (at most ``window``: the kept set of query
t0) plus the tile's own keys ``[t0, t0 + block_q)``. Fast paths gather those
``window + block_q`` rows and run dense math on them with the exact per-element mask, so the
work follows the kept keys: O(T * (window + block_q)) instead of O(T^2).

The bound needs each segment to be one contiguous run (packed documents).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dma_jax.slots import carried_key_table, key_slots


def num_tiles(q_len: int, block_q: int) -> int:
    return -(-q_len // block_q)


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
