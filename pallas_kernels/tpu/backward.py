"""Backward DMA kernels for TPU: deterministic, no atomics, the GPU backward's split.

1. ``dma_backward_queries_tpu`` (grid (B, Hb, tiles), parallel; query-major like the forward,
   same double-buffered chunk gather): dq of each tile over its carried and own keys, and the
   dk, dv, dbias of the tile's own keys from the tile's own queries (an own key belongs to one
   tile, so each is written once, by a plain blocked store).
2. ``dma_backward_slots_tpu`` (grid (B, Hb, slot blocks, tiles), the tile axis sequential):
   a program owns ``block_slots`` slots of the carried-key table and walks the tiles in order.
   The slots' key and value rows stay in VMEM; a row is fetched (one row DMA) only when its
   slot's occupant changes, so each carried key is read once, not once per tile. dk and dv
   accumulate in VMEM and are written to HBM by one row DMA when the occupant leaves (its last
   tile); the dbias sums leave through a dense per-tile output (``db_flush``), which the caller
   scatters to keys (each key is flushed exactly once).

Every output element is written by one program and every sum runs in a fixed order, so the
gradients are bitwise reproducible. q, do, lse and delta of a tile come in through BlockSpecs
(Pallas pipelines them); the caller sums pass 1, pass 2 and the bias heads of a kv head.

Reference: gradients of ``pallas_kernels.tpu.reference.list_attention_reference``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels.tpu.common import (
    NT_DIMS, ChunkGather, QueryTileInputs, TpuKernelOptions, chunk_loop, column, masked_scores, poison,
    tile_context, tpu_call,
)


def _probabilities(q, do, lse, delta, query, k, v, bias, start, end, scale):
    """p and dS = p * (dO.v - delta) for one block of keys: (rows, n) float32 each."""
    logits, keep = masked_scores(q, k, bias, start, end, query, scale)
    p = jnp.where(keep, jnp.exp(logits - lse), 0.0)
    dp = lax.dot_general(do, v, NT_DIMS, preferred_element_type=jnp.float32)
    return p, p * (dp - delta)


def _key_grads(p, ds, q, do, scale):
    """dk (n, Dp), dv (n, Dp) and dbias (1, n), float32, of one key block from one query tile."""
    dk = jnp.dot(ds.T.astype(q.dtype), q, preferred_element_type=jnp.float32) * scale
    dv = jnp.dot(p.T.astype(do.dtype), do, preferred_element_type=jnp.float32)
    return dk, dv, jnp.sum(ds, axis=0, keepdims=True)


def _queries_kernel(
    counts_ref, keys_ref, q_ref, do_ref, lse_ref, delta_ref, offsets_ref, bias_ref, start_ref, end_ref,
    k_hbm, v_hbm, *refs, scale, block_q, q_offset, own_chunks, zero_row, group, poisoned,
):
    outputs, (k_buf, v_buf, sems) = refs[:-3], refs[-3:]
    if poisoned:
        poison(*outputs)
    block_k = k_buf.shape[1]
    b, h, _, carried, total, t0, meta_row = tile_context(
        counts_ref, block_q=block_q, q_offset=q_offset, own_chunks=own_chunks, carried_rows=keys_ref.shape[0] // block_k
    )
    gather = ChunkGather(
        k_hbm.at[b, h // group], v_hbm.at[b, h // group], k_buf, v_buf, sems, keys_ref,
        carried=carried, own_start=t0, zero_row=zero_row,
    )
    q, do = q_ref[...], do_ref[...]
    lse, delta, query = column(lse_ref), column(delta_ref), t0 + column(offsets_ref)

    def body(c, slot, dq):
        row = meta_row(c)
        k, v = k_buf[slot], v_buf[slot]
        p, ds = _probabilities(q, do, lse, delta, query, k, v, bias_ref[row, :], start_ref[row, :], end_ref[row, :], scale)
        if own_chunks:
            dq_ref, dk_ref, dv_ref, db_ref = outputs

            @pl.when(c >= carried)
            def _():
                own = c - carried
                chunk = pl.ds(pl.multiple_of(own * block_k, block_k), block_k)
                dk_ref[chunk, :], dv_ref[chunk, :], db_ref[pl.ds(own, 1), :] = _key_grads(p, ds, q, do, scale)

        return dq + jnp.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32)

    dq = chunk_loop(gather, total, body, jnp.zeros(q.shape, jnp.float32))
    outputs[0][...] = (dq * scale).astype(outputs[0].dtype)


def dma_backward_queries_tpu(
    q_tiles, do_tiles, lse, delta, k, v, keys, meta, counts, offsets, *, scale, block_q, q_offset, own_chunks,
    zero_row, options=TpuKernelOptions(),
):
    """Pass 1: dq of every query, and dk, dv, dbias of each tile's own keys from that tile.

    Args: as ``dma_forward_tpu``, plus do_tiles (like q_tiles), and lse and delta = rowsum(dO * O),
    float32 (B, Hb, tiles, 1, rows).

    Returns:
      dq_tiles (like q_tiles) and, when ``own_chunks`` > 0, dk_own, dv_own float32
      (B, Hb, tiles, own_chunks * block_k, Dp) and db_own float32 (B, Hb, tiles, own_chunks,
      block_k) for the keys at sequence positions ``q_offset + n * block_q + i``.
    """
    batch, bias_heads, tiles, rows, head_dim = q_tiles.shape
    block_k = meta[0].shape[-1]
    spec = QueryTileInputs(rows, head_dim, keys.shape[-1], meta[0].shape[-2], block_k)
    kernel = functools.partial(
        _queries_kernel, scale=scale, block_q=block_q, q_offset=q_offset, own_chunks=own_chunks,
        zero_row=zero_row, group=bias_heads // k.shape[1], poisoned=options.poison_outputs,
    )
    own = (batch, bias_heads, tiles, own_chunks * block_k)
    out_specs, out_shape = [spec.q()], [jax.ShapeDtypeStruct(q_tiles.shape, q_tiles.dtype)]
    if own_chunks:
        out_specs += [spec.tile(own_chunks * block_k, head_dim)] * 2 + [spec.tile(own_chunks, block_k)]
        out_shape += [jax.ShapeDtypeStruct(own + (head_dim,), jnp.float32)] * 2
        out_shape += [jax.ShapeDtypeStruct((batch, bias_heads, tiles, own_chunks, block_k), jnp.float32)]
    return tpu_call(
        kernel,
        grid=(batch, bias_heads, tiles),
        num_scalar_prefetch=1,
        in_specs=[spec.keys(), spec.q(), spec.q(), spec.row(), spec.row(), spec.offsets()]
        + [spec.meta()] * 3 + [spec.hbm(), spec.hbm()],
        out_specs=out_specs,
        out_shape=out_shape,
        scratch_shapes=spec.scratch(k.dtype),
        args=(counts, keys, q_tiles, do_tiles, lse, delta, offsets, *meta, k, v),
        options=options,
        dimension_semantics=("parallel", "parallel", "parallel"),
    )


ARRIVES, LEAVES = 1, 2  # bits of the slot flags: the occupant is new in this tile / leaves after it


def _each_flagged(flags_ref, bit, action):
    """``action(i)`` for every slot i whose flags have ``bit``, in slot order."""

    def body(i, _):
        @pl.when((flags_ref[i] & bit) != 0)
        def _():
            action(i)

    lax.fori_loop(0, flags_ref.shape[0], body, None)


def _slots_kernel(
    keys_ref, flags_ref, q_ref, do_ref, lse_ref, delta_ref, offsets_ref, bias_ref, start_ref, end_ref,
    flag_lanes_ref, k_hbm, v_hbm, _dk_init, _dv_init, dk_hbm, dv_hbm, db_ref,
    k_slots, v_slots, dk_acc, dv_acc, db_acc, sems, *, scale, block_q, q_offset, zero_row, group, poisoned,
):
    if poisoned:
        poison(db_ref)
    b, h, n = pl.program_id(0), pl.program_id(1), pl.program_id(3)
    k_src, v_src = k_hbm.at[b, h // group], v_hbm.at[b, h // group]

    @pl.when(n == 0)
    def _():
        dk_acc[...] = jnp.zeros(dk_acc.shape, jnp.float32)
        dv_acc[...] = jnp.zeros(dv_acc.shape, jnp.float32)
        db_acc[...] = jnp.zeros(db_acc.shape, jnp.float32)

    def fetch(i):
        key = keys_ref[i]
        row = pl.ds(jnp.where(key >= 0, key, zero_row), 1)
        return [
            pltpu.make_async_copy(k_src.at[row], k_slots.at[pl.ds(i, 1)], sems.at[0]),
            pltpu.make_async_copy(v_src.at[row], v_slots.at[pl.ds(i, 1)], sems.at[0]),
        ]

    _each_flagged(flags_ref, ARRIVES, lambda i: [copy.start() for copy in fetch(i)])
    _each_flagged(flags_ref, ARRIVES, lambda i: [copy.wait() for copy in fetch(i)])

    q, do = q_ref[...], do_ref[...]
    query = q_offset + n * block_q + column(offsets_ref)
    p, ds = _probabilities(
        q, do, column(lse_ref), column(delta_ref), query, k_slots[...], v_slots[...], bias_ref[...], start_ref[...],
        end_ref[...], scale,
    )
    dk, dv, db = _key_grads(p, ds, q, do, scale)
    dk_acc[...] += dk
    dv_acc[...] += dv
    db = db_acc[...] + db
    leaves = (flag_lanes_ref[...] & LEAVES) != 0
    db_ref[...] = jnp.where(leaves, db, 0.0)
    db_acc[...] = jnp.where(leaves, 0.0, db)

    def flush(i):
        row = pl.ds(keys_ref[i], 1)
        return [
            pltpu.make_async_copy(dk_acc.at[pl.ds(i, 1)], dk_hbm.at[b, h, row], sems.at[1]),
            pltpu.make_async_copy(dv_acc.at[pl.ds(i, 1)], dv_hbm.at[b, h, row], sems.at[1]),
        ]

    def clear(i):
        dk_acc[pl.ds(i, 1), :] = jnp.zeros((1, dk_acc.shape[1]), jnp.float32)
        dv_acc[pl.ds(i, 1), :] = jnp.zeros((1, dv_acc.shape[1]), jnp.float32)

    _each_flagged(flags_ref, LEAVES, lambda i: [copy.start() for copy in flush(i)])
    _each_flagged(flags_ref, LEAVES, lambda i: [copy.wait() for copy in flush(i)])
    _each_flagged(flags_ref, LEAVES, clear)


def dma_backward_slots_tpu(
    q_tiles, do_tiles, lse, delta, k, v, keys, flags, meta_lanes, offsets, *, scale, block_q, block_slots,
    q_offset, zero_row, options=TpuKernelOptions(),
):
    """Pass 2: dk, dv, dbias of carried keys, walking slots of the table across all tiles.

    Args: q_tiles, do_tiles, lse, delta, k, v, offsets, zero_row as ``dma_backward_queries_tpu``;
      keys: int32 (B, Hb, tiles, W) carried-key table (W a multiple of ``block_slots``); each key
        occupies one slot over one run of consecutive tiles (``dma_jax.selection.slots``);
      flags: int32 (B, Hb, tiles, W): bit ``ARRIVES`` where the occupant differs from the
        previous tile's (every slot of tile 0), bit ``LEAVES`` where a key occupies the slot for
        the last time;
      meta_lanes: (bias, start, end, flags), each (B, Hb, tiles, 1, L) with L >= W: per-entry data.

    Returns:
      dk, dv float32 (B, Hb, kv_rows, Dp): per-key sums over the tiles that carry the key (zeros
      for keys never carried); db_flush float32 (B, Hb, tiles, 1, W): the dbias of the key that
      leaves slot s after tile n, at [n, s] (zeros elsewhere).
    """
    batch, bias_heads, tiles, rows, head_dim = q_tiles.shape
    width = keys.shape[-1]
    kv_rows = k.shape[2]
    assert width % block_slots == 0, (width, block_slots)
    kernel = functools.partial(
        _slots_kernel, scale=scale, block_q=block_q, q_offset=q_offset, zero_row=zero_row,
        group=bias_heads // k.shape[1], poisoned=options.poison_outputs,
    )
    tile = lambda *shape: pl.BlockSpec((None, None, None) + shape, lambda b, h, s, n: (b, h, n) + (0,) * len(shape))
    slots = pl.BlockSpec((None, None, None, block_slots), lambda b, h, s, n: (b, h, n, s), memory_space=pltpu.SMEM)
    lanes = pl.BlockSpec((None, None, None, 1, block_slots), lambda b, h, s, n: (b, h, n, 0, s))
    hbm = pl.BlockSpec(memory_space=pl.ANY)
    grads = jax.ShapeDtypeStruct((batch, bias_heads, kv_rows, head_dim), jnp.float32)
    zeros = jnp.zeros(grads.shape, grads.dtype)  # keys no slot walk writes keep these
    return tpu_call(
        kernel,
        grid=(batch, bias_heads, width // block_slots, tiles),
        num_scalar_prefetch=0,
        in_specs=[slots, slots, tile(rows, head_dim), tile(rows, head_dim), tile(1, rows), tile(1, rows)]
        + [pl.BlockSpec((1, rows), lambda b, h, s, n: (0, 0))] + [lanes] * 4 + [hbm] * 4,
        out_specs=[hbm, hbm, lanes],
        out_shape=[grads, grads, jax.ShapeDtypeStruct((batch, bias_heads, tiles, 1, width), jnp.float32)],
        scratch_shapes=[
            pltpu.VMEM((block_slots, head_dim), k.dtype),
            pltpu.VMEM((block_slots, head_dim), k.dtype),
            pltpu.VMEM((block_slots, head_dim), jnp.float32),
            pltpu.VMEM((block_slots, head_dim), jnp.float32),
            pltpu.VMEM((1, block_slots), jnp.float32),
            pltpu.SemaphoreType.DMA((2,)),
        ],
        args=(keys, flags, q_tiles, do_tiles, lse, delta, offsets, *meta_lanes, k, v, zeros, zeros),
        options=options,
        dimension_semantics=("parallel", "parallel", "parallel", "arbitrary"),
        input_output_aliases={13: 0, 14: 1},
    )
