"""Key-major backward DMA kernel for Hopper in Pallas Mosaic GPU: dk, dv, dbias of carried keys.

Contract: ``pallas_kernels.gpu.backward.dma_backward_slots`` (tile layout, the slot-structured
table of ``dma_jax.selection.slots``), except that rows of keys no slot carries are left
unwritten by the kernel; ``dma_backward_slots_mosaic`` zeroes them. Reference: the gradients of
``pallas_kernels.gpu.reference.interval_attention_reference``.

Design (one CTA = one warpgroup = one (block of 64 slots, batch, bias head); grid (W / 64, B, Hb)):

- The CTA walks the query tiles n = 0 .. tiles - 1. Its accumulators dK, dV (64 keys x D, f32)
  and dbias (64) live in registers in the WGMMA layout: the keys are the M dimension (64, one
  warpgroup's MMA height), so the products need no transposes of the accumulators.
- Per tile it needs the 64 table entries of its slots at tiles n and n + 1 (the occupant now and
  next). The table is transposed by the wrapper to (W / 64 slabs, tiles + 1, 64), its last row
  -1, so that one TMA box of 2 rows brings both; these boxes go through a ring of 3 buffers, two
  tiles ahead of the compute, because the gather of tile n + 1 reads them.
- Tile n + 1's query and output-gradient tiles (rows x D, contiguous in the tile layout), lse and
  delta come by TMA, and its 64 key and value rows (plus each key's bias and live range) by
  ``cp.async`` gathers into 128B-swizzled slots (``common.cp_async_helpers``), while tile n
  computes: S^T = K Q^T, P^T = exp2(S^T - lse) under the exact live-range mask, dP^T = V dO^T,
  dS^T = P^T (dP^T - delta), dV += P^T dO, dK += dS^T Q (P^T, dS^T from registers), dbias +=
  rowsum dS^T. A 128-row tile is taken in two halves of 64 rows (64 x 64 products), which keeps
  S^T, dP^T and the two accumulators within the registers of one warpgroup.
- Flush: a slot whose occupant at tile n + 1 differs from tile n's (the key's run of tiles ends)
  writes its rows of dK (times the logit scale), dV and dbias straight from registers to global
  memory at the key's row (each thread stores the elements it holds; ``plgpu.inline_mgpu``), then
  zeroes them. Each key occupies one slot over one run of tiles, so every output row is written
  once, by one CTA: deterministic, no atomics.

Limits: bf16/fp16, D 64 or 128, rows = block_q * R of 64 or 128, table width a multiple of 64.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from pallas_kernels.mosaic_gpu.common import (
    SMEM_BYTES, backward_rows, check_backward_tiles, check_keys_and_table, cp_async_helpers, kv_rows, load_whole,
)

_LOG2E = math.log2(math.e)
BLOCK_SLOTS = 64  # slots per CTA: one warpgroup MMA's M
HALF = 64  # query rows per product: a tile of 128 rows is taken in two halves


def check_arguments(q_tiles, do_tiles, lse, delta, k, v, bias, start, end, table, *, block_q, kv_sequence=False,
                    q_sequence=False):
    """Raise a ValueError naming the limit for a call this kernel does not take (no GPU needed);
    else return its sizes."""
    dims = check_backward_tiles(q_tiles, do_tiles, lse, delta, k, v, block_q=block_q, kv_sequence=kv_sequence,
                                q_sequence=q_sequence)
    batch, bias_heads, tiles, rows, head_dim = (dims[n] for n in ("batch", "bias_heads", "tiles", "rows", "head_dim"))
    kv_len, dtype = dims["kv_len"], jnp.dtype(q_tiles.dtype)
    check_keys_and_table(bias, start, end, table, batch=batch, bias_heads=bias_heads, tiles=tiles, kv_len=kv_len,
                         multiple=BLOCK_SLOTS)
    stages = 2
    smem = 2 * stages * (rows + BLOCK_SLOTS) * head_dim * dtype.itemsize  # q, dO, k, v slots
    smem += stages * (2 * rows + 3 * BLOCK_SLOTS) * 4 + 3 * 2 * BLOCK_SLOTS * 4 + 64
    if smem > SMEM_BYTES:
        raise ValueError(f"needs {smem} bytes of shared memory (> {SMEM_BYTES})")
    return dict(dims, dtype=dtype)


def _flush_helper(plgpu):
    """inline_mgpu: store the rows of dK, dV (64, D) and dbias (64,) whose target key is >= 0 to
    row ``target`` of the outputs, each thread the elements it holds (WGMMA layout)."""
    from jax._src.lib.mlir import ir
    from jax._src.lib.mlir.dialects import arith, vector
    from jax.experimental.mosaic.gpu import utils as mgpu_utils

    wgmma = plgpu.Layout.WGMMA
    row = plgpu.Layout.WGMMA.reduce(1)
    ref = plgpu.RefType()

    @plgpu.inline_mgpu(arg_types=(wgmma, wgmma, wgmma, row, row, ref, ref, ref))
    def flush(ctx, dk, dv, target_2d, db, target, dk_out, dv_out, db_out):
        del ctx
        index = ir.IndexType.get()
        i32 = ir.IntegerType.get_signless(32)
        zero = arith.constant(i32, ir.IntegerAttr.get(i32, 0))

        def store(values, targets, out):
            for idx, reg_idx in zip(values.layout.thread_idxs(values.shape), np.ndindex(values.registers.shape)):
                key = vector.extract(targets.registers[reg_idx], dynamic_position=[],
                                     static_position=ir.DenseI64ArrayAttr.get([0]))
                with mgpu_utils.when(arith.cmpi(arith.CmpIPredicate.sge, key, zero)):
                    vector.store(values.registers[reg_idx], out, [arith.index_cast(index, key), *idx[1:]])

        store(dk, target_2d, dk_out)
        store(dv, target_2d, dv_out)
        store(db, target, db_out)

    return flush


@functools.lru_cache(maxsize=None)
def _build(*, batch, bias_heads, tiles, rows, head_dim, kv_heads, kv_len, dtype, block_q, scale, q_offset, blocks,
           kv_sequence=False, q_sequence=False):
    """The Mosaic GPU kernel; inputs (q, dO, lse, delta, k, v, table (slabs, tiles + 1, 64), bias
    f32, start, end), outputs dk, dv (B, Hb, Tk, D) f32 and dbias (B, Hb, Tk) f32."""
    import jax.experimental.pallas as pl
    from jax.experimental.pallas import mosaic_gpu as plgpu

    stages, rings = 2, 3
    group = bias_heads // kv_heads
    per_pos = rows // block_q
    transforms = (plgpu.TilingTransform((8, 128 // jnp.dtype(dtype).itemsize)), plgpu.SwizzleTransform(128))
    ops = cp_async_helpers(plgpu, transforms, kv_len=kv_len)
    flush = _flush_helper(plgpu)
    commit, wait = ops["commit"], ops["wait"]
    wgmma_layout = plgpu.Layout.WGMMA
    key_layout = plgpu.Layout.WGMMA.reduce(1)  # one value per key (row of the 64 x rows tiles)
    query_layout = plgpu.Layout.WGMMA.reduce(0)  # one value per query row (column)
    qk_scale = float(scale) * _LOG2E
    shape = (BLOCK_SLOTS, HALF)  # one product's (keys, query rows)

    def body(*refs):
        (q_ref, do_ref, lse_ref, delta_ref, k_ref, v_ref, tbl_ref, bias_ref, start_ref, end_ref,
         dk_ref, dv_ref, db_ref,
         q_smem, do_smem, lse_smem, delta_smem, k_smem, v_smem, kb_smem, lo_smem, hi_smem, tbl_smem,
         data_bar, tbl_bar) = refs
        s_block = lax.axis_index("slots")
        b = lax.axis_index("batch")
        hb = lax.axis_index("head")
        kvh = lax.div(hb, jnp.int32(group))
        slab = (b * bias_heads + hb) * blocks + s_block
        k_src, v_src = (kv_rows(ref, b, kvh, kv_sequence=kv_sequence) for ref in (k_ref, v_ref))
        meta_src = (bias_ref.at[b, hb], start_ref.at[b, hb], end_ref.at[b, hb])

        mod = lambda n, m: n % m if isinstance(n, int) else lax.rem(n, m)

        def fetch_table(n):
            plgpu.copy_gmem_to_smem(tbl_ref.at[slab, pl.ds(n, 2)], tbl_smem.at[mod(n, rings)], tbl_bar.at[mod(n, rings)])

        def fetch_tile(n):
            slot, ring = mod(n, stages), mod(n, rings)
            for src, dst in ((q_ref, q_smem), (do_ref, do_smem)):
                plgpu.copy_gmem_to_smem(backward_rows(src, b, hb, n, rows=rows, q_sequence=q_sequence), dst.at[slot],
                                        data_bar.at[slot])
            for src, dst in ((lse_ref, lse_smem), (delta_ref, delta_smem)):
                plgpu.copy_gmem_to_smem(src.at[b, hb, n], dst.at[slot], data_bar.at[slot])
            plgpu.barrier_wait(tbl_bar.at[ring])
            meta = tuple(zip(meta_src, (kb_smem.at[slot], lo_smem.at[slot], hi_smem.at[slot])))
            ops["gather_table"](tbl_smem.at[ring, 0], k_src, v_src, k_smem.at[slot], v_smem.at[slot],
                                *meta)

        fetch_table(0)
        if tiles > 1:
            fetch_table(1)
        fetch_tile(0)
        commit()

        column = plgpu.broadcasted_iota(jnp.int32, shape, 1, layout=wgmma_layout)
        position_in_tile = q_offset + lax.div(column, per_pos)

        def step(n, carry):
            dk, dv, db = carry
            slot = lax.rem(n, stages)
            ops["barrier"]()  # every thread is done with tile n - 1's slots and table buffer

            @pl.when(n + 2 < tiles)
            def _():
                fetch_table(n + 2)

            @pl.when(n + 1 < tiles)
            def _():
                fetch_tile(n + 1)

            commit()
            wait(1)  # tile n's gathers have landed (and are visible to wgmma)
            plgpu.barrier_wait(data_bar.at[slot])
            key_bias = load_whole(plgpu, kb_smem.at[slot], key_layout) * _LOG2E
            lo = load_whole(plgpu, lo_smem.at[slot], key_layout)
            hi = load_whole(plgpu, hi_smem.at[slot], key_layout)

            for half in range(rows // HALF):  # 64 query rows at a time: (64 keys x 64 rows) tiles
                part = pl.ds(half * HALF, HALF)
                q_part, do_part = q_smem.at[slot, part], do_smem.at[slot, part]

                def scores(acc_ref):
                    plgpu.wgmma(acc_ref, k_smem.at[slot], q_part.transpose((1, 0)))
                    return acc_ref[...]

                s = pl.run_scoped(scores, plgpu.ACC(shape, jnp.float32))
                lse = load_whole(plgpu, lse_smem.at[slot, part], query_layout) * _LOG2E
                delta = load_whole(plgpu, delta_smem.at[slot, part], query_layout)
                position = position_in_tile + (n * block_q + half * HALF // per_pos)
                keep = (lax.broadcast_in_dim(lo, shape, [0]) <= position) & (position < lax.broadcast_in_dim(hi, shape, [0]))
                logits = s * qk_scale + lax.broadcast_in_dim(key_bias, shape, [0]) - lax.broadcast_in_dim(lse, shape, [1])
                p = jnp.where(keep, jnp.exp2(logits), 0.0)

                def products(refs):
                    dv_ref_, dp_ref_ = refs
                    plgpu.wgmma(dv_ref_, p.astype(dtype), do_part)
                    plgpu.wgmma(dp_ref_, v_smem.at[slot], do_part.transpose((1, 0)))

                zeros = plgpu.layout_cast(jnp.full(shape, 0, jnp.float32), wgmma_layout)
                dv, dp = pl.run_state(products)((plgpu.ACC.init(dv), plgpu.ACC.init(zeros)))
                ds = p * (dp - lax.broadcast_in_dim(delta, shape, [1]))

                def key_grad(acc_ref):
                    plgpu.wgmma(acc_ref, ds.astype(dtype), q_part)

                dk = pl.run_state(key_grad)(plgpu.ACC.init(dk))
                db = db + ds.sum(axis=1)

            ring = lax.rem(n, rings)
            keys = load_whole(plgpu, tbl_smem.at[ring, 0], key_layout)
            following = load_whole(plgpu, tbl_smem.at[ring, 1], key_layout)
            ends_here = (keys >= 0) & (keys < kv_len) & (following != keys)
            target = jnp.where(ends_here, keys, -1)
            flush(dk * scale, dv, lax.broadcast_in_dim(target, dk.shape, [0]), db, target,
                  dk_ref.at[b, hb], dv_ref.at[b, hb], db_ref.at[b, hb])
            cleared = lax.broadcast_in_dim(ends_here, dk.shape, [0])
            return jnp.where(cleared, 0.0, dk), jnp.where(cleared, 0.0, dv), jnp.where(ends_here, 0.0, db)

        acc = lambda: plgpu.layout_cast(jnp.full((BLOCK_SLOTS, head_dim), 0, jnp.float32), wgmma_layout)
        init = (acc(), acc(), plgpu.layout_cast(jnp.full((BLOCK_SLOTS,), 0, jnp.float32), key_layout))
        lax.fori_loop(0, tiles, step, init)
        wait(0)

    scratch = [
        plgpu.SMEM((stages, rows, head_dim), dtype, transforms=transforms),  # q
        plgpu.SMEM((stages, rows, head_dim), dtype, transforms=transforms),  # dO
        plgpu.SMEM((stages, rows), jnp.float32),  # lse
        plgpu.SMEM((stages, rows), jnp.float32),  # delta
        plgpu.SMEM((stages, BLOCK_SLOTS, head_dim), dtype, transforms=transforms),  # k
        plgpu.SMEM((stages, BLOCK_SLOTS, head_dim), dtype, transforms=transforms),  # v
        plgpu.SMEM((stages, BLOCK_SLOTS), jnp.float32),  # bias
        plgpu.SMEM((stages, BLOCK_SLOTS), jnp.int32),  # start
        plgpu.SMEM((stages, BLOCK_SLOTS), jnp.int32),  # end
        plgpu.SMEM((rings, 2, BLOCK_SLOTS), jnp.int32),  # table rows n, n + 1
        plgpu.Barrier(num_arrivals=4, num_barriers=stages),
        plgpu.Barrier(num_arrivals=1, num_barriers=rings),
    ]
    sums = jax.ShapeDtypeStruct((batch, bias_heads, kv_len, head_dim), jnp.float32)
    return plgpu.kernel(
        body,
        out_type=(sums, sums, jax.ShapeDtypeStruct((batch, bias_heads, kv_len), jnp.float32)),
        scratch_types=scratch,
        grid=(blocks, batch, bias_heads),
        grid_names=("slots", "batch", "head"),
        compiler_params=plgpu.CompilerParams(approx_math=True),
    )


def dma_backward_slots_mosaic(q_tiles, do_tiles, lse, delta, k, v, bias, start, end, table, *, scale, block_q,
                              q_offset, kv_sequence=False, q_sequence=False, carried=None):
    """Key-major backward pass (Mosaic GPU, sm_90): dk, dv, dbias of carried keys.

    Args: as ``pallas_kernels.gpu.backward.dma_backward_slots``: q_tiles, do_tiles (B, Hb, tiles,
    rows, D) bf16/fp16 with rows = block_q * R in {64, 128} (row r of tile n = position
    q_offset + n * block_q + r // R); lse, delta float32 (B, Hb, tiles, rows); k, v (B, Hkv, Tk, D),
    or (B, Tk, Hkv, D) with ``kv_sequence``; q and dO (B, T, Hb, D) with ``q_sequence`` (one query
    head per bias head, tile n being rows ``n * block_q ...``); bias, start, end (B, Hb, Tk); table
    int32 (B, Hb, tiles, W), W a multiple of 64, each key in one slot over one run of consecutive
    tiles (``dma_jax.selection.slots``); scale, q_offset as the forward. carried: optional bool
    (B, Hb, Tk), the keys the table lists (for causal tables ``dma_jax.selection.slots.ever_carried``
    of ``end``, elementwise); when None it is found from the table with a scatter, which at 32K
    took 0.74 ms of an H100 (every key is listed in many tiles).

    Returns:
      dk, dv float32 (B, Hb, Tk + 1, D) and dbias float32 (B, Hb, Tk + 1): per-key sums over the
      tiles that carry the key, zeros for keys never carried (row Tk is zero, as the Triton
      kernel's scratch row).
    """
    dk, dv, db, carried = carried_key_sums(q_tiles, do_tiles, lse, delta, k, v, bias, start, end, table, scale=scale,
                                           block_q=block_q, q_offset=q_offset, kv_sequence=kv_sequence,
                                           q_sequence=q_sequence, carried=carried)
    pad = lambda x: jnp.pad(x, ((0, 0), (0, 0), (0, 1)) + ((0, 0),) * (x.ndim - 3))
    dk, dv = (pad(jnp.where(carried[..., None], x, 0.0)) for x in (dk, dv))
    return dk, dv, db


def carried_key_sums(q_tiles, do_tiles, lse, delta, k, v, bias, start, end, table, *, scale, block_q, q_offset,
                     kv_sequence=False, q_sequence=False, carried=None):
    """The key-major pass as the kernel leaves it, for a caller that finishes dK and dV itself
    (``backward_queries.dma_backward_queries_mosaic(..., key_sums=...)``): arguments as
    ``dma_backward_slots_mosaic``; returns dk, dv float32 (B, Hb, Tk, D) whose rows of keys no slot
    carries are unwritten (any value), ``carried`` bool (B, Hb, Tk), and dbias as
    ``dma_backward_slots_mosaic`` returns it (B, Hb, Tk + 1)."""
    dims = check_arguments(q_tiles, do_tiles, lse, delta, k, v, bias, start, end, table, block_q=block_q,
                           kv_sequence=kv_sequence, q_sequence=q_sequence)
    batch, bias_heads, tiles, kv_len = dims["batch"], dims["bias_heads"], dims["tiles"], dims["kv_len"]
    width = table.shape[-1]
    blocks = width // BLOCK_SLOTS
    call = _build(**dims, block_q=block_q, scale=float(scale), q_offset=int(q_offset), blocks=blocks,
                  kv_sequence=kv_sequence, q_sequence=q_sequence)
    table = table.astype(jnp.int32)
    # (B, Hb, tiles, W) -> (B * Hb * blocks, tiles + 1, 64): a CTA's slots at tiles n and n + 1 are
    # one box; the extra row of -1 ends every run at the last tile.
    slabs = jnp.pad(table, ((0, 0), (0, 0), (0, 1), (0, 0)), constant_values=-1)
    slabs = slabs.reshape(batch, bias_heads, tiles + 1, blocks, BLOCK_SLOTS).swapaxes(2, 3)
    slabs = slabs.reshape(batch * bias_heads * blocks, tiles + 1, BLOCK_SLOTS)
    dk, dv, db = call(q_tiles, do_tiles, lse.astype(jnp.float32), delta.astype(jnp.float32), k, v, slabs,
                      bias.astype(jnp.float32), start.astype(jnp.int32), end.astype(jnp.int32))
    # Rows of keys that no slot carries were never written.
    if carried is None:
        present = (table >= 0) & (table < kv_len)
        rows = jnp.where(present, table, kv_len).reshape(batch, bias_heads, -1)
        carried = jax.vmap(jax.vmap(lambda r: jnp.zeros((kv_len + 1,), bool).at[r].set(True)))(rows)[..., :kv_len]
    elif carried.shape != (batch, bias_heads, kv_len):
        raise ValueError(f"carried must be (B, Hb, Tk) = {(batch, bias_heads, kv_len)}, got {carried.shape}")
    return dk, dv, jnp.pad(jnp.where(carried, db, 0.0), ((0, 0), (0, 0), (0, 1))), carried
