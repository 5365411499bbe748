"""The w-th key that beats each key, from per-chunk counts: no sort of the whole row.

``live_ranges`` needs, for every valid key j of a row, ``m_j``: the w-th smallest index among
the keys that beat j (same segment, valid, larger score, ties to the larger index), or the end of
j's segment when fewer than w keys beat it. ``rank_order`` and a range order statistic find it
after sorting the whole row. This module finds it without that sort:

1. cut the row into chunks of C consecutive keys and sort each chunk by (segment, score
   descending, index descending): a batch of short sorts;
2. for every key j and chunk c, count the keys of c that beat j in the sorted chunk (the keys
   ordered before j, less those of earlier segments), in two levels of about sqrt(C) probes
   (``prefix_counts``): (T, T / C) counts;
3. a cumulative sum over the chunks finds the chunk that holds j's w-th beater, and how many
   beaters come before it;
4. that chunk's keys, in index order, are compared with j and packed into bits; ``m_j`` is the
   chunk's start plus the position of the right set bit.

With segment ids the same steps, counting the keys of j's segment instead of its beaters, find the
last key of j's segment for the keys that fewer than w keys beat. Work per row is
O(T (T / C) sqrt(C) + T C) with C ~ sqrt(T), and (rows, T, T / C) counts are written out: meant
for few short rows, where sorting the whole row is the larger cost on a GPU (several launches).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dma_jax.selection.order_statistics import _bucket_of_kth, _kth_set_bit, _pack_bits, count_block


def _lexicographic_less(a: tuple, b: tuple) -> jax.Array:
    """a < b comparing tuples of equally shaped arrays field by field, the first field first."""
    less = a[-1] < b[-1]
    for x, y in zip(reversed(a[:-1]), reversed(b[:-1])):
        less = (x < y) | ((x == y) & less)
    return less


def prefix_counts(flat_sorted: tuple, size: int, first: jax.Array, below) -> jax.Array:
    """int32, shaped like ``first``: for every (row, query, chunk), how many of the chunk's keys
    satisfy ``below``.

    Args:
      flat_sorted: tuple of 1-D arrays, the fields of every chunk's keys, chunks of ``size`` keys
        one after another, each sorted so that ``below`` holds on a prefix of it.
      size: keys per chunk (C).
      first: int32 (R, T, chunks), the flat position of each searched chunk's first key.
      below: maps a tuple of field arrays shaped like ``first`` plus one trailing axis (keys
        probed for each entry) to bool, true on a prefix of each sorted chunk.

    Two levels of counting, not a binary search: the chunk's groups of ``g`` ~ sqrt(C) keys whose
    last key is below, then the keys below in the first group that is not. Each level is one
    reduction over plain 1-D gathers; a binary search's rounds each became a kernel of their own,
    as the GPU compiler does not fuse a gather into the gather that computes its index.
    """
    group = min(size, count_block(size))  # a power of two, as C is: it divides C
    groups = size // group

    def count(positions):  # positions (..., n): the keys probed; how many are below
        fields = tuple(field.at[positions].get(mode="promise_in_bounds") for field in flat_sorted)
        return jnp.sum(below(fields), axis=-1, dtype=jnp.int32)

    group_ends = (jnp.arange(groups, dtype=jnp.int32) + 1) * group - 1
    full = count(first[..., None] + group_ends)  # groups wholly below
    # the keys of the first group not wholly below (any group when all are: the answer is C then)
    partial = count((first + jnp.minimum(full, groups - 1) * group)[..., None] + jnp.arange(group, dtype=jnp.int32))
    return jnp.where(full >= groups, size, full * group + partial)


def beater_arrivals(bias: jax.Array, segment: jax.Array | None, valid: jax.Array, window: int | None,
                    chunk: int | None = None) -> jax.Array:
    """int32 (..., T): for every row and key j, the w-th smallest index among the keys that beat
    key j, or one past the last key of j's segment where fewer than ``window`` keys beat it (always,
    for ``window`` None). Entries of invalid keys are unspecified.

    Args:
      bias: float (..., T) scores; only the valid ones are read.
      segment: int32 segment ids (any labelling) broadcastable to ``bias``, or None for one segment.
      valid: bool (..., T), the keys that may be kept.
      window: w, or None.
      chunk: keys per chunk (C), a power of two; None: the power of two at or above sqrt(T).
    """
    shape, length = bias.shape, bias.shape[-1]
    size = chunk or count_block(length)
    if size & (size - 1):
        raise ValueError(f"chunk must be a power of two, got {size}")
    chunks = -(-length // size)
    pad = chunks * size - length
    rows = max(1, int(np.prod(shape[:-1])))
    index = jnp.arange(length, dtype=jnp.int32)
    valid = valid.reshape(rows, length)
    # Valid keys ordered best first (-0.0 ties 0.0), then the invalid ones; each key's fields as
    # the chunks sort them: (segment,) descending score, descending index.
    bias = bias.reshape(rows, length)
    score = jnp.where(valid & (bias != 0), bias, jnp.zeros_like(bias)).astype(jnp.float32)
    descending = jnp.where(valid, -score, jnp.inf)
    negative_index = jnp.broadcast_to(-index, (rows, length))
    if segment is None:
        keys, fills = (descending, negative_index), (jnp.inf, None)
    else:
        segment = jnp.broadcast_to(segment, shape).reshape(rows, length).astype(jnp.int32)
        # Padding keys: invalid, after every real index, in the last key's segment (counted as
        # members of it, which moves that segment's end past the row: clipped below).
        keys, fills = (segment, descending, negative_index), (segment[:, -1:], jnp.inf, None)
    padding = -jnp.arange(length, length + pad, dtype=jnp.int32)
    chunked = tuple(
        jnp.concatenate([field, jnp.broadcast_to(padding if fill is None else fill, (rows, pad)).astype(field.dtype)],
                        axis=1).reshape(rows, chunks, size)
        for field, fill in zip(keys, fills))
    flat_sorted = tuple(field.reshape(-1) for field in lax.sort(chunked, dimension=2, num_keys=len(chunked)))
    first = ((jnp.arange(rows, dtype=jnp.int32)[:, None, None] * chunks
              + jnp.arange(chunks, dtype=jnp.int32)) * size + jnp.zeros((1, length, 1), jnp.int32))
    query = tuple(field[:, :, None, None] for field in keys)  # (R, T, 1, 1)

    def through(counts):
        # Written out once: fused into the cumulative sum, the searches would run once per chunk summed.
        return jnp.cumsum(lax.optimization_barrier(counts), axis=-1)  # (R, T, chunks), up to each chunk's end

    earlier = None if segment is None else prefix_counts(flat_sorted[:1], size, first, lambda f: f[0] < query[0])
    if window is not None and window < length:
        before = prefix_counts(flat_sorted, size, first, lambda f: _lexicographic_less(f, query))
        beaters = through(before if earlier is None else before - earlier)
        enough = beaters[..., -1] >= window
        beater_chunk, beaters_before = _bucket_of_kth(beaters, jnp.full((rows, length), window - 1, jnp.int32))
    elif segment is None:
        return jnp.full(shape, length, jnp.int32)
    else:
        enough = jnp.zeros((rows, length), bool)
        beater_chunk = beaters_before = jnp.zeros((rows, length), jnp.int32)
    if segment is None:
        target, k = beater_chunk, window - 1 - beaters_before
    else:
        upto = prefix_counts(flat_sorted[:1], size, first, lambda f: f[0] <= query[0])
        members = through(upto - earlier)  # keys of j's segment
        member_chunk, members_before = _bucket_of_kth(members, members[..., -1] - 1)  # its last key
        target = jnp.where(enough, beater_chunk, member_chunk)
        k = jnp.where(enough, (window or 1) - 1 - beaters_before, members[..., -1] - 1 - members_before)
    # The target chunk's keys in index order, against key j: its beaters, or its segment's keys.
    at = ((jnp.arange(rows, dtype=jnp.int32)[:, None] * chunks + target) * size)[..., None] + jnp.arange(size)
    found = tuple(field.reshape(-1).at[at].get(mode="promise_in_bounds") for field in chunked)  # (R, T, C) each
    if segment is None:
        same = jnp.ones((), bool)
        descending_i, negative_index_i = found
    else:
        same = found[0] == segment[..., None]
        descending_i, negative_index_i = found[1:]
    mine = descending[..., None]
    beats = same & ((descending_i < mine) | ((descending_i == mine) & (negative_index_i < -index[:, None])))
    bits = beats if segment is None else jnp.where(enough[..., None], beats, same)
    position = target * size + _kth_set_bit(_pack_bits(bits), k)
    if segment is None:
        arrival = jnp.where(enough, position, length)
    else:
        arrival = jnp.where(enough, position, jnp.minimum(position + 1, length))
    return arrival.reshape(shape)
