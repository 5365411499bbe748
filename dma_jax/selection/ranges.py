"""Scalable dynamic-mask selection: every key's live range, in O(T log T) per row.

The bias does not depend on the query, and a causal query sees one more key than the query
before it. So the kept set of query t + 1 is the top-w of (kept set of query t, key t + 1):
a key that drops out never returns, and key j is kept by exactly the queries in one interval
``[j, end_j)``. With ``m_j`` the w-th smallest index among the keys that beat key j
(same segment, valid, larger bias, ties to the larger index), ``end_j = max(j, m_j)``
(``m_j`` = end of j's segment when fewer than w keys beat it).

Visiting keys from best to worst, the keys that beat key j are a prefix of that order, so
``m_j`` is a range order statistic (``order_statistics``): block counts on short rows, a wavelet
matrix on long ones (``ORDER_STATISTICS``).
Nothing here builds a T x T array.

The local-window variant (``local_window`` l, ``sink_keys`` s; not the paper's): a query keeps the
first s valid keys of its segment (sinks), its last l valid non-sink keys (local), and the top
w - l - s of the older non-sink keys by score. The older keys of query t are a prefix of the
non-sink keys, growing by one each time a key leaves the local window, so their top w - l - s is
DMA's selection delayed: with ``e_j`` the end of key j under plain DMA (window w - l - s) over the
non-sink keys, and ``A(p)`` the position of the l-th non-sink key after position p (the query at
which the key at p leaves the local window), key j is kept by ``[j, A(e_j))``: still one interval.
Sinks are kept to the end of their segment.
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dma_jax.selection.order_statistics import (
    block_kth_smallest,
    build_block_counts,
    build_wavelet_matrix,
    range_kth_smallest,
)
from dma_jax.selection.segments import segment_bounds
from dma_jax.validation import check_selection_args

# The range order statistics behind ``m_j`` (read at trace time): "auto" takes block counts (few
# GPU launches, O(T sqrt T) work) for rows of up to BLOCK_COUNTS_MAX_LENGTH keys and the wavelet
# matrix (O(T log T)) above; "blocks" or "wavelet" use one everywhere. The environment variable
# DMA_ORDER_STATISTICS sets the default.
ORDER_STATISTICS = os.environ.get("DMA_ORDER_STATISTICS", "auto")
ORDER_STATISTICS_METHODS = ("auto", "blocks", "wavelet")
BLOCK_COUNTS_MAX_LENGTH = 8192


def order_statistics_method(length: int) -> str:
    """"blocks" or "wavelet": how ``live_ranges`` finds ``m_j`` on rows of ``length`` keys."""
    if ORDER_STATISTICS not in ORDER_STATISTICS_METHODS:
        raise ValueError(f"ORDER_STATISTICS ($DMA_ORDER_STATISTICS) must be one of {ORDER_STATISTICS_METHODS}, "
                         f"got {ORDER_STATISTICS!r}")
    if ORDER_STATISTICS == "auto":
        return "blocks" if length <= BLOCK_COUNTS_MAX_LENGTH else "wavelet"
    return ORDER_STATISTICS


def valid_keys(bias: jax.Array, key_mask: jax.Array | None) -> jax.Array:
    """bool (B, Hb, Tk): keys that may be kept at all.

    A key is invalid where ``key_mask`` is False or its bias is -inf or NaN.
    """
    valid = ~jnp.isnan(bias) & (bias != -jnp.inf)
    if key_mask is not None:
        valid = valid & key_mask[:, None, :]
    return valid


def row_inputs(bias, segment_ids, key_mask):
    """What ``rank_order`` takes, for every row: the bias without gradient, int32 segment ids
    (B, Tk) or None (one segment: the grouping is skipped), and ``valid_keys``."""
    bias = lax.stop_gradient(bias)
    segment = None if segment_ids is None else segment_ids.astype(jnp.int32)
    return bias, segment, valid_keys(bias, key_mask)


class RankOrder(NamedTuple):
    """One row's keys ranked by (segment, valid first, bias descending, index descending).

    order: int32 (T,), key index at each rank position; rank: int32 (T,), rank position of each
    key; group_lo: int32 (T,), per key, the first rank position of its segment (the keys that
    beat key j are the rank positions ``[group_lo[j], rank[j])``); segment_first,
    segment_end: int32 (T,), per key, the smallest index of its segment and 1 + the largest.
    """

    order: jax.Array
    rank: jax.Array
    group_lo: jax.Array
    segment_first: jax.Array
    segment_end: jax.Array


def rank_order(bias: jax.Array, segment: jax.Array | None, valid: jax.Array) -> RankOrder:
    """Rank one row's keys (bias float (T,), segment int32 (T,) or None for one segment, valid
    bool (T,)): see ``RankOrder``."""
    length = bias.shape[0]
    index = jnp.arange(length, dtype=jnp.int32)
    # -0.0 and 0.0 must tie, and invalid keys (sorted last anyway) must not carry NaN.
    score = jnp.where(valid & (bias != 0), bias, jnp.zeros_like(bias))
    if segment is None:  # one segment: no segment key to sort by, no groups to find
        *_, order = lax.sort(((~valid).astype(jnp.int32), -score, -index, index), num_keys=3)
        rank = jnp.zeros_like(index).at[order].set(index, unique_indices=True)
        zeros = jnp.zeros_like(index)
        return RankOrder(order, rank, zeros, zeros, jnp.full_like(index, length))
    sorted_segment, _, _, _, order = lax.sort(
        (segment, (~valid).astype(jnp.int32), -score, -index, index), num_keys=4
    )
    rank = jnp.zeros_like(index).at[order].set(index, unique_indices=True)
    group_start = jnp.concatenate([jnp.ones((1,), bool), sorted_segment[1:] != sorted_segment[:-1]])
    # The first rank position of each segment's run: a running max, not a binary search (whose
    # unrolled steps were a dozen small kernels on the GPU).
    group_lo_by_rank = lax.cummax(jnp.where(group_start, index, 0))
    group_id = jnp.cumsum(group_start.astype(jnp.int32)) - 1
    group_first = jax.ops.segment_min(order, group_id, num_segments=length)
    group_last = jax.ops.segment_max(order, group_id, num_segments=length)
    group_lo = group_lo_by_rank[rank]
    key_group = group_id[rank]
    return RankOrder(order, rank, group_lo, group_first[key_group], group_last[key_group] + 1)


def _row_live_ranges(bias, segment, valid, window, local_window=0, sink_keys=0):
    if (local_window or sink_keys) and window is not None and window < bias.shape[0]:
        return _row_local_window_ranges(bias, segment, valid, window, local_window, sink_keys)
    length = bias.shape[0]
    index = jnp.arange(length, dtype=jnp.int32)
    order, rank, group_lo, _, segment_end = rank_order(bias, segment, valid)
    if window is None or window >= length:
        arrival = segment_end
    else:
        better = rank - group_lo  # valid keys that beat key j, for valid j
        enough = better >= window
        beaters = (jnp.where(enough, group_lo, 0), jnp.where(enough, rank, length), jnp.full_like(rank, window - 1))
        if order_statistics_method(length) == "blocks":
            wth = block_kth_smallest(*build_block_counts(order, inverse=rank), *beaters)
        else:
            wth = range_kth_smallest(build_wavelet_matrix(order, length), *beaters)
        arrival = jnp.where(enough, wth, segment_end)
    return jnp.where(valid, jnp.maximum(index, arrival), index)


def _row_local_window_ranges(bias, segment, valid, window, local_window, sink_keys):
    """``_row_live_ranges`` of the local-window variant (see the module docstring)."""
    length = bias.shape[0]
    index = jnp.arange(length, dtype=jnp.int32)
    if segment is None:
        first, end = jnp.zeros_like(index), jnp.full_like(index, length)
    else:
        first, end = segment_bounds(segment)
    valid_before = jnp.cumsum(valid.astype(jnp.int32)) - valid.astype(jnp.int32)
    sink = valid & (valid_before - valid_before[first] < sink_keys)
    pool = valid & ~sink
    older = window - local_window - sink_keys  # top-w' of the keys that left the local window
    plain_end = _row_live_ranges(bias, segment, pool, older) if older > 0 else index
    # A(p): position of the local_window-th pool key after position p, or p's segment end.
    through = jnp.cumsum(pool.astype(jnp.int32))  # pool keys at positions <= p
    position_of_rank = jnp.full((length + 1,), length, jnp.int32).at[jnp.where(pool, through - 1, length + 1)].set(
        index, mode="drop")
    target = through + local_window - 1  # 0-based rank of the local_window-th pool key after p
    found = position_of_rank[jnp.clip(target, 0, length)]
    leaves = jnp.where(found < end, found, end)  # A(p), by position p
    in_segment = plain_end < end  # e_j is a key of j's segment, else the key is kept to its end
    local_end = jnp.where(in_segment, leaves[jnp.minimum(plain_end, length - 1)], end)
    return jnp.where(sink, end, jnp.where(pool, local_end, index))


def _row_static_keep(bias, segment, valid, window):
    ranked = rank_order(bias, segment, valid)
    if window is None:
        return valid
    return valid & (ranked.rank - ranked.group_lo < window)


def _per_row(row_fn, bias, window, segment_ids, key_mask, *extra):
    bias, segment, valid = row_inputs(bias, segment_ids, key_mask)
    per_head = jax.vmap(lambda b, s, v: row_fn(b, s, v, window, *extra), in_axes=(0, None, 0))
    return jax.vmap(per_head)(bias, segment, valid)


@functools.partial(jax.jit, static_argnames=("window", "local_window", "sink_keys"))
def live_ranges_unchecked(bias, window, segment_ids=None, key_mask=None, local_window=0, sink_keys=0):
    """``live_ranges`` without argument checks, for callers that checked already."""
    return _per_row(_row_live_ranges, bias, window, segment_ids, key_mask, local_window, sink_keys)


@functools.partial(jax.jit, static_argnames="window")
def static_keep_unchecked(bias, window, segment_ids=None, key_mask=None):
    """``static_keep`` without argument checks, for callers that checked already."""
    return _per_row(_row_static_keep, bias, window, segment_ids, key_mask)


def live_ranges(
    bias: jax.Array,
    window: int | None,
    *,
    segment_ids: jax.Array | None = None,
    key_mask: jax.Array | None = None,
    local_window: int = 0,
    sink_keys: int = 0,
) -> jax.Array:
    """End of every key's live range under causal dynamic-mask selection.

    Query t keeps key j exactly when ``j <= t < end[..., j]`` and
    ``segment_ids[t] == segment_ids[j]`` (the second condition is implied when segments
    are contiguous runs, as in packed documents: ``end`` never passes the segment's end).
    A key that is never kept has ``end[..., j] == j``. For decoding-style alignment
    (Tq < Tk), query t of the call is query ``t + Tk - Tq`` here.

    Args:
      bias: float (B, Hb, Tk), one score per key and bias head; -inf or NaN: never kept.
      window: keys kept per query (int >= 1), or None to keep every visible key.
      segment_ids: optional int (B, Tk); a query sees only keys of its segment.
      key_mask: optional bool (B, Tk); False keys are never kept.
      local_window, sink_keys: the local-window variant (module docstring): each query also
        keeps its last ``local_window`` valid keys and its segment's first ``sink_keys`` valid
        keys, within its ``window``; 0 and 0 is the paper's DMA.

    Returns:
      int32 (B, Hb, Tk). O(T log T) time and O(T log T) memory per row, no T x T array.
    """
    check_selection_args(bias, window, np.shape(bias)[-1], True, segment_ids, key_mask, local_window, sink_keys)
    return live_ranges_unchecked(bias, window, segment_ids, key_mask, local_window, sink_keys)


def static_keep(
    bias: jax.Array,
    window: int | None,
    *,
    segment_ids: jax.Array | None = None,
    key_mask: jax.Array | None = None,
) -> jax.Array:
    """bool (B, Hb, Tk): non-causal selection, the top-``window`` valid keys of each segment.

    Under ``causal=False`` every query of a segment keeps the same keys: these.
    """
    check_selection_args(bias, window, np.shape(bias)[-1], False, segment_ids, key_mask)
    return static_keep_unchecked(bias, window, segment_ids, key_mask)
