"""Backward DMA kernels: deterministic, no atomics.

Two passes, each writing every output element exactly once:

1. ``dma_backward_queries`` (grid (tiles, B, Hb), query-major like the forward): recomputes the
   probabilities of each tile from the saved log-sum-exp, accumulates dq over the tile's carried
   and own keys, and, for the tile's own keys ``[t0, t0 + block_q)`` (which belong to this tile
   alone), also writes their dk, dv and dbias from this tile's queries.
2. ``dma_backward_slots`` (grid (slot blocks, B, Hb), key-major): walks ``block_slots`` slots of
   the carried-key table across all tiles. A key occupies one slot over one unbroken run of
   tiles, so the program accumulates its dk, dv and dbias from every tile that keeps it and
   writes them once, when the slot's occupant changes.

dk = (2) + (1), per bias head; the caller sums bias heads that share a kv head. Every kernel
output is fully determined by its inputs: results are bitwise reproducible.

Reference: ``pallas_kernels.gpu.reference`` (gradients of the dense forward reference).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from pallas_kernels.gpu.common import KernelOptions, gather_keys, launch, masked_scores, query_positions


def _probabilities(q, do, lse, delta, query, keys, kv_len, k_ref, v_ref, bias_ref, start_ref, end_ref, scale):
    """Recompute p and dS = p * (dO.v - delta) for one gathered key block: (rows, n) each."""
    present, k, v, bias, start, end = gather_keys(keys, kv_len, k_ref, v_ref, bias_ref, start_ref, end_ref)
    logits, keep = masked_scores(q, query, present, k, bias, start, end, scale)
    p = jnp.where(keep, jnp.exp(logits - lse[:, None]), 0.0)
    dp = jnp.dot(do, v.T, preferred_element_type=jnp.float32)
    return present, k, p, p * (dp - delta[:, None])


def _queries_kernel(
    table_ref, q_ref, do_ref, lse_ref, delta_ref, k_ref, v_ref, bias_ref, start_ref, end_ref,
    dq_ref, dk_ref, dv_ref, db_ref, *, scale, block_q, block_k, q_offset, own_keys,
):
    tile = pl.program_id(0)
    rows, head_dim = q_ref.shape
    kv_len = k_ref.shape[0]
    q, do, lse, delta = q_ref[...], do_ref[...], lse_ref[...], delta_ref[...]
    query = query_positions(tile, rows, rows // block_q, block_q, q_offset)
    tile_start = q_offset + tile * block_q
    grads = lambda keys: _probabilities(q, do, lse, delta, query, keys, kv_len, k_ref, v_ref, bias_ref, start_ref, end_ref, scale)

    def carried_step(c, dq):
        _, k, _, ds = grads(table_ref[pl.ds(c * block_k, block_k)])
        return dq + jnp.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32)

    dq = lax.fori_loop(0, table_ref.shape[0] // block_k, carried_step, jnp.zeros((rows, head_dim), jnp.float32))

    def own_step(c, dq):
        _, k, p, ds = grads(tile_start + c * block_k + lax.broadcasted_iota(jnp.int32, (block_k,), 0))
        chunk = pl.ds(c * block_k, block_k)
        dk_ref[chunk, :] = jnp.dot(ds.T.astype(q.dtype), q, preferred_element_type=jnp.float32) * scale
        dv_ref[chunk, :] = jnp.dot(p.T.astype(do.dtype), do, preferred_element_type=jnp.float32)
        db_ref[chunk] = jnp.sum(ds, axis=0)
        return dq + jnp.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32)

    if own_keys:
        dq = lax.fori_loop(0, block_q // block_k, own_step, dq)
    else:
        dk_ref[...] = jnp.zeros(dk_ref.shape, jnp.float32)
        dv_ref[...] = jnp.zeros(dv_ref.shape, jnp.float32)
        db_ref[...] = jnp.zeros(db_ref.shape, jnp.float32)
    dq_ref[...] = (dq * scale).astype(dq_ref.dtype)


def dma_backward_queries(
    q_tiles, do_tiles, lse, delta, k, v, bias, start, end, table, *, scale, block_q, block_k, q_offset,
    own_keys=True, options=KernelOptions(),
):
    """Pass 1: dq for every query, and dk, dv, dbias of each tile's own keys from that tile.

    Args: as ``dma_forward``, plus do_tiles (like q_tiles), lse and delta = rowsum(dO * O),
    float32 (B, Hb, tiles, rows).

    Returns:
      dq_tiles (like q_tiles); dk_own, dv_own float32 (B, Hb, tiles, block_q, D) and db_own float32
      (B, Hb, tiles, block_q) for the keys at sequence positions ``q_offset + n * block_q + i``
      (zeros when ``own_keys`` is False).
    """
    batch, bias_heads, tiles, rows, head_dim = q_tiles.shape
    kv_heads, kv_len = k.shape[1], k.shape[2]
    group = bias_heads // kv_heads
    width = table.shape[-1]
    kernel = functools.partial(
        _queries_kernel, scale=scale, block_q=block_q, block_k=block_k, q_offset=q_offset, own_keys=own_keys
    )
    tile_spec = lambda *shape: pl.BlockSpec((None, None, None) + shape, lambda n, b, h: (b, h, n) + (0,) * len(shape))
    key_spec = pl.BlockSpec((None, None, kv_len), lambda n, b, h: (b, h, 0))
    kv_spec = pl.BlockSpec((None, None, kv_len, head_dim), lambda n, b, h: (b, h // group, 0, 0))
    own_shape = (batch, bias_heads, tiles, block_q)
    return launch(
        kernel,
        grid=(tiles, batch, bias_heads),
        in_specs=[
            tile_spec(width), tile_spec(rows, head_dim), tile_spec(rows, head_dim), tile_spec(rows), tile_spec(rows),
            kv_spec, kv_spec, key_spec, key_spec, key_spec,
        ],
        out_specs=[tile_spec(rows, head_dim), tile_spec(block_q, head_dim), tile_spec(block_q, head_dim), tile_spec(block_q)],
        out_shape=[
            jax.ShapeDtypeStruct(q_tiles.shape, q_tiles.dtype),
            jax.ShapeDtypeStruct(own_shape + (head_dim,), jnp.float32),
            jax.ShapeDtypeStruct(own_shape + (head_dim,), jnp.float32),
            jax.ShapeDtypeStruct(own_shape, jnp.float32),
        ],
        args=(table, q_tiles, do_tiles, lse, delta, k, v, bias, start, end),
        options=options,
    )


def _slots_kernel(
    table_ref, q_ref, do_ref, lse_ref, delta_ref, k_ref, v_ref, bias_ref, start_ref, end_ref,
    dk_ref, dv_ref, db_ref, *, scale, block_q, q_offset, masked_store, transposed,
):
    tiles, rows, head_dim = q_ref.shape
    block_slots = table_ref.shape[1]
    kv_len = k_ref.shape[0]
    # Accumulators (slots, D), or (D, slots) when ``transposed``: then the per-tile products
    # dK^T += Q^T dS and dV^T += dO^T P have M = D rows (wgmma on Hopper needs M >= 64), where
    # dK += dS^T Q has M = block_slots.
    per_slot = (lambda x: x[None, :]) if transposed else (lambda x: x[:, None])

    def product(weights, operand):
        """weights^T operand (or its transpose), float32: weights (rows, slots), operand (rows, D)."""
        if transposed:
            return jnp.dot(operand.T, weights.astype(operand.dtype), preferred_element_type=jnp.float32)
        return jnp.dot(weights.T.astype(operand.dtype), operand, preferred_element_type=jnp.float32)

    def body(tile, carry):
        dk, dv, db = carry
        keys = table_ref[tile]
        following = jnp.where(tile + 1 < tiles, table_ref[jnp.minimum(tile + 1, tiles - 1)], -1)
        q, do, lse, delta = q_ref[tile], do_ref[tile], lse_ref[tile], delta_ref[tile]
        query = query_positions(tile, rows, rows // block_q, block_q, q_offset)
        present, _, p, ds = _probabilities(
            q, do, lse, delta, query, keys, kv_len, k_ref, v_ref, bias_ref, start_ref, end_ref, scale
        )
        dk = dk + product(ds, q) * scale
        dv = dv + product(p, do)
        db = db + jnp.sum(ds, axis=0)
        flush = present & (following != keys)
        if masked_store:
            from jax.experimental.pallas import triton as plgpu

            target = jnp.where(flush, keys, 0)
            if transposed:  # two index arrays: the Triton lowering takes no slice before a vector index
                index = (lax.broadcasted_iota(jnp.int32, dk.shape, 0), jnp.broadcast_to(target[None, :], dk.shape))
                mask = jnp.broadcast_to(flush[None, :], dk.shape)
            else:
                index, mask = (target, slice(None)), flush[:, None]
            plgpu.store(dk_ref.at[index], dk, mask=mask)
            plgpu.store(dv_ref.at[index], dv, mask=mask)
            plgpu.store(db_ref.at[target], db, mask=flush)
        else:  # interpret mode: unflushed rows go to the spare row kv_len
            target = jnp.where(flush, keys, kv_len)
            index = (slice(None), target) if transposed else (target, slice(None))
            dk_ref[index] = dk
            dv_ref[index] = dv
            db_ref[target] = db
        return (
            jnp.where(per_slot(flush), 0.0, dk),
            jnp.where(per_slot(flush), 0.0, dv),
            jnp.where(flush, 0.0, db),
        )

    shape = (head_dim, block_slots) if transposed else (block_slots, head_dim)
    init = (jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.float32), jnp.zeros((block_slots,), jnp.float32))
    lax.fori_loop(0, tiles, body, init)


def dma_backward_slots(
    q_tiles, do_tiles, lse, delta, k, v, bias, start, end, table, *, scale, block_q, block_slots, q_offset,
    options=KernelOptions(), transposed=False,
):
    """Pass 2: dk, dv, dbias of carried keys, walking slots of the table across all tiles.

    Args: as ``dma_backward_queries``; ``table`` width must be a multiple of ``block_slots``, and
    each key must occupy one slot over one run of consecutive tiles (``dma_jax.selection.slots``).
    ``transposed``: accumulate dK^T and dV^T, (D, slots) a program, so that their per-tile
    products run on Hopper's wgmma (M = D) instead of mma.sync (M = block_slots); the kernel then
    writes (D, Tk + 1) sums, transposed back here. Same results, other rounding order.

    Returns:
      dk, dv float32 (B, Hb, Tk + 1, D) and dbias float32 (B, Hb, Tk + 1): per-key sums over the
      tiles that carry the key (row Tk is scratch; zeros for keys never carried).
    """
    batch, bias_heads, tiles, rows, head_dim = q_tiles.shape
    kv_heads, kv_len = k.shape[1], k.shape[2]
    group = bias_heads // kv_heads
    width = table.shape[-1]
    assert width % block_slots == 0, (width, block_slots)
    kernel = functools.partial(
        _slots_kernel, scale=scale, block_q=block_q, q_offset=q_offset, masked_store=not options.interpret,
        transposed=transposed,
    )
    slab = lambda *shape: pl.BlockSpec((None, None) + shape, lambda s, b, h: (b, h) + (0,) * len(shape))
    kv_spec = pl.BlockSpec((None, None, kv_len, head_dim), lambda s, b, h: (b, h // group, 0, 0))
    sums = (head_dim, kv_len + 1) if transposed else (kv_len + 1, head_dim)
    out_shapes = [
        jax.ShapeDtypeStruct((batch, bias_heads) + sums, jnp.float32),
        jax.ShapeDtypeStruct((batch, bias_heads) + sums, jnp.float32),
        jax.ShapeDtypeStruct((batch, bias_heads, kv_len + 1), jnp.float32),
    ]
    dk, dv, db = launch(  # keys that no slot walk writes keep the initial zeros
        kernel,
        grid=(width // block_slots, batch, bias_heads),
        in_specs=[
            pl.BlockSpec((None, None, tiles, block_slots), lambda s, b, h: (b, h, 0, s)),
            slab(tiles, rows, head_dim), slab(tiles, rows, head_dim), slab(tiles, rows), slab(tiles, rows),
            kv_spec, kv_spec, slab(kv_len), slab(kv_len), slab(kv_len),
        ],
        out_specs=[slab(*sums), slab(*sums), slab(kv_len + 1)],
        out_shape=out_shapes,
        args=(table, q_tiles, do_tiles, lse, delta, k, v, bias, start, end),
        options=options,
        initial_outputs=[jnp.zeros(s.shape, s.dtype) for s in out_shapes],
    )
    if transposed:
        dk, dv = (jnp.swapaxes(x, -1, -2) for x in (dk, dv))
    return dk, dv, db
