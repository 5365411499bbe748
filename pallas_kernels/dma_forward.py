"""Forward DMA kernel (Pallas, Triton lowering on GPU; interpret mode on CPU).

One program per (query tile, batch, bias head). It gathers the tile's key list in chunks of
``block_k`` rows (``k_ref[index_vector]``), computes the logits of all ``R * block_q`` query
rows of the tile (R query heads share a bias head and its key list), applies the exact mask
``start[j] <= t < end[j]`` (and equal segments), and keeps an online softmax. Work per tile is
O((count + block_q) * R * block_q * D): it follows the kept keys.

Reference: ``dma_jax.xla_attention.dma_attention_xla`` computes the same thing in XLA.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

_MASKED = -0.7 * float(jnp.finfo(jnp.float32).max)


def _forward_kernel(
    count_ref, list_ref, q_ref, k_ref, v_ref, bias_ref, start_ref, end_ref, qseg_ref, kseg_ref,
    o_ref, lse_ref, *, scale, block_q, block_k, heads_per_tile, q_offset,
):
    tile = pl.program_id(0)
    rows = block_q * heads_per_tile
    q = q_ref[...]  # (rows, D); row r is query tile*block_q + r // R, head r % R
    query = q_offset + tile * block_q + lax.broadcasted_iota(jnp.int32, (rows,), 0) // heads_per_tile
    qseg = None if qseg_ref is None else jnp.repeat(qseg_ref[...], heads_per_tile, axis=0)
    chunks = pl.cdiv(count_ref[0], block_k)

    def body(c, carry):
        acc, row_max, row_sum = carry
        keys = list_ref[pl.ds(c * block_k, block_k)]
        present = keys >= 0
        safe = jnp.where(present, keys, 0)
        k = k_ref[safe, :]
        v = v_ref[safe, :]
        logits = jnp.dot(q, k.T, preferred_element_type=jnp.float32) * scale
        logits = logits + bias_ref[safe].astype(jnp.float32)[None, :]
        keep = present[None, :] & (start_ref[safe][None, :] <= query[:, None]) & (query[:, None] < end_ref[safe][None, :])
        if qseg is not None:
            keep = keep & (qseg[:, None] == kseg_ref[safe][None, :])
        logits = jnp.where(keep, logits, _MASKED)
        new_max = jnp.maximum(row_max, jnp.max(logits, axis=1))
        weights = jnp.where(keep, jnp.exp(logits - new_max[:, None]), 0.0)
        correction = jnp.exp(row_max - new_max)
        acc = acc * correction[:, None] + jnp.dot(weights.astype(v.dtype), v, preferred_element_type=jnp.float32)
        return acc, new_max, row_sum * correction + jnp.sum(weights, axis=1)

    head_dim = q.shape[-1]
    init = (
        jnp.zeros((rows, head_dim), jnp.float32),
        jnp.full((rows,), _MASKED, jnp.float32),
        jnp.zeros((rows,), jnp.float32),
    )
    acc, row_max, row_sum = lax.fori_loop(0, chunks, body, init)
    empty = row_sum == 0
    o_ref[...] = jnp.where(empty[:, None], 0.0, acc / jnp.where(empty, 1.0, row_sum)[:, None]).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(empty, jnp.inf, row_max + jnp.log(jnp.where(empty, 1.0, row_sum)))


def dma_forward(
    q_tiles, k, v, bias, start, end, lists, counts, *, scale, block_q, block_k, q_offset,
    q_segment_ids=None, k_segment_ids=None, interpret=False, num_warps=4, num_stages=2,
):
    """Run the forward kernel.

    Args:
      q_tiles: (B, Hb, tiles, block_q * R, D); row r of tile n is query ``n * block_q + r // R``,
        query head ``hb * R + r % R``.
      k, v: (B, Hkv, Tk, D). bias: float (B, Hb, Tk). start, end: int32 (B, Hb, Tk), key j is
        kept by queries ``start <= q_offset + t < end``.
      lists: int32 (B, Hb, tiles, K), K a multiple of block_k: key indices, real entries first,
        -1 for none. counts: int32 (B, Hb, tiles): real entries per tile.
      q_segment_ids: optional int32 (B, tiles * block_q); k_segment_ids: (B, Tk).

    Returns:
      out (B, Hb, tiles, block_q * R, D) in q's dtype; lse float32 (B, Hb, tiles, block_q * R),
      +inf for rows that keep no key.
    """
    batch, bias_heads, tiles, rows, head_dim = q_tiles.shape
    kv_heads, kv_len = k.shape[1], k.shape[2]
    group = bias_heads // kv_heads
    list_len = lists.shape[-1]
    kernel = functools.partial(
        _forward_kernel, scale=scale, block_q=block_q, block_k=block_k,
        heads_per_tile=rows // block_q, q_offset=q_offset,
    )
    has_segments = q_segment_ids is not None
    tile_spec = lambda *shape: pl.BlockSpec((None, None, None) + shape, lambda n, b, h: (b, h, n) + (0,) * len(shape))
    key_spec = pl.BlockSpec((None, None, kv_len), lambda n, b, h: (b, h, 0))
    kv_spec = pl.BlockSpec((None, None, kv_len, head_dim), lambda n, b, h: (b, h // group, 0, 0))
    in_specs = [
        pl.BlockSpec((None, None, 1), lambda n, b, h: (b, h, n)),
        tile_spec(list_len),
        tile_spec(rows, head_dim),
        kv_spec, kv_spec, key_spec, key_spec, key_spec,
    ]
    args = [counts[..., None] if False else counts, lists, q_tiles, k, v, bias, start, end]
    if has_segments:
        in_specs += [
            pl.BlockSpec((None, block_q), lambda n, b, h: (b, n)),
            pl.BlockSpec((None, kv_len), lambda n, b, h: (b, 0)),
        ]
        args += [q_segment_ids, k_segment_ids]
    else:
        kernel_no_seg = kernel
        kernel = lambda *refs: kernel_no_seg(*refs[:8], None, None, *refs[8:])
    call_kwargs = {}
    if not interpret:
        from jax.experimental.pallas import triton as plgpu

        call_kwargs["compiler_params"] = plgpu.CompilerParams(num_warps=num_warps, num_stages=num_stages)
    return pl.pallas_call(
        kernel,
        grid=(tiles, batch, bias_heads),
        in_specs=in_specs,
        out_specs=[tile_spec(rows, head_dim), tile_spec(rows)],
        out_shape=[
            jax.ShapeDtypeStruct(q_tiles.shape, q_tiles.dtype),
            jax.ShapeDtypeStruct(q_tiles.shape[:-1], jnp.float32),
        ],
        interpret=interpret,
        **call_kwargs,
    )(*args)
