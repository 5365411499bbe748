"""Pieces the Mosaic GPU kernels share: the cp.async row gathers into swizzled shared memory,
whole-ref loads that work with JAX 0.10 and 0.11, and the sm_90 shared-memory limit.

Everything here is traced inside a kernel body (``plgpu`` is ``jax.experimental.pallas.mosaic_gpu``,
imported lazily by the callers, so the argument checks run without Mosaic GPU).
"""

from __future__ import annotations

import inspect

WARPGROUP = 128  # threads of one warpgroup: the CTA of every Mosaic GPU kernel here
SMEM_BYTES = 227 * 1024  # sm_90 opt-in maximum of shared memory per block


def kv_dims(k, v, *, kv_sequence: bool) -> tuple[int, int]:
    """(Hkv, Tk) of k and v, which are (B, Tk, Hkv, D) with ``kv_sequence`` (the layout a model
    projects them in) and (B, Hkv, Tk, D) without; raise a ValueError unless both are 4-d and alike."""
    layout = "(B, Tk, Hkv, D)" if kv_sequence else "(B, Hkv, Tk, D)"
    if k.ndim != 4 or v.shape != k.shape:
        raise ValueError(f"k and v must both be {layout}, got {k.shape} and {v.shape}")
    return (k.shape[2], k.shape[1]) if kv_sequence else (k.shape[1], k.shape[2])


def kv_rows(ref, b, kv_head, *, kv_sequence: bool):
    """The (Tk, D) rows of kv head ``kv_head`` of batch row ``b`` of a k or v ref in either layout
    (``kv_dims``); in (B, Tk, Hkv, D) consecutive keys lie Hkv * D elements apart, and the gathers
    of ``cp_async_helpers`` read that stride from the ref."""
    return ref.at[b, :, kv_head] if kv_sequence else ref.at[b, kv_head]


def backward_rows(ref, b, hb, n, *, rows, q_sequence: bool):
    """Tile n of bias head hb of batch row b of q, dO or dq: ``ref.at[b, hb, n]`` (rows x D) in the
    tile layout, or, with ``q_sequence`` (one query head per bias head), the rows positions
    ``n * rows ...`` of head hb of (B, T, H, D), rows H * D apart (one TMA box either way)."""
    import jax.experimental.pallas as pl

    return ref.at[b, pl.ds(n * rows, rows), hb] if q_sequence else ref.at[b, hb, n]


