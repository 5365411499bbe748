"""Query-major backward DMA kernel for Hopper in Pallas Mosaic GPU: dq, and dk/dv/dbias of own keys.

Contract: ``pallas_kernels.gpu.backward.dma_backward_queries`` (tile layout), see
``dma_backward_queries_mosaic``. Reference: gradients of
``pallas_kernels.gpu.reference.interval_attention_reference``.

Design (one CTA = one warpgroup = one (query tile, batch, bias head); grid (tiles, B, Hb)),
built like the forward (``pallas_kernels.mosaic_gpu.forward``) and reusing its cp.async gather:

- The CTA loads with TMA, on one mbarrier, its query tile and its dO tile (one ``rows x D`` box
  each: a tile is contiguous in the tile layout, rows position-major), its lse and delta rows
  and its table row (``W/64 x 64``).
- It visits ``ceil(block_q / 64)`` own-key steps first (own_keys), then the ``W / 64`` table
  steps, 64 keys a step. Key and value rows, with each key's bias, start and end, are gathered
  with cp.async into one of ``num_stages`` 128B-swizzled slots, step s + stages - 1 in flight
  while step s computes (the forward's pipeline). Absent keys are zero-filled: never kept.
- Every step recomputes, in registers in the WGMMA layout, S = Q K^T and dP = dO V^T (two
  wgmmas on one wait), P = exp2(S * scale * log2 e + bias * log2 e - lse * log2 e) where the
  live range keeps the key (else 0) and dS = P (dP - delta), then dq += dS K (wgmma, dS from
  registers; from shared memory on own steps).
- Own steps also stage P and dS (rows x 64, q's dtype, swizzled) in shared memory, so that the
  keys can be the M dimension: dV = P^T dO and dK = dS^T Q are wgmmas with a transposed
  shared-memory A operand (K = rows); dbias = column sums of dS (a cross-warp reduction). Each
  result goes through one float32 staging buffer (64 x D, swizzled) and out with TMA, keys past
  block_q left out; the buffer is reused after the previous store has read it. Own steps come
  first: with block_q <= 64 the dq accumulator only starts (from zero) at the end of the own
  step, so the own step's register peak is S, dP, or one 64 x D accumulator, not dq as well.
- Shared memory (bf16, D=128, rows=128, 2 stages, own keys): Q, dO 2 x 32 KiB, K/V slots
  64 KiB, P and dS 2 x 16 KiB, float32 staging 32 KiB, plus 4 W bytes for the table row and
  about 5 KiB of small buffers: 206,848 bytes counted (205,832 allocated) at W = 128;
  ``check_arguments`` rejects calls past 227 KiB (here W > 6656, or 3 stages).
- dq (times scale) goes back through the query buffer with one TMA store.
- With ``key_sums`` (the key-major pass' float32 sums of carried keys, run first), the own steps
  finish dK and dV: each 64-key block TMA-loads those sums and a carried mask for its keys into
  the float32 staging buffer, adds them where the key was carried (the unfused sum's float32
  addition; for dK the GPU compiler folds the scale into it as one fused multiply-add, so a few
  elements round differently), and writes the result in k's dtype straight into k's
  (B, Tk, Hkv, D) layout (one TMA box of rows Hkv * D apart). Every key is an own key of exactly
  one tile when the queries are the keys (q_offset = 0, Tk = tiles * block_q), so each row of dK
  and dV is written once; this replaces the unfused path's float32 outputs and the XLA fusion
  that adds them (which reads four float32 (B, Hb, Tk, D) arrays).

Each output element is written once, by one CTA; no atomics, so results are bitwise
reproducible. With ``own_keys=False`` the kernel only computes dq and the own outputs are zeros.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from pallas_kernels.mosaic_gpu.common import (
    SMEM_BYTES, backward_rows, check_backward_tiles, check_keys_and_table, cp_async_helpers, kv_rows, load_whole,
)

_LOG2E = math.log2(math.e)
_SMEM_ALIGN = 1024  # Pallas Mosaic GPU aligns every shared-memory buffer to this
_REDUCTION_SCRATCH = 128 * 4 * 4  # CompilerParams.reduction_scratch_bytes default (dbias sums)
_MAX_STEPS = 256


def _aligned(nbytes):
    return -(-nbytes // _SMEM_ALIGN) * _SMEM_ALIGN


def shared_memory_bytes(*, rows, head_dim, itemsize, block_k, num_stages, table_steps, own_keys, key_sums=False):
    """Upper bound of the kernel's shared memory, each buffer aligned as Pallas allocates it."""
    tile = _aligned(rows * head_dim * itemsize)
    total = 2 * tile  # Q (reused for dq) and dO
    total += 2 * _aligned(num_stages * block_k * head_dim * itemsize)  # K and V slots
    total += _aligned(table_steps * block_k * 4) + 3 * _aligned(num_stages * block_k * 4)  # table, bias/start/end
    total += 2 * _aligned(rows * 4) + _SMEM_ALIGN  # lse, delta, barrier
    if own_keys:
        total += 2 * _aligned(rows * block_k * itemsize)  # P, dS
        total += _aligned(block_k * head_dim * 4) + _aligned(block_k * 4)  # float32 staging, dbias
        total += _aligned(_REDUCTION_SCRATCH)
    if key_sums:
        total += _aligned(block_k * head_dim * itemsize) + _aligned(block_k * 4) + _SMEM_ALIGN  # out, mask, barrier
    return total


