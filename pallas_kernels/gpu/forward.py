"""Forward DMA kernel: each query tile attends to its gathered key list with an online softmax.

Grid (tiles, B, Hb). A program takes the ``rows = block_q * R`` query rows of one tile (the R
query heads of one bias head share its key list), walks the tile's carried keys (one slot table
row, gathered ``block_k`` at a time) and then its own keys ``[t0, t0 + block_q)``, and applies
the exact live-range mask. Work: O((w + block_q) * rows * D) per tile, whatever T is.

Reference: ``pallas_kernels.gpu.reference.interval_attention_reference``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from pallas_kernels.gpu.common import KernelOptions, gather_keys, launch, masked_scores, query_positions
from pallas_kernels.shared import MASKED


def _forward_kernel(
    table_ref, q_ref, k_ref, v_ref, bias_ref, start_ref, end_ref, o_ref, lse_ref,
    *, scale, block_q, block_k, q_offset, own_keys, sequence_rows,
):
    tile = pl.program_id(0)
    if sequence_rows is None:
        q = q_ref[...]
    else:  # sequence layout: gather the tile's rows (position-major, as in the tile layout)
        q_rows = sequence_rows(tile, pl.program_id(2))
        q = q_ref[q_rows, :]
    rows, head_dim = q.shape
    kv_len = k_ref.shape[0]
    query = query_positions(tile, rows, rows // block_q, block_q, q_offset)
    tile_start = q_offset + tile * block_q

    def step(keys, carry):
        acc, row_max, row_sum = carry
        present, k, v, bias, start, end = gather_keys(keys, kv_len, k_ref, v_ref, bias_ref, start_ref, end_ref)
        logits, keep = masked_scores(q, query, present, k, bias, start, end, scale)
        new_max = jnp.maximum(row_max, jnp.max(logits, axis=1))
        weights = jnp.where(keep, jnp.exp(logits - new_max[:, None]), 0.0)
        correction = jnp.exp(row_max - new_max)
        acc = acc * correction[:, None] + jnp.dot(weights.astype(v.dtype), v, preferred_element_type=jnp.float32)
        return acc, new_max, row_sum * correction + jnp.sum(weights, axis=1)

    carry = (
        jnp.zeros((rows, head_dim), jnp.float32),
        jnp.full((rows,), MASKED, jnp.float32),
        jnp.zeros((rows,), jnp.float32),
    )
    carry = lax.fori_loop(
        0, table_ref.shape[0] // block_k, lambda c, s: step(table_ref[pl.ds(c * block_k, block_k)], s), carry
    )
    if own_keys:
        own = lambda c, s: step(tile_start + c * block_k + lax.broadcasted_iota(jnp.int32, (block_k,), 0), s)
        carry = lax.fori_loop(0, block_q // block_k, own, carry)
    acc, row_max, row_sum = carry
    empty = row_sum == 0
    safe_sum = jnp.where(empty, 1.0, row_sum)
    out = jnp.where(empty[:, None], 0.0, acc / safe_sum[:, None]).astype(o_ref.dtype)
    if sequence_rows is None:
        o_ref[...] = out
    else:
        o_ref[q_rows, :] = out
    lse_ref[...] = jnp.where(empty, jnp.inf, row_max + jnp.log(safe_sum))


def dma_forward(
    q_tiles, k, v, bias, start, end, table, *, scale, block_q, block_k, q_offset, own_keys=True,
    options=KernelOptions(), bias_heads=None,
):
    """Forward kernel.

    Args:
      q_tiles: (B, Hb, tiles, rows, D), rows = block_q * R (see ``common``); or, in the sequence
        layout, q itself, (B, tiles * block_q, Hb * R, D) with ``bias_heads`` = Hb given: each
        program then gathers its rows in place and writes its output rows in the same layout, so
        no transpose into or out of tiles is needed. R and D must be powers of two.
      k, v: (B, Hkv, Tk, D); bias head hb reads kv head ``hb // (Hb // Hkv)``.
      bias: float (B, Hb, Tk). start, end: int32 (B, Hb, Tk) live ranges in sequence positions.
      table: int32 (B, Hb, tiles, W), W a positive multiple of block_k: carried keys per tile.
      block_q: a multiple of block_k. q_offset: sequence position of query 0 (Tk - Tq if causal).
      own_keys: also visit the tile's own keys ``[t0, t0 + block_q)`` (causal lists); False when
        the table already lists every key the tile may keep.

    Returns:
      out in q's layout and dtype; lse float32 (B, Hb, tiles, rows), +inf on rows that keep no
      key (their output is 0).
    """
    out_shape = q_tiles.shape
    if bias_heads is None:
        batch, bias_heads, tiles, rows, head_dim = q_tiles.shape
        q_spec, sequence_rows = None, None
    else:
        batch, padded_len, heads, head_dim = q_tiles.shape
        per_bias, tiles = heads // bias_heads, padded_len // block_q
        rows = block_q * per_bias
        q_tiles = q_tiles.reshape(batch, padded_len * heads, head_dim)  # row t * H + h: free
        q_spec = pl.BlockSpec((None, padded_len * heads, head_dim), lambda n, b, h: (b, 0, 0))

        def sequence_rows(tile, bias_head):
            r = lax.broadcasted_iota(jnp.int32, (rows,), 0)
            return (tile * block_q + r // per_bias) * heads + bias_head * per_bias + r % per_bias
    kv_heads, kv_len = k.shape[1], k.shape[2]
    group = bias_heads // kv_heads
    width = table.shape[-1]
    assert block_q % block_k == 0 and width % block_k == 0 and width > 0, (block_q, block_k, width)
    kernel = functools.partial(
        _forward_kernel, scale=scale, block_q=block_q, block_k=block_k, q_offset=q_offset, own_keys=own_keys,
        sequence_rows=sequence_rows,
    )
    tile_spec = lambda *shape: pl.BlockSpec((None, None, None) + shape, lambda n, b, h: (b, h, n) + (0,) * len(shape))
    key_spec = pl.BlockSpec((None, None, kv_len), lambda n, b, h: (b, h, 0))
    kv_spec = pl.BlockSpec((None, None, kv_len, head_dim), lambda n, b, h: (b, h // group, 0, 0))
    q_spec = q_spec or tile_spec(rows, head_dim)
    out, lse = launch(
        kernel,
        grid=(tiles, batch, bias_heads),
        in_specs=[tile_spec(width), q_spec, kv_spec, kv_spec, key_spec, key_spec, key_spec],
        out_specs=[q_spec, tile_spec(rows)],
        out_shape=[
            jax.ShapeDtypeStruct(q_tiles.shape, q_tiles.dtype),
            jax.ShapeDtypeStruct((batch, bias_heads, tiles, rows), jnp.float32),
        ],
        args=(table, q_tiles, k, v, bias, start, end),
        options=options,
    )
    return out.reshape(out_shape), lse
