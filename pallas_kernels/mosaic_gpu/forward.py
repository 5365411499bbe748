"""Forward DMA kernel for Hopper in Pallas Mosaic GPU: gathered key tiles, online softmax.

Contract: ``pallas_kernels.gpu.forward.dma_forward(..., bias_heads=Hb)`` in its sequence layout
(see ``dma_forward_mosaic``). Reference: ``pallas_kernels.gpu.reference.interval_attention_reference``.

Design (one CTA = one warpgroup = one (query tile, batch, bias head); grid (tiles, B, Hb)):

- The CTA loads with TMA, on one mbarrier, its R query heads (R boxes of ``block_q x D``: the
  tile's rows are kept head-major in shared memory, row ``i * block_q + p`` = position p, head
  i; the wrapper transposes lse back to position-major) and its table row (``W/64 x 64``).
- It then visits ``W / 64`` table steps and (own_keys) ``ceil(block_q / 64)`` own-key steps of
  64 keys. Key and value rows are gathered with ``cp.async`` (16 bytes a thread, 8 per thread
  per step for D=128) straight into the (8, 64)-tiled, 128B-swizzled layout that wgmma reads,
  into one of ``num_stages`` slots: step s + stages - 1 is in flight while step s computes
  (cp.async groups; wait_group, proxy fence and a warpgroup barrier before the wgmma). The
  same copies fetch each key's bias, start and end (4 bytes each) into per-slot rows. Absent
  keys (-1 or >= Tk; own keys past block_q) copy nothing and are zero-filled (src-size 0), so
  their key/value rows are 0 and their live range [0, 0) keeps no query.
- QK^T and PV are warpgroup MMAs (Q and K/V from shared memory, P from registers); the exact
  live-range mask and an online softmax (base 2) run in registers in the WGMMA layout.
- Output rows go back with TMA (R boxes of ``block_q x D``), lse (natural log) with one copy.

Why cp.async and not TMA for the gather: sm_90 has no TMA row gather (Mosaic GPU's gather TMA
is ``tile::gather4``, sm_100 only), and Pallas' ``copy_gmem_to_smem`` cannot target one row of
a tiled+swizzled buffer (slices of tiled dims must be multiples of the 8-row tile) and arrives
on its barrier once per copy (128 threads x 128 copies a step). So the gather is written at the
Mosaic GPU level with ``plgpu.inline_mgpu``.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from pallas_kernels.mosaic_gpu.common import (
    SMEM_BYTES, check_keys_and_table, cp_async_helpers, kv_dims, kv_rows, load_whole,
)
from pallas_kernels.shared import MASKED

_LOG2E = math.log2(math.e)
_LN2 = math.log(2.0)
_INT_MIN = -(2**31)


def check_arguments(q, k, v, bias, start, end, table, *, block_q, block_k, bias_heads, num_stages, own_keys,
                    kv_sequence=False):
    """Raise a ValueError naming the limit for a call this kernel does not take (no GPU needed);
    else return its sizes. ``dma_jax.ops.pallas_gpu`` asks it where the forward backend is "auto"."""
    if bias_heads is None:
        raise ValueError("dma_forward_mosaic needs the sequence layout: pass bias_heads=Hb")
    if q.ndim != 4:
        raise ValueError(f"q must be (B, T, H, D) (sequence layout), got shape {q.shape}")
    batch, q_len, heads, head_dim = q.shape
    kv_heads, kv_len = kv_dims(k, v, kv_sequence=kv_sequence)
    if k.shape[0] != batch or k.shape[-1] != head_dim:
        raise ValueError(f"k shape {k.shape} does not match q shape {q.shape}")
    if jnp.dtype(q.dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        raise ValueError(f"only bfloat16 and float16 are supported, got {q.dtype}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if head_dim not in (64, 128):
        raise ValueError(f"head dim must be 64 or 128, got {head_dim}")
    if block_k != 64:
        raise ValueError(f"only block_k=64 is supported, got {block_k}")
    if heads % bias_heads or bias_heads % kv_heads:
        raise ValueError(f"need H % Hb == 0 and Hb % Hkv == 0, got {heads=}, {bias_heads=}, {kv_heads=}")
    per_bias = heads // bias_heads
    rows = block_q * per_bias
    if rows not in (64, 128):
        raise ValueError(f"rows = block_q * R must be 64 or 128, got {block_q} * {per_bias} = {rows}")
    if block_q % 8:
        raise ValueError(f"block_q must be a multiple of 8, got {block_q}")
    if q_len % block_q:
        raise ValueError(f"q's length {q_len} must be a multiple of block_q={block_q}")
    tiles = q_len // block_q
    check_keys_and_table(bias, start, end, table, batch=batch, bias_heads=bias_heads, tiles=tiles, kv_len=kv_len,
                         multiple=block_k)
    if num_stages < 2:
        raise ValueError(f"num_stages must be at least 2, got {num_stages}")
    table_steps = max(table.shape[-1] // block_k, 1)
    steps = table.shape[-1] // block_k + (-(-block_q // block_k) if own_keys else 0)
    if steps == 0:
        raise ValueError("no keys to visit: empty table and own_keys=False")
    if max(steps, table_steps) > 256:
        raise ValueError(f"at most 256 key steps (W + own keys <= {256 * block_k}), got {steps}")
    itemsize = jnp.dtype(q.dtype).itemsize
    smem = (rows + 2 * num_stages * block_k) * head_dim * itemsize + rows * 4 + 64
    smem += table_steps * block_k * 4 + 3 * num_stages * block_k * 4  # table row + per-slot bias / range
    if smem > SMEM_BYTES:
        raise ValueError(f"needs {smem} bytes of shared memory (> {SMEM_BYTES}): lower W or num_stages")
    return dict(
        batch=batch, q_len=q_len, heads=heads, head_dim=head_dim, kv_heads=kv_heads, kv_len=kv_len,
        per_bias=per_bias, rows=rows, tiles=tiles,
    )


@functools.lru_cache(maxsize=None)
def _build(*, batch, q_len, heads, head_dim, kv_heads, kv_len, bias_heads, dtype, block_q, block_k, steps,
           scale, q_offset, num_stages, table_steps, own_keys=True, kv_sequence=False):
    """The Mosaic GPU kernel; inputs (q, k, v, table (slabs, table_steps, block_k), bias f32, start, end)."""
    import jax.experimental.pallas as pl
    from jax.experimental.pallas import mosaic_gpu as plgpu

    per_bias = heads // bias_heads
    rows = block_q * per_bias
    tiles = q_len // block_q
    group = bias_heads // kv_heads
    stages = num_stages
    transforms = (plgpu.TilingTransform((8, 128 // jnp.dtype(dtype).itemsize)), plgpu.SwizzleTransform(128))
    ops = cp_async_helpers(plgpu, transforms, kv_len=kv_len)
    commit, wait, barrier = ops["commit"], ops["wait"], ops["barrier"]
    wgmma_layout = plgpu.Layout.WGMMA
    col_layout = plgpu.Layout.WGMMA.reduce(0)
    row_layout = plgpu.Layout.WGMMA.reduce(1)
    qk_scale = float(scale) * _LOG2E

    def body(*refs):
        (q_ref, k_ref, v_ref, tbl_ref, bias_ref, start_ref, end_ref, o_ref, lse_ref,
         q_smem, k_smem, v_smem, tbl_smem, kb_smem, lo_smem, hi_smem, lse_smem, bar) = refs
        n = lax.axis_index("tile")
        b = lax.axis_index("batch")
        hb = lax.axis_index("head")
        kvh = lax.div(hb, jnp.int32(group))
        t0 = n * block_q
        slab = (b * bias_heads + hb) * tiles + n
        for i in range(per_bias):
            plgpu.copy_gmem_to_smem(
                q_ref.at[b, pl.ds(t0, block_q), hb * per_bias + i], q_smem.at[pl.ds(i * block_q, block_q)], bar
            )
        plgpu.copy_gmem_to_smem(tbl_ref.at[slab], tbl_smem, bar)
        plgpu.barrier_wait(bar)

        k_src, v_src = (kv_rows(ref, b, kvh, kv_sequence=kv_sequence) for ref in (k_ref, v_ref))
        meta_src = (bias_ref.at[b, hb], start_ref.at[b, hb], end_ref.at[b, hb])

        def issue(step):
            static = isinstance(step, int)
            slot = step % stages if static else lax.rem(step, stages)
            kv = (k_src, v_src, k_smem.at[slot], v_smem.at[slot])
            meta = tuple(zip(meta_src, (kb_smem.at[slot], lo_smem.at[slot], hi_smem.at[slot])))

            def table():
                ops["gather_table"](tbl_smem.at[step], *kv, *meta)

            def own():
                first_row = (step - table_steps) * block_k
                ops["gather_own"](
                    jnp.asarray(q_offset + t0 + first_row, jnp.int32), jnp.asarray(block_q - first_row, jnp.int32),
                    *kv, *meta,
                )

            if static:
                table() if step < table_steps else own()
            else:
                pl.when(step < table_steps)(table)
                if own_keys:
                    pl.when(step >= table_steps)(own)

        for s in range(stages - 1):  # always stages - 1 groups, so wait(stages - 1) is exact
            if s < steps:
                issue(s)
            commit()

        position = (
            q_offset + t0 + lax.rem(plgpu.broadcasted_iota(jnp.int32, (rows, block_k), 0, layout=wgmma_layout), block_q)
        )

        def step_fn(step, carry):
            acc, m_i, l_i = carry
            slot = lax.rem(step, stages)
            barrier()  # every thread is done reading the slot that the next issue overwrites
            nxt = step + stages - 1

            @pl.when(nxt < steps)
            def _():
                issue(nxt)

            commit()
            wait(stages - 1)

            def qk(acc_ref):
                plgpu.wgmma(acc_ref, q_smem, k_smem.at[slot].transpose((1, 0)))
                return acc_ref[...]

            s = pl.run_scoped(qk, plgpu.ACC((rows, block_k), jnp.float32))
            key_bias = load_whole(plgpu, kb_smem.at[slot], col_layout) * _LOG2E
            lo = load_whole(plgpu, lo_smem.at[slot], col_layout)
            hi = load_whole(plgpu, hi_smem.at[slot], col_layout)
            shape = (rows, block_k)
            keep = (lax.broadcast_in_dim(lo, shape, [1]) <= position) & (position < lax.broadcast_in_dim(hi, shape, [1]))
            logits = jnp.where(keep, s * qk_scale + lax.broadcast_in_dim(key_bias, shape, [1]), MASKED)
            m_new = jnp.maximum(m_i, logits.max(axis=1))
            # No second select: a dropped key's logit is MASKED, so exp2(MASKED - m) is 0 for any
            # kept logit m. Only rows that kept nothing yet (m = MASKED) subtract 0 instead.
            m_sub = jnp.where(m_new == MASKED, 0.0, m_new)
            p = jnp.exp2(logits - lax.broadcast_in_dim(m_sub, shape, [0]))
            alpha = jnp.exp2(m_i - m_new)
            l_i = l_i * alpha + p.sum(axis=1)
            acc = acc * lax.broadcast_in_dim(alpha, acc.shape, [0])

            def pv(acc_ref):
                plgpu.wgmma(acc_ref, p.astype(dtype), v_smem.at[slot])

            acc = pl.run_state(pv)(plgpu.ACC.init(acc))
            return acc, m_new, l_i

        carry = (
            plgpu.layout_cast(jnp.full((rows, head_dim), 0, jnp.float32), wgmma_layout),
            plgpu.layout_cast(jnp.full((rows,), MASKED, jnp.float32), row_layout),
            plgpu.layout_cast(jnp.full((rows,), 0, jnp.float32), row_layout),
        )
        acc, m_i, l_i = lax.fori_loop(0, steps, step_fn, carry)
        wait(0)
        empty = l_i == 0.0
        safe_sum = jnp.where(empty, 1.0, l_i)
        inv = jnp.where(empty, 0.0, 1.0 / safe_sum)
        out = acc * lax.broadcast_in_dim(inv, acc.shape, [0])
        q_smem[...] = out.astype(dtype)
        lse_smem[...] = jnp.where(empty, jnp.inf, m_i * _LN2 + jnp.log(safe_sum))
        plgpu.commit_smem()
        for i in range(per_bias):
            plgpu.copy_smem_to_gmem(
                q_smem.at[pl.ds(i * block_q, block_q)],
                o_ref.at[b, pl.ds(t0, block_q), hb * per_bias + i],
                commit_group=False,
            )
        plgpu.copy_smem_to_gmem(lse_smem, lse_ref.at[slab], commit_group=False)
        plgpu.commit_smem_to_gmem_group()
        plgpu.wait_smem_to_gmem(0)

    scratch = [
        plgpu.SMEM((rows, head_dim), dtype, transforms=transforms),
        plgpu.SMEM((stages, block_k, head_dim), dtype, transforms=transforms),
        plgpu.SMEM((stages, block_k, head_dim), dtype, transforms=transforms),
        plgpu.SMEM((table_steps, block_k), jnp.int32),
        plgpu.SMEM((stages, block_k), jnp.float32),
        plgpu.SMEM((stages, block_k), jnp.int32),
        plgpu.SMEM((stages, block_k), jnp.int32),
        plgpu.SMEM((rows,), jnp.float32),
        plgpu.Barrier(num_arrivals=per_bias + 1),
    ]
    return plgpu.kernel(
        body,
        out_type=(
            jax.ShapeDtypeStruct((batch, q_len, heads, head_dim), dtype),
            jax.ShapeDtypeStruct((batch * bias_heads * tiles, rows), jnp.float32),
        ),
        scratch_types=scratch,
        grid=(tiles, batch, bias_heads),
        grid_names=("tile", "batch", "head"),
        compiler_params=plgpu.CompilerParams(approx_math=True),
    )


def dma_forward_mosaic(
    q, k, v, bias, start, end, table, *, scale, block_q, block_k, q_offset, bias_heads, own_keys=True,
    num_stages=2, kv_sequence=False,
):
    """Forward kernel (Mosaic GPU, sm_90), sequence layout of ``dma_forward``.

    Args:
      q: (B, tiles * block_q, H, D), H = Hb * R; bf16 or f16; D in {64, 128}.
      k, v: (B, Hkv, Tk, D), or (B, Tk, Hkv, D) with ``kv_sequence``; bias head hb reads kv head
        ``hb // (Hb // Hkv)``.
      bias: float (B, Hb, Tk). start, end: int32 (B, Hb, Tk): query t keeps key j iff
        ``start[j] <= t < end[j]`` (and 0 <= j < Tk).
      table: int32 (B, Hb, tiles, W), W a multiple of block_k: carried key indices, -1 = empty.
      scale: logit scale. block_q: positions per tile, rows = block_q * R must be 64 or 128.
      block_k: must be 64. q_offset: sequence position of query 0.
      bias_heads: Hb (required: only the sequence layout is supported).
      own_keys: also visit the tile's own keys ``[q_offset + n * block_q, + block_q)``.
      num_stages: shared-memory slots of the key/value pipeline (>= 2).

    Returns:
      out (B, tiles * block_q, H, D) in q's dtype; lse float32 (B, Hb, tiles, rows) in natural
      log, rows position-major (row r = position r // R, head hb * R + r % R), +inf (and out 0)
      on rows that keep no key.
    """
    dims = check_arguments(
        q, k, v, bias, start, end, table, block_q=block_q, block_k=block_k, bias_heads=bias_heads,
        num_stages=num_stages, own_keys=own_keys, kv_sequence=kv_sequence,
    )
    tiles, per_bias, rows = dims["tiles"], dims["per_bias"], dims["rows"]
    batch, kv_len = dims["batch"], dims["kv_len"]
    common = dict(
        batch=batch, q_len=dims["q_len"], heads=dims["heads"], head_dim=dims["head_dim"],
        kv_heads=dims["kv_heads"], kv_len=kv_len, bias_heads=bias_heads, dtype=jnp.dtype(q.dtype),
        block_q=block_q, block_k=block_k, scale=float(scale), q_offset=int(q_offset), num_stages=num_stages,
    )
    if table.shape[-1] == 0:
        table = jnp.full(table.shape[:3] + (block_k,), -1, jnp.int32)
    table_steps = table.shape[-1] // block_k
    steps = table_steps + (-(-block_q // block_k) if own_keys else 0)
    call = _build(**common, steps=steps, table_steps=table_steps, own_keys=own_keys, kv_sequence=kv_sequence)
    table = table.astype(jnp.int32).reshape(batch * bias_heads * tiles, table_steps, block_k)
    out, lse = call(q, k, v, table, bias.astype(jnp.float32), start.astype(jnp.int32), end.astype(jnp.int32))
    # lse rows are head-major in the kernel (row i * block_q + p); the contract is position-major.
    lse = lse.reshape(batch, bias_heads, tiles, per_bias, block_q).swapaxes(-1, -2).reshape(
        batch, bias_heads, tiles, rows
    )
    return out, lse