def check_arguments(q_tiles, do_tiles, lse, delta, k, v, bias, start, end, table, *, block_q, block_k,
                    num_stages, own_keys, kv_sequence=False, q_sequence=False, key_sums=False, q_offset=0):
    """Raise a ValueError naming the limit for a call this kernel does not take (no GPU needed);
    else return its sizes. ``key_sums``: the call also finishes dK and dV (module docstring), which
    needs own keys, k in (B, Tk, Hkv, D), one bias head per kv head, q_offset = 0 and
    Tk = tiles * block_q."""
    dims = check_backward_tiles(q_tiles, do_tiles, lse, delta, k, v, block_q=block_q, kv_sequence=kv_sequence,
                                q_sequence=q_sequence)
    batch, bias_heads, tiles, rows, head_dim = (dims[n] for n in ("batch", "bias_heads", "tiles", "rows", "head_dim"))
    kv_len = dims["kv_len"]
    if block_q % 8:
        raise ValueError(f"block_q must be a multiple of 8 dividing rows={rows}, got {block_q}")
    if block_k != 64:
        raise ValueError(f"only block_k=64 is supported, got {block_k}")
    check_keys_and_table(bias, start, end, table, batch=batch, bias_heads=bias_heads, tiles=tiles, kv_len=kv_len,
                         multiple=block_k)
    if num_stages < 2:
        raise ValueError(f"num_stages must be at least 2, got {num_stages}")
    table_steps = max(table.shape[-1] // block_k, 1)
    own_steps = -(-block_q // block_k) if own_keys else 0
    if table_steps + own_steps > _MAX_STEPS:
        raise ValueError(f"at most {_MAX_STEPS} key steps (W + own keys <= {_MAX_STEPS * block_k}), "
                         f"got {table_steps + own_steps}")
    if key_sums:
        needs = {"own_keys": own_keys, "kv_sequence": kv_sequence,
                 "one bias head per kv head": bias_heads == dims["kv_heads"], "q_offset = 0": q_offset == 0,
                 f"Tk = tiles * block_q = {tiles * block_q}": kv_len == tiles * block_q}
        missing = [name for name, ok in needs.items() if not ok]
        if missing:
            raise ValueError(f"key_sums needs {', '.join(missing)}")
    smem = shared_memory_bytes(
        rows=rows, head_dim=head_dim, itemsize=jnp.dtype(q_tiles.dtype).itemsize, block_k=block_k,
        num_stages=num_stages, table_steps=table_steps, own_keys=own_keys, key_sums=key_sums,
    )
    if smem > SMEM_BYTES:
        raise ValueError(f"needs {smem} bytes of shared memory (> {SMEM_BYTES}): lower W or num_stages")
    return dict(dims, table_steps=table_steps, own_steps=own_steps)


@functools.lru_cache(maxsize=None)
def _build(*, batch, bias_heads, tiles, rows, head_dim, kv_heads, kv_len, dtype, block_q, block_k, scale,
           q_offset, num_stages, table_steps, own_steps, kv_sequence=False, q_sequence=False, key_sums=False):
    """The Mosaic GPU kernel; inputs (q, do, lse, delta, k, v, table (slabs, table_steps, block_k),
    bias f32, start, end[, carried dk, dv f32 (B, Hb, Tk, D), carried mask f32 (B, Hb, Tk)]);
    outputs dq and, when own_steps, dk_own, dv_own (or, with key_sums, dk, dv in k's dtype and
    (B, Tk, Hkv, D) layout), db_own."""
    import jax.experimental.pallas as pl
    from jax.experimental.pallas import mosaic_gpu as plgpu

    per_position = rows // block_q
    group = bias_heads // kv_heads
    stages = num_stages
    steps = own_steps + table_steps
    own_keys = own_steps > 0
    transforms = (plgpu.TilingTransform((8, 128 // jnp.dtype(dtype).itemsize)), plgpu.SwizzleTransform(128))
    f32_transforms = (plgpu.TilingTransform((8, 32)), plgpu.SwizzleTransform(128))
    ops = cp_async_helpers(plgpu, transforms, kv_len=kv_len)
    commit, wait, barrier = ops["commit"], ops["wait"], ops["barrier"]
    wgmma_layout = plgpu.Layout.WGMMA
    col_layout = plgpu.Layout.WGMMA.reduce(0)
    row_layout = plgpu.Layout.WGMMA.reduce(1)
    key_layout = row_layout  # one value per row (key) of a (64, D) key-major result
    qk_scale = float(scale) * _LOG2E
    shape = (rows, block_k)

    def body(*refs):
        if key_sums:
            (q_ref, do_ref, lse_ref, delta_ref, k_ref, v_ref, tbl_ref, bias_ref, start_ref, end_ref,
             dk_sums_ref, dv_sums_ref, carried_ref, dq_ref, dk_ref, dv_ref, db_ref, *scratch) = refs
            (q_smem, do_smem, k_smem, v_smem, tbl_smem, kb_smem, lo_smem, hi_smem, lse_smem, delta_smem, bar,
             p_smem, ds_smem, stage_smem, db_smem, out_smem, carried_smem, sums_bar) = scratch
        elif own_keys:
            (q_ref, do_ref, lse_ref, delta_ref, k_ref, v_ref, tbl_ref, bias_ref, start_ref, end_ref,
             dq_ref, dk_ref, dv_ref, db_ref, *scratch) = refs
            (q_smem, do_smem, k_smem, v_smem, tbl_smem, kb_smem, lo_smem, hi_smem, lse_smem, delta_smem, bar,
             p_smem, ds_smem, stage_smem, db_smem) = scratch
        else:
            (q_ref, do_ref, lse_ref, delta_ref, k_ref, v_ref, tbl_ref, bias_ref, start_ref, end_ref,
             dq_ref, *scratch) = refs
            (q_smem, do_smem, k_smem, v_smem, tbl_smem, kb_smem, lo_smem, hi_smem, lse_smem, delta_smem,
             bar) = scratch
        n = lax.axis_index("tile")
        b = lax.axis_index("batch")
        hb = lax.axis_index("head")
        kvh = lax.div(hb, jnp.int32(group))
        t0 = n * block_q
        slab = (b * bias_heads + hb) * tiles + n
        tile = functools.partial(backward_rows, b=b, hb=hb, n=n, rows=rows, q_sequence=q_sequence)
        plgpu.copy_gmem_to_smem(tile(q_ref), q_smem, bar)
        plgpu.copy_gmem_to_smem(tile(do_ref), do_smem, bar)
        plgpu.copy_gmem_to_smem(lse_ref.at[b, hb, n], lse_smem, bar)
        plgpu.copy_gmem_to_smem(delta_ref.at[b, hb, n], delta_smem, bar)
        plgpu.copy_gmem_to_smem(tbl_ref.at[slab], tbl_smem, bar)
        plgpu.barrier_wait(bar)

        k_src, v_src = (kv_rows(ref, b, kvh, kv_sequence=kv_sequence) for ref in (k_ref, v_ref))
        meta_src = (bias_ref.at[b, hb], start_ref.at[b, hb], end_ref.at[b, hb])

        def issue(step):
            """Gather step ``step``'s keys into its slot: own steps (static) come first, then table steps."""
            slot = step % stages if isinstance(step, int) else lax.rem(step, stages)
            kv = (k_src, v_src, k_smem.at[slot], v_smem.at[slot])
            meta = tuple(zip(meta_src, (kb_smem.at[slot], lo_smem.at[slot], hi_smem.at[slot])))
            if isinstance(step, int) and step < own_steps:
                first_row = step * block_k
                ops["gather_own"](
                    jnp.asarray(q_offset + t0 + first_row, jnp.int32), jnp.asarray(block_q - first_row, jnp.int32),
                    *kv, *meta,
                )
            else:
                ops["gather_table"](tbl_smem.at[step - own_steps], *kv, *meta)

        def next_step(step):
            """Wait for step's slot; issue step + stages - 1 (its slot was read by step - 1)."""
            barrier()  # every thread is done reading the slot that the next issue overwrites
            nxt = step + stages - 1
            if isinstance(step, int):
                if nxt < steps:
                    issue(nxt)
            else:
                pl.when(nxt < steps)(lambda: issue(nxt))
            commit()
            wait(stages - 1)

        for s in range(stages - 1):  # always stages - 1 groups, so wait(stages - 1) is exact
            if s < steps:
                issue(s)
            commit()

        position = q_offset + t0 + lax.div(
            plgpu.broadcasted_iota(jnp.int32, shape, 0, layout=wgmma_layout), jnp.int32(per_position)
        )
        lse = load_whole(plgpu, lse_smem, row_layout) * _LOG2E
        delta = load_whole(plgpu, delta_smem, row_layout)

        def probabilities(slot):
            """P and dS (rows, 64) float32 of the keys in ``slot``."""

            def products(s_ref, dp_ref):
                plgpu.wgmma(s_ref, q_smem, k_smem.at[slot].transpose((1, 0)))
                plgpu.wgmma(dp_ref, do_smem, v_smem.at[slot].transpose((1, 0)))
                return s_ref[...], dp_ref[...]

            s, dp = pl.run_scoped(products, plgpu.ACC(shape, jnp.float32), plgpu.ACC(shape, jnp.float32))
            key_bias = load_whole(plgpu, kb_smem.at[slot], col_layout) * _LOG2E
            lo = load_whole(plgpu, lo_smem.at[slot], col_layout)
            hi = load_whole(plgpu, hi_smem.at[slot], col_layout)
            per_key = lambda x: lax.broadcast_in_dim(x, shape, [1])
            per_row = lambda x: lax.broadcast_in_dim(x, shape, [0])
            keep = (per_key(lo) <= position) & (position < per_key(hi))
            p = jnp.where(keep, jnp.exp2(s * qk_scale + per_key(key_bias) - per_row(lse)), 0.0)
            ds = p * (dp - per_row(delta))
            return p, ds

        def accumulate_dq(dq, ds_operand, slot):
            def update(acc_ref):
                plgpu.wgmma(acc_ref, ds_operand, k_smem.at[slot])

            return pl.run_state(update)(plgpu.ACC.init(dq))

        def store_own(value, out_ref, first, count):
            """value (64, D) float32 -> out_ref rows [first, first + count) via the staging buffer."""
            plgpu.wait_smem_to_gmem(0, wait_read_only=True)  # the previous store has read the buffer
            stage_smem[...] = value
            plgpu.commit_smem()
            plgpu.copy_smem_to_gmem(stage_smem.at[pl.ds(0, count)], out_ref.at[b, hb, n, pl.ds(first, count)])

        def finish_own(value, sums_ref, out_ref, first, count):
            """key_sums: value (64, D) float32 of own keys t0 + [first, first + count), plus the
            key-major sums where the key was carried, -> out_ref's (B, Tk, Hkv, D) rows in k's dtype."""
            rows_of = lambda ref: ref.at[b, hb, pl.ds(t0 + first, count)]
            barrier()  # every thread has read the staging buffer's previous rows
            plgpu.copy_gmem_to_smem(rows_of(sums_ref), stage_smem.at[pl.ds(0, count)], sums_bar)
            plgpu.copy_gmem_to_smem(rows_of(carried_ref), carried_smem.at[pl.ds(0, count)], sums_bar)
            plgpu.barrier_wait(sums_bar)
            sums = load_whole(plgpu, stage_smem, wgmma_layout)
            carried = lax.broadcast_in_dim(load_whole(plgpu, carried_smem, key_layout), sums.shape, [0])
            total = value + jnp.where(carried > 0, sums, 0.0)
            plgpu.wait_smem_to_gmem(0, wait_read_only=True)  # the previous store has read the buffer
            out_smem[...] = total.astype(dtype)
            plgpu.commit_smem()
            plgpu.copy_smem_to_gmem(out_smem.at[pl.ds(0, count)], out_ref.at[b, pl.ds(t0 + first, count), kvh])

        dq = plgpu.layout_cast(jnp.full((rows, head_dim), 0, jnp.float32), wgmma_layout)
        for step in range(own_steps):  # own keys q_offset + t0 + [first, first + count)
            slot = step % stages
            first = step * block_k
            count = min(block_k, block_q - first)
            next_step(step)
            p, ds = probabilities(slot)
            p_smem[...] = p.astype(dtype)
            ds_smem[...] = ds.astype(dtype)
            db_smem[...] = ds.sum(axis=0)
            plgpu.commit_smem()
            plgpu.copy_smem_to_gmem(db_smem.at[pl.ds(0, count)], db_ref.at[b, hb, n, pl.ds(first, count)])

            def key_major(weights_smem, operand_smem):
                def product(acc_ref):
                    plgpu.wgmma(acc_ref, weights_smem.transpose((1, 0)), operand_smem)
                    return acc_ref[...]

                return pl.run_scoped(product, plgpu.ACC((block_k, head_dim), jnp.float32))

            if key_sums:
                finish_own(key_major(p_smem, do_smem), dv_sums_ref, dv_ref, first, count)
                finish_own(key_major(ds_smem, q_smem) * scale, dk_sums_ref, dk_ref, first, count)
            else:
                store_own(key_major(p_smem, do_smem), dv_ref, first, count)
                store_own(key_major(ds_smem, q_smem) * scale, dk_ref, first, count)
            dq = accumulate_dq(dq, ds_smem, slot)

        def table_step(step, dq):
            slot = lax.rem(step, stages)
            next_step(step)
            _, ds = probabilities(slot)
            return accumulate_dq(dq, ds.astype(dtype), slot)

        dq = lax.fori_loop(own_steps, steps, table_step, dq)
        wait(0)
        q_smem[...] = (dq * scale).astype(dtype)
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(q_smem, tile(dq_ref))
        plgpu.wait_smem_to_gmem(0)

    scratch = [
        plgpu.SMEM((rows, head_dim), dtype, transforms=transforms),  # Q, then dq
        plgpu.SMEM((rows, head_dim), dtype, transforms=transforms),  # dO
        plgpu.SMEM((stages, block_k, head_dim), dtype, transforms=transforms),
        plgpu.SMEM((stages, block_k, head_dim), dtype, transforms=transforms),
        plgpu.SMEM((table_steps, block_k), jnp.int32),
        plgpu.SMEM((stages, block_k), jnp.float32),
        plgpu.SMEM((stages, block_k), jnp.int32),
        plgpu.SMEM((stages, block_k), jnp.int32),
        plgpu.SMEM((rows,), jnp.float32),
        plgpu.SMEM((rows,), jnp.float32),
        plgpu.Barrier(num_arrivals=5),
    ]
    tile_shape = (batch, bias_heads, tiles)
    dq_shape = (batch, tiles * rows, bias_heads, head_dim) if q_sequence else tile_shape + (rows, head_dim)
    out_type = [jax.ShapeDtypeStruct(dq_shape, dtype)]
    if own_keys:
        scratch += [
            plgpu.SMEM(shape, dtype, transforms=transforms),  # P
            plgpu.SMEM(shape, dtype, transforms=transforms),  # dS
            plgpu.SMEM((block_k, head_dim), jnp.float32, transforms=f32_transforms),  # dV / dK staging
            plgpu.SMEM((block_k,), jnp.float32),  # dbias
        ]
        own_shape = tile_shape + (block_q, head_dim)
        key_grads = jax.ShapeDtypeStruct((batch, kv_len, kv_heads, head_dim), dtype) if key_sums else (
            jax.ShapeDtypeStruct(own_shape, jnp.float32))
        out_type += [key_grads, key_grads, jax.ShapeDtypeStruct(tile_shape + (block_q,), jnp.float32)]
    if key_sums:
        scratch += [
            plgpu.SMEM((block_k, head_dim), dtype, transforms=transforms),  # finished dK / dV rows
            plgpu.SMEM((block_k,), jnp.float32),  # carried mask
            plgpu.Barrier(num_arrivals=2),
        ]
    return plgpu.kernel(
        body,
        out_type=tuple(out_type),
        scratch_types=scratch,
        grid=(tiles, batch, bias_heads),
        grid_names=("tile", "batch", "head"),
        compiler_params=plgpu.CompilerParams(approx_math=True),
    )


def dma_backward_queries_mosaic(
    q_tiles, do_tiles, lse, delta, k, v, bias, start, end, table, *, scale, block_q, block_k, q_offset,
    own_keys=True, num_stages=2, kv_sequence=False, q_sequence=False, key_sums=None,
):
    """Pass 1 of the DMA backward (Mosaic GPU, sm_90): dq, and dk, dv, dbias of each tile's own keys.

    Args:
      q_tiles, do_tiles: (B, Hb, tiles, rows, D), bf16 or f16, D in {64, 128}; row r of tile n is
        query position ``q_offset + n * block_q + r // R``, R = rows // block_q; rows in {64, 128}.
      lse: float32 (B, Hb, tiles, rows), natural log of the forward's softmax sums (+inf for rows
        that keep no key). delta: float32 (B, Hb, tiles, rows), rowsum(dO * O).
      k, v: (B, Hkv, Tk, D), or (B, Tk, Hkv, D) with ``kv_sequence``; bias head hb reads kv head
        ``hb // (Hb // Hkv)``.
      bias: float (B, Hb, Tk). start, end: int32 (B, Hb, Tk): query t keeps key j iff
        ``start[j] <= t < end[j]`` (and 0 <= j < Tk).
      table: int32 (B, Hb, tiles, W), W a multiple of block_k: carried key indices, -1 (or >= Tk)
        = empty.
      scale: logit scale. block_q: positions per tile (a multiple of 8). block_k: must be 64.
      q_offset: sequence position of query 0.
      own_keys: also visit the tile's own keys ``[q_offset + n * block_q, + block_q)`` and write
        their gradients from this tile.
      kv_sequence: k and v are (B, Tk, Hkv, D). q_sequence: q, dO (and dq) are (B, T, Hb, D),
        one query head per bias head (R = 1), tile n being rows ``n * block_q ...`` of each head.
      num_stages: shared-memory slots of the key/value pipeline (>= 2).
      key_sums: None, or (dk, dv, carried) of ``backward_slots.carried_key_sums``: the key-major
        pass' float32 sums (B, Hb, Tk, D) and which keys it carried (B, Hb, Tk); the call then
        finishes dK and dV (module docstring; ``check_arguments`` names what it needs).

    Returns:
      dq_tiles (like q_tiles); dk_own, dv_own float32 (B, Hb, tiles, block_q, D) and db_own float32
      (B, Hb, tiles, block_q) for the keys at sequence positions ``q_offset + n * block_q + i``
      (zeros when ``own_keys`` is False; zeros for own keys >= Tk). dk_own and dq include the scale.
      With ``key_sums``, dk and dv in k's dtype and (B, Tk, Hkv, D) layout (own plus carried
      sums: the whole gradient of each key) take dk_own's and dv_own's places.
    """
    dims = check_arguments(
        q_tiles, do_tiles, lse, delta, k, v, bias, start, end, table, block_q=block_q, block_k=block_k,
        num_stages=num_stages, own_keys=own_keys, kv_sequence=kv_sequence, q_sequence=q_sequence,
        key_sums=key_sums is not None, q_offset=q_offset,
    )
    batch, bias_heads, tiles = dims["batch"], dims["bias_heads"], dims["tiles"]
    table_steps = dims["table_steps"]
    if key_sums is not None:
        sums_shape = (batch, bias_heads, dims["kv_len"], dims["head_dim"])
        got = tuple(tuple(x.shape) for x in key_sums)
        if got != (sums_shape, sums_shape, sums_shape[:3]):
            raise ValueError(f"key_sums must be dk, dv {sums_shape} and carried {sums_shape[:3]}, got {got}")
    call = _build(
        batch=batch, bias_heads=bias_heads, tiles=tiles, rows=dims["rows"], head_dim=dims["head_dim"],
        kv_heads=dims["kv_heads"], kv_len=dims["kv_len"], dtype=jnp.dtype(q_tiles.dtype), block_q=block_q,
        block_k=block_k, scale=float(scale), q_offset=int(q_offset), num_stages=num_stages,
        table_steps=table_steps, own_steps=dims["own_steps"], kv_sequence=kv_sequence, q_sequence=q_sequence,
        key_sums=key_sums is not None,
    )
    if table.shape[-1] == 0:
        table = jnp.full(table.shape[:3] + (block_k,), -1, jnp.int32)
    table = table.astype(jnp.int32).reshape(batch * bias_heads * tiles, table_steps, block_k)
    outputs = call(
        q_tiles, do_tiles, lse.astype(jnp.float32), delta.astype(jnp.float32), k, v, table,
        bias.astype(jnp.float32), start.astype(jnp.int32), end.astype(jnp.int32),
        *(() if key_sums is None else (key_sums[0], key_sums[1], key_sums[2].astype(jnp.float32))),
    )
    if own_keys:
        return tuple(outputs)
    (dq,) = outputs
    own = (batch, bias_heads, tiles, block_q)
    zeros = jnp.zeros(own + (dims["head_dim"],), jnp.float32)
    return dq, zeros, zeros, jnp.zeros(own, jnp.float32)