def check_backward_tiles(q_tiles, do_tiles, lse, delta, k, v, *, block_q, kv_sequence=False,
                         q_sequence=False) -> dict:
    """The checks both backward passes share: the tile layout of q, dO, lse and delta (or, with
    ``q_sequence``, q and dO in (B, T, H, D) with H = Hb: one query head per bias head, tiles of
    block_q rows), k and v (in the layout ``kv_sequence`` names, ``kv_dims``), the dtype, the head
    dim, 64- or 128-row tiles that block_q divides, and GQA; raise a ValueError naming the limit,
    else return the sizes (batch, bias_heads, tiles, rows, head_dim, kv_heads, kv_len)."""
    import jax.numpy as jnp

    if q_sequence:
        if q_tiles.ndim != 4:
            raise ValueError(f"q must be (B, T, H, D) (q_sequence), got shape {q_tiles.shape}")
        batch, q_len, bias_heads, head_dim = q_tiles.shape
        if q_len % block_q:
            raise ValueError(f"q's length {q_len} must be a multiple of block_q={block_q}")
        tiles, rows = q_len // block_q, block_q
    elif q_tiles.ndim != 5:
        raise ValueError(f"q_tiles must be (B, Hb, tiles, rows, D) (tile layout), got shape {q_tiles.shape}")
    else:
        batch, bias_heads, tiles, rows, head_dim = q_tiles.shape
    if do_tiles.shape != q_tiles.shape:
        raise ValueError(f"do_tiles shape {do_tiles.shape} must equal q_tiles shape {q_tiles.shape}")
    for name, x in (("lse", lse), ("delta", delta)):
        if x.shape != (batch, bias_heads, tiles, rows):
            raise ValueError(f"{name} must be (B, Hb, tiles, rows) = {(batch, bias_heads, tiles, rows)}, got {x.shape}")
    kv_heads, kv_len = kv_dims(k, v, kv_sequence=kv_sequence)
    if k.shape[0] != batch or k.shape[-1] != head_dim:
        raise ValueError(f"k and v {k.shape} must match q_tiles {q_tiles.shape} in B and D")
    if jnp.dtype(q_tiles.dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        raise ValueError(f"only bfloat16 and float16 are supported, got {q_tiles.dtype}")
    if any(x.dtype != q_tiles.dtype for x in (do_tiles, k, v)):
        raise ValueError(f"q, dO, k, v must share a dtype, got {q_tiles.dtype}, {do_tiles.dtype}, {k.dtype}, {v.dtype}")
    if head_dim not in (64, 128):
        raise ValueError(f"head dim must be 64 or 128, got {head_dim}")
    if rows not in (64, 128):
        raise ValueError(f"rows = block_q * R must be 64 or 128, got {rows}")
    if rows % block_q:
        raise ValueError(f"block_q={block_q} must divide the tile's {rows} rows")
    if bias_heads % kv_heads:
        raise ValueError(f"need Hb % Hkv == 0, got Hb={bias_heads}, Hkv={kv_heads}")
    return dict(batch=batch, bias_heads=bias_heads, tiles=tiles, rows=rows, head_dim=head_dim, kv_heads=kv_heads,
                kv_len=kv_len)


def check_keys_and_table(bias, start, end, table, *, batch, bias_heads, tiles, kv_len, multiple):
    """Raise a ValueError unless bias, start, end are (B, Hb, Tk) and the key table is
    (B, Hb, tiles, W) with W a multiple of ``multiple`` (the argument checks of every kernel here)."""
    for name, x in (("bias", bias), ("start", start), ("end", end)):
        if x.shape != (batch, bias_heads, kv_len):
            raise ValueError(f"{name} must be (B, Hb, Tk) = {(batch, bias_heads, kv_len)}, got {x.shape}")
    if table.ndim != 4 or table.shape[:3] != (batch, bias_heads, tiles):
        raise ValueError(f"table must be (B, Hb, tiles, W) = {(batch, bias_heads, tiles)} + (W,), got {table.shape}")
    if table.shape[-1] % multiple:
        raise ValueError(f"table width {table.shape[-1]} must be a multiple of {multiple} (keys a step)")


def load_whole(plgpu, ref, layout):
    """``plgpu.load`` of a whole ref: JAX 0.10 requires an index argument, which 0.11 deprecates."""
    if inspect.signature(plgpu.load).parameters["idx"].default is inspect.Parameter.empty:
        return plgpu.load(ref, (), layout=layout)
    return plgpu.load(ref, layout=layout)


def cp_async_helpers(plgpu, transforms, *, kv_len):
    """inline_mgpu helpers: the cp.async row gathers, commit, wait(+fence+barrier), barrier.

    Keys are gathered by index into the (8, 64)-tiled, 128B-swizzled layout that wgmma reads:
    16-byte chunk c of row r of a ``block_k x D`` slot lives at byte
    ``(r // 8) * D * 16 + (c // 8) * 1024 + (r % 8) * 128 + ((c % 8) ^ (r % 8)) * 16``.
    Absent keys (index < 0 or >= Tk) copy nothing and are zero-filled (cp.async src-size 0), so
    their key, value, bias and live range [0, 0) are all zero: never kept, never NaN. The source
    rows are a (Tk, D) view (``kv_rows``) whose row stride the gathers take from its type: D, or
    Hkv * D for k and v in their (B, Tk, Hkv, D) layout.
    """
    from jax._src.lib.mlir import ir
    from jax._src.lib.mlir.dialects import arith, llvm, memref, nvvm
    from jax.experimental.mosaic.gpu import utils as mgpu_utils

    def c(value, ty):
        return arith.constant(ty, ir.IntegerAttr.get(ty, value))

    def issue_rows(row_key, k_src, v_src, k_dst, v_dst, meta=None):
        """row_key(row: i32) -> (safe index, present); meta = ((src, dst) x3) or None."""
        i8 = ir.IntegerType.get_signless(8)
        i32 = ir.IntegerType.get_signless(32)
        i64 = ir.IntegerType.get_signless(64)
        src_ty = ir.MemRefType(k_src.type)
        _, head_dim = src_ty.shape
        (row_stride, col_stride), _ = src_ty.get_strides_and_offset()  # rows of (Tk, D): kv_rows' view
        assert col_stride == 1 and row_stride > 0, src_ty
        elem_ty = src_ty.element_type
        elem_bytes = mgpu_utils.bitwidth(elem_ty) // 8
        n_rows = ir.MemRefType(k_dst.type).shape[0] * ir.MemRefType(k_dst.type).shape[2]
        chunks_per_row = head_dim * elem_bytes // 16  # 16-byte chunks
        swizzle_elems = 128 // elem_bytes  # one 128-byte swizzle row = one tile column
        row_tile_bytes = (head_dim // swizzle_elems) * 1024  # 8 rows x D
        total = n_rows * chunks_per_row
        assert total % WARPGROUP == 0, (n_rows, chunks_per_row)
        tid = arith.remui(mgpu_utils.thread_idx(), c(WARPGROUP, i32))
        global_ptr = llvm.PointerType.get(address_space=1)
        as_global = lambda ref: llvm.addrspacecast(global_ptr, mgpu_utils.memref_ptr(ref))
        bases = [(as_global(src), mgpu_utils.memref_ptr(dst)) for src, dst in ((k_src, k_dst), (v_src, v_dst))]
        for it in range(total // WARPGROUP):
            lin = arith.addi(tid, c(it * WARPGROUP, i32))
            row = arith.divui(lin, c(chunks_per_row, i32))
            chunk = arith.remui(lin, c(chunks_per_row, i32))
            key, present = row_key(row)
            src_off = arith.addi(
                arith.muli(arith.extui(i64, key), c(row_stride, i64)),
                arith.extui(i64, arith.muli(chunk, c(16 // elem_bytes, i32))),
            )
            row_in = arith.remui(row, c(8, i32))
            row_tile = arith.divui(row, c(8, i32))
            col_tile = arith.divui(chunk, c(8, i32))
            chunk_in = arith.remui(chunk, c(8, i32))
            dst_off = arith.addi(
                arith.addi(arith.muli(row_tile, c(row_tile_bytes, i32)), arith.muli(col_tile, c(1024, i32))),
                arith.addi(arith.muli(row_in, c(128, i32)), arith.muli(arith.xori(chunk_in, row_in), c(16, i32))),
            )
            size = arith.select(present, c(16, i32), c(0, i32))
            for gbase, sbase in bases:
                gptr = mgpu_utils.getelementptr(gbase, [src_off], elem_ty)
                sptr = mgpu_utils.getelementptr(sbase, [dst_off], i8)
                nvvm.cp_async_shared_global(sptr, gptr, 16, nvvm.LoadCacheModifierKind.CG, cp_size=size)
        if meta is not None:  # threads 0..n_rows-1: bias, start, end of their row (4 bytes each)
            with mgpu_utils.when(arith.cmpi(arith.CmpIPredicate.ult, tid, c(n_rows, i32))):
                key, present = row_key(tid)
                size = arith.select(present, c(4, i32), c(0, i32))
                for src, dst in meta:
                    src_ty = ir.MemRefType(src.type).element_type
                    gptr = mgpu_utils.getelementptr(as_global(src), [arith.extui(i64, key)], src_ty)
                    sptr = mgpu_utils.getelementptr(mgpu_utils.memref_ptr(dst), [tid], src_ty)
                    nvvm.cp_async_shared_global(sptr, gptr, 4, nvvm.LoadCacheModifierKind.CA, cp_size=size)

    def checked(raw):
        i32 = ir.IntegerType.get_signless(32)
        present = arith.andi(
            arith.cmpi(arith.CmpIPredicate.sge, raw, c(0, i32)),
            arith.cmpi(arith.CmpIPredicate.slt, raw, c(kv_len, i32)),
        )
        return arith.select(present, raw, c(0, i32)), present

    def table_key(idx_ref):
        index = ir.IndexType.get()
        return lambda row: checked(memref.load(idx_ref, [arith.index_cast(index, row)]))

    ref = plgpu.RefType()
    tiled = plgpu.RefType(transforms)

    @plgpu.inline_mgpu(arg_types=(ref, ref, ref, tiled, tiled, (ref, ref), (ref, ref), (ref, ref)))
    def gather_table(ctx, idx_ref, k_src, v_src, k_dst, v_dst, *meta):
        """Table entries idx_ref[r] (raw: -1 / out of range = absent), with bias/start/end."""
        del ctx
        issue_rows(table_key(idx_ref), k_src, v_src, k_dst, v_dst, meta)

    @plgpu.inline_mgpu(
        arg_types=(plgpu.Layout.WG_SPLAT, plgpu.Layout.WG_SPLAT, ref, ref, tiled, tiled, (ref, ref), (ref, ref), (ref, ref))
    )
    def gather_own(ctx, first, count, k_src, v_src, k_dst, v_dst, *meta):
        """Contiguous keys first + r for r < count (absent beyond), with bias/start/end."""
        del ctx
        i32 = ir.IntegerType.get_signless(32)
        first, count = first.registers.item(), count.registers.item()

        def own_key(row):
            raw = arith.select(arith.cmpi(arith.CmpIPredicate.slt, row, count), arith.addi(first, row), c(-1, i32))
            return checked(raw)

        issue_rows(own_key, k_src, v_src, k_dst, v_dst, meta)

    @plgpu.inline_mgpu()
    def commit(ctx):
        del ctx
        nvvm.cp_async_commit_group()

    def wait(n):
        @plgpu.inline_mgpu()
        def _wait(ctx):
            del ctx
            nvvm.cp_async_wait_group(n)
            # cp.async writes are generic-proxy writes; wgmma reads through the async proxy.
            nvvm.fence_proxy(nvvm.ProxyKind.async_shared, space=nvvm.SharedSpace.shared_cta)
            mgpu_utils.warpgroup_barrier()

        _wait()

    @plgpu.inline_mgpu()
    def barrier(ctx):
        del ctx
        mgpu_utils.warpgroup_barrier()

    return dict(gather_table=gather_table, gather_own=gather_own, commit=commit, wait=wait,
                barrier=barrier)
