"""Selection kernel: the k-th beater of every key, by a counting scan over key indices.

Under causal top-w selection, key j's live range ends at ``m_j``, the w-th smallest index among
the keys that beat it (``dma_jax.selection``). With every row's keys ranked best first
(``rank``), the keys that beat the key at rank position p are the rank positions ``[lo_p, p)``
(``lo_p``: the first rank position of its segment). So the k-th beater of p, in index order, is
found by walking the indices and counting those whose rank lies in ``[lo_p, p)``.

Grid (rank blocks, rows). A program takes ``block_keys`` consecutive rank positions of one row
(keys of similar rank, so of similar answers) and walks index blocks of ``block_index`` until all
its keys have their answer:
- forward from the segment start, for the k-th smallest index, when the beaters are many;
- backward from the segment end, for the k-th largest, when they are few (then the w-th smallest
  sits near the end).
Each step is a (block_keys x block_index) compare and a count per key; only the step where a
key's count passes its target also runs the count along the indices (a scan) to place it.

Work per key is about ``min(k, N - k) / N`` of its segment (N beaters), so O(T * w * log(T/w))
per row in all, with no T x T array and one launch. Every output element is written once, by
its own program: the result is exact and CPU interpret mode checks it.

Reference: ``pallas_kernels.reference.kth_beater_reference``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from pallas_kernels.common import KernelOptions, launch

NOT_RANKED = jnp.iinfo(jnp.int32).max  # rank of the padding past the last key: never a beater


def _kth_beater_kernel(rank_ref, lo_ref, kth_ref, forward_ref, first_ref, stop_ref, out_ref, *, block_index, lazy):
    block_keys = lo_ref.shape[0]
    position = pl.program_id(0) * block_keys + lax.broadcasted_iota(jnp.int32, (block_keys,), 0)
    lo, kth = lo_ref[...], kth_ref[...]
    # The loops close over integers only: the Triton lowering of while_loop mixes up boolean
    # constants (seen on JAX 0.10-0.11), so flags stay int32 and are compared inside.
    forward = jnp.max(forward_ref[...])  # 1 or 0, one direction per block
    first = jnp.min(jnp.where(kth > 0, first_ref[...], NOT_RANKED))
    stop = jnp.max(jnp.where(kth > 0, stop_ref[...], 0))
    step = block_index * (2 * forward - 1)
    begin = jnp.where(forward > 0, (first // block_index) * block_index, ((stop - 1) // block_index) * block_index)

    def unfinished(carry):
        index, _, found = carry
        inside = jnp.where(forward > 0, index < stop, index + block_index > first)
        return inside & (jnp.max(jnp.where((kth > 0) & (found < 0), 1, 0)) > 0)

    def resolve(found, index, beats, here, wanted, crossing):
        """The crossing keys' answers: where in this block their count reaches ``wanted``."""
        upto = jnp.cumsum(beats, axis=1)  # beaters at or before each column
        from_start = jnp.sum(jnp.where(upto < wanted[:, None], 1, 0), axis=1)
        from_end = jnp.sum(jnp.where(here[:, None] - upto + beats >= wanted[:, None], 1, 0), axis=1) - 1
        return jnp.where(crossing > 0, index + jnp.where(forward > 0, from_start, from_end), found)

    def walk(carry):
        index, seen, found = carry
        rank = rank_ref[pl.ds(index, block_index)]
        beats = ((rank[None, :] >= lo[:, None]) & (rank[None, :] < position[:, None])).astype(jnp.int32)
        here = jnp.sum(beats, axis=1)  # (no slicing of a cumsum: the Triton lowering has no slice)
        wanted = kth - seen
        crossing = jnp.where((kth > 0) & (found < 0) & (here >= wanted), 1, 0)
        operands = (found, index, beats, here, wanted, crossing)
        if lazy:  # the running count only in the few steps where some key's answer lies
            found = lax.cond(jnp.max(crossing) > 0, resolve, lambda f, *_: f, *operands)
        else:
            found = resolve(*operands)
        return index + step, seen + here, found

    carry = (begin, jnp.zeros((block_keys,), jnp.int32), jnp.full((block_keys,), -1, jnp.int32))
    out_ref[...] = lax.while_loop(unfinished, walk, carry)[2]


def kth_beater(rank, lo, kth, forward, first, stop, *, block_keys=64, block_index=128, lazy=False,
               options=KernelOptions()):
    """For each rank position p with ``kth[p] > 0``: the kth-first (forward) or kth-last beater's index.

    Args (R rows; per row, keys are indexed by position in the sequence, 0 <= index < Tk):
      rank: int32 (R, Ti), Ti a multiple of ``block_index`` >= Tk: rank position of each key
        index, ``NOT_RANKED`` past Tk.
      lo: int32 (R, P), P a multiple of ``block_keys``: per rank position p, the first rank
        position of its segment; its beaters are the keys ranked in ``[lo[p], p)``.
      kth: int32 (R, P): which beater to find, counting from 1 (0: none wanted).
      forward: int32 (R, P): 1 to count from the smallest index, 0 from the largest. Constant
        over each block of ``block_keys`` positions.
      first, stop: int32 (R, P): the key's segment is the indices ``[first, stop)``; every beater
        lies there.
      lazy: run the running count (a scan over the tile) only in steps where some key's answer
        lies, behind a branch; otherwise in every step. Exact either way; lazy=True lowers for
        Triton (tests/test_gpu_lowering.py) but has not yet been compiled or timed on a GPU.

    Returns:
      int32 (R, P): the beater's index, -1 where ``kth`` is 0 (or exceeds the beaters).
    """
    rows, padded = lo.shape
    index_len = rank.shape[1]
    assert padded % block_keys == 0 and index_len % block_index == 0, (lo.shape, rank.shape)
    by_rank = pl.BlockSpec((None, block_keys), lambda b, r: (r, b))
    (found,) = launch(
        functools.partial(_kth_beater_kernel, block_index=block_index, lazy=lazy),
        grid=(padded // block_keys, rows),
        in_specs=[pl.BlockSpec((None, index_len), lambda b, r: (r, 0))] + [by_rank] * 5,
        out_specs=[by_rank],
        out_shape=[jax.ShapeDtypeStruct(lo.shape, jnp.int32)],
        args=(rank, lo, kth, forward, first, stop),
        options=options,
    )
    return found
