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

The pointer jumping (``root_values``) runs as XLA gathers, one kernel a turn, or with
``CHAIN_ROOTS = "triton"`` (environment variable ``DMA_CHAIN_ROOTS``, read at import) as one
Triton kernel for all turns on a CUDA GPU (``pallas_kernels.jax_triton.chain_roots``, rows of
up to 32,768 keys; longer rows and other backends keep the gathers).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
from jax import lax

from dma_jax.selection.segments import segment_bounds


CHAIN_ROOTS = os.environ.get("DMA_CHAIN_ROOTS", "xla")


def _row_chains(ends, valid, segment, window):
    """One row's slot chains, all (T,): each key's parent (the key it evicts; a root, one of its
    segment's first ``window`` valid keys or a key never kept, points to itself), its rank among
    its segment's valid keys (a root's slot), and whether it is ever kept."""
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
    return pointer, rank_in_run, kept_ever


def root_values_xla(pointer, values):
    """int32 (..., T): ``values[root(i)]`` along each row, following ``pointer`` (int32 (..., T),
    roots point to themselves) to the end. Pointer jumping: after k turns each position points
    2^k steps up its chain, so ceil(log2(T)) turns reach every root. A fixed count of turns, not
    a while loop: on the GPU a while loop reads its condition on the host every turn, which stalls
    the launch queue (docs/kernels.md, the selection's binary search). The reference of
    ``pallas_kernels.jax_triton.chain_roots.root_values``."""
    length = pointer.shape[-1]

    def row(p, v):
        for _ in range(max(1, (length - 1).bit_length())):
            p = p[p]
        return v[p]

    for _ in range(pointer.ndim - 1):
        row = jax.vmap(row)
    return row(pointer, values)


def root_values(pointer, values):
    """``root_values_xla``, or its Triton kernel where ``CHAIN_ROOTS`` asks for it and it runs."""
    if CHAIN_ROOTS not in ("xla", "triton"):
        raise ValueError(f"CHAIN_ROOTS ($DMA_CHAIN_ROOTS) must be 'xla' or 'triton', got {CHAIN_ROOTS!r}")
    if CHAIN_ROOTS == "triton" and jax.default_backend() == "gpu":
        from pallas_kernels.jax_triton.chain_roots import MAX_LENGTH
        from pallas_kernels.jax_triton.chain_roots import root_values as triton_root_values

        if pointer.shape[-1] <= MAX_LENGTH:
            return triton_root_values(pointer, values)
    return root_values_xla(pointer, values)


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
    row = lambda e, v, s: _row_chains(e, v, s, window)
    pointer, rank_in_run, kept_ever = jax.vmap(jax.vmap(row, in_axes=(0, 0, None)))(ends, valid, segment)
    return jnp.where(kept_ever, root_values(pointer, rank_in_run), -1)


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
