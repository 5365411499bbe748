"""Forward DMA kernel for TPU: gathered key chunks (row DMAs from HBM), online softmax on the MXU.

Grid (B, Hb, tiles), all parallel. A program takes the ``rows = block_q * R`` query rows of one
tile (the R query heads of a bias head share its key list), walks its carried-key chunks (row
DMAs driven by the tile's slot-table row in SMEM, trailing empty chunks skipped using the
scalar-prefetched chunk counts) and then its own keys (contiguous DMAs), double-buffered: the
next chunk's copies are in flight while the current one is computed. Exact per-element mask.

Reference: ``pallas_kernels.tpu.reference.list_attention_reference``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from pallas_kernels.shared import MASKED
from pallas_kernels.tpu.common import (
    ChunkGather, QueryTileInputs, TpuKernelOptions, chunk_loop, column, column_to_row, masked_scores, poison,
    tile_context, tpu_call,
)


def _forward_kernel(
    counts_ref, keys_ref, q_ref, offsets_ref, bias_ref, start_ref, end_ref, k_hbm, v_hbm,
    o_ref, lse_ref, k_buf, v_buf, sems, *, scale, block_q, q_offset, own_chunks, zero_row, group, poisoned,
):
    if poisoned:
        poison(o_ref, lse_ref)
    b, h, _, carried, total, t0, meta_row = tile_context(
        counts_ref, block_q=block_q, q_offset=q_offset, own_chunks=own_chunks,
        carried_rows=keys_ref.shape[0] // k_buf.shape[1],
    )
    gather = ChunkGather(
        k_hbm.at[b, h // group], v_hbm.at[b, h // group], k_buf, v_buf, sems, keys_ref,
        carried=carried, own_start=t0, zero_row=zero_row,
    )
    q = q_ref[...]
    query = t0 + column(offsets_ref)
    rows, head_dim = q.shape

    def body(c, slot, carry):
        acc, row_max, row_sum = carry
        row = meta_row(c)
        logits, keep = masked_scores(q, k_buf[slot], bias_ref[row, :], start_ref[row, :], end_ref[row, :], query, scale)
        new_max = jnp.maximum(row_max, jnp.max(logits, axis=1, keepdims=True))
        weights = jnp.where(keep, jnp.exp(logits - new_max), 0.0)
        correction = jnp.exp(row_max - new_max)
        v = v_buf[slot]
        acc = acc * correction + jnp.dot(weights.astype(v.dtype), v, preferred_element_type=jnp.float32)
        return acc, new_max, row_sum * correction + jnp.sum(weights, axis=1, keepdims=True)

    carry = (
        jnp.zeros((rows, head_dim), jnp.float32),
        jnp.full((rows, 1), MASKED, jnp.float32),
        jnp.zeros((rows, 1), jnp.float32),
    )
    acc, row_max, row_sum = chunk_loop(gather, total, body, carry)
    empty = row_sum == 0
    safe_sum = jnp.where(empty, 1.0, row_sum)
    o_ref[...] = jnp.where(empty, 0.0, acc / safe_sum).astype(o_ref.dtype)
    lse_ref[...] = column_to_row(jnp.where(empty, jnp.inf, row_max + jnp.log(safe_sum)))


def dma_forward_tpu(
    q_tiles, k, v, keys, meta, counts, offsets, *, scale, block_q, q_offset, own_chunks, zero_row,
    options=TpuKernelOptions(),
):
    """Forward kernel.

    Args:
      q_tiles: (B, Hb, tiles, rows, Dp), rows = block_q * R, Dp % 128 == 0 (see ``common``).
      k, v: (B, Hkv, kv_rows, Dp), same dtype as q; bias head hb reads kv head ``hb // (Hb // Hkv)``;
        rows up to ``q_offset + tiles * block_q + (own_chunks * block_k - block_q)`` exist and
        ``zero_row`` is zeros.
      keys: int32 (B, Hb, tiles, W) carried keys per tile (W a multiple of block_k; -1 empty).
      meta: (bias float32, start int32, end int32), each (B, Hb, tiles, W / block_k + own_chunks,
        block_k): the per-key data of each list entry (carried entries, then own keys).
      counts: int32 (B * Hb * tiles,) carried chunks to visit per tile (scalar prefetch).
      offsets: int32 (1, rows): position of each row within its tile (r // R).
      own_chunks: chunks of own keys ``[t0, t0 + own_chunks * block_k)``; 0 when ``keys`` already
        lists every key a tile may keep.

    Returns:
      out (B, Hb, tiles, rows, Dp) in q's dtype; lse float32 (B, Hb, tiles, 1, rows), +inf on
      rows that keep no key (their output is 0).
    """
    batch, bias_heads, tiles, rows, head_dim = q_tiles.shape
    group = bias_heads // k.shape[1]
    block_k = meta[0].shape[-1]
    spec = QueryTileInputs(rows, head_dim, keys.shape[-1], meta[0].shape[-2], block_k)
    kernel = functools.partial(
        _forward_kernel, scale=scale, block_q=block_q, q_offset=q_offset, own_chunks=own_chunks,
        zero_row=zero_row, group=group, poisoned=options.poison_outputs,
    )
    return tpu_call(
        kernel,
        grid=(batch, bias_heads, tiles),
        num_scalar_prefetch=1,
        in_specs=[spec.keys(), spec.q(), spec.offsets()] + [spec.meta()] * 3 + [spec.hbm(), spec.hbm()],
        out_specs=[spec.q(), spec.row()],
        out_shape=[
            jax.ShapeDtypeStruct(q_tiles.shape, q_tiles.dtype),
            jax.ShapeDtypeStruct((batch, bias_heads, tiles, 1, rows), jnp.float32),
        ],
        scratch_shapes=spec.scratch(k.dtype),
        args=(counts, keys, q_tiles, offsets, *meta, k, v),
        options=options,
        dimension_semantics=("parallel", "parallel", "parallel"),
    )
