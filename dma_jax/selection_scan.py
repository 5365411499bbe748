"""``live_ranges`` with the Pallas selection kernel (``pallas_kernels.live_range_scan``).

Same result as ``dma_jax.selection.live_ranges`` (the tests check them against each other), by
another route: the keys are ranked by one sort, then one kernel finds, for every key beaten by
at least w keys of its segment, its w-th beater in index order. That is one sort and one launch
where the wavelet matrix of ``selection.py`` takes about 15 levels of small XLA ops. It was
built to cut those launches, but on the H200 it measured 1.4-7x slower than the wavelet
(docs/kernels.md), so ``PallasConfig`` uses it only when asked (``selection="kernel"``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from dma_jax.selection import rank_order, row_inputs
from pallas_kernels.common import KernelOptions
from pallas_kernels.live_range_scan import NOT_RANKED, kth_beater


def _pad_last(x, size, value):
    return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, size - x.shape[-1])], constant_values=value)


@functools.partial(jax.jit, static_argnames=("window", "options", "block_keys", "block_index", "lazy"))
def live_ranges_scan(bias, window, segment_ids=None, key_mask=None, *, options=KernelOptions(), block_keys=64,
                     block_index=64, lazy=False):
    """``live_ranges_unchecked`` through the selection kernel: int32 (B, Hb, Tk), the same values.

    ``options`` picks interpret mode (CPU tests) or the GPU launch; ``block_keys`` keys per
    program, ``block_index`` indices per step and ``lazy`` (see ``kth_beater``) tune it.
    """
    batch, heads, length = bias.shape
    bias, segment, valid = row_inputs(bias, segment_ids, key_mask)
    ranked = jax.vmap(jax.vmap(rank_order, in_axes=(0, None, 0)), in_axes=(0, 0, 0))(bias, segment, valid)
    index = jnp.arange(length, dtype=jnp.int32)
    if window is None or window >= length:
        arrival = ranked.segment_end
    else:
        beaten = ranked.rank - ranked.group_lo  # valid keys that beat each valid key
        needs = valid & (beaten >= window)
        by_rank = lambda x: jnp.take_along_axis(x, ranked.order, axis=-1)
        positions = -(-length // block_keys) * block_keys
        count = _pad_last(by_rank(beaten), positions, 0)
        wanted = _pad_last(by_rank(needs), positions, False)
        # Per block of ranks, walk from the end whose answer is nearer: beaters spread over the
        # segment, so the w-th smallest of N sits about w/N of the way in.
        blocks = lambda x: x.reshape(batch, heads, positions // block_keys, block_keys)
        many = jnp.sum(blocks(jnp.where(wanted, count, 0)), -1) >= (2 * window - 1) * jnp.sum(blocks(wanted), -1)
        forward = jnp.repeat(many, block_keys, axis=-1)
        kth = jnp.where(wanted, jnp.where(forward, window, count - window + 1), 0)
        lo = _pad_last(by_rank(ranked.group_lo), positions, 0)
        first = _pad_last(by_rank(ranked.segment_first), positions, 0)
        stop = _pad_last(by_rank(ranked.segment_end), positions, 0)
        rank = _pad_last(ranked.rank, -(-length // block_index) * block_index, NOT_RANKED)
        rows = lambda x: x.reshape(batch * heads, x.shape[-1]).astype(jnp.int32)
        found = kth_beater(rows(rank), rows(lo), rows(kth), rows(forward), rows(first), rows(stop),
                           block_keys=block_keys, block_index=block_index, lazy=lazy, options=options)
        found = found.reshape(batch, heads, positions)[..., :length]
        arrival = jnp.where(needs, jnp.take_along_axis(found, ranked.rank, axis=-1), ranked.segment_end)
    return jnp.where(valid, jnp.maximum(index, arrival), index)
