"""DMA through the Pallas TPU kernels, with a custom VJP; layouts and selection prepared here.

Selection (live ranges, slots, carried-key tables) runs in XLA, shared with the GPU path; the
kernels (``pallas_kernels.tpu``) get index tables only. Layout: the R = H / Hb query heads of a
bias head are packed with ``block_q`` consecutive positions into one tile of ``rows = block_q * R``
rows (a multiple of 8 sublanes); D is zero-padded to a multiple of 128 lanes; k and v stay in HBM
as (B, Hkv, kv_rows, Dp) with zero rows past Tk. Per-key data (bias, live range) is gathered here
into each tile's key list, so the kernels read it as dense lane vectors.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from dma_jax.noncausal_tables import noncausal_table, table_width
from dma_jax.slots import carried_key_table, key_slots
from dma_jax.tiles import num_tiles
from dma_jax.validation import check_attention_args
from dma_jax.xla_attention import key_intervals
from pallas_kernels.tpu.common import LANES, SUBLANES, TpuKernelOptions
from pallas_kernels.tpu.dma_backward import ARRIVES, LEAVES, dma_backward_queries_tpu, dma_backward_slots_tpu
from pallas_kernels.tpu.dma_forward import dma_forward_tpu


@dataclasses.dataclass(frozen=True)
class PallasTpuConfig:
    """Tile sizes of the TPU path (static).

    On a TPU, ``block_k``, ``block_k_bwd`` and ``block_slots`` are lane dims (multiples of 128) and
    ``block_q * R`` rows should be a multiple of 8 (``block_q`` is). ``block_q_bwd`` divides ``block_q``.
    """

    block_q: int | None = None  # forward query positions per tile; default 256 rows / R (a multiple of 8)
    block_k: int = 128  # keys gathered per forward step
    block_q_bwd: int | None = None  # default: block_q
    block_k_bwd: int = 128
    block_slots: int = 512  # slots per program of the key-major backward (capped by the window)
    options: TpuKernelOptions = TpuKernelOptions()

    def interpreted(self, poison_outputs: bool = False) -> "PallasTpuConfig":
        """Small tiles and TPU interpret mode, for CPU tests."""
        return PallasTpuConfig(8, 8, 8, 8, 8, TpuKernelOptions(interpret=True, poison_outputs=poison_outputs))


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


class _Lists(NamedTuple):
    """Key lists of one tiling (int32): carried table (B, Hb, tiles, W), each list entry
    (carried then own; -1 absent or never kept) with its live range, and the carried chunks per
    tile worth visiting (B * Hb * tiles,)."""

    keys: jax.Array
    entries: jax.Array
    start: jax.Array
    end: jax.Array
    counts: jax.Array


@dataclasses.dataclass(frozen=True)
class _Static:
    scale: float
    block_q: int
    block_k: int
    block_q_bwd: int
    block_k_bwd: int
    block_slots: int
    q_offset: int
    own_chunks: int
    own_chunks_bwd: int
    zero_row: int
    kv_len: int
    options: TpuKernelOptions


def _gather_lanes(values, entries):
    """values (B, Hb, Tk) at entries (B, Hb, tiles, L) (-1: 0)."""
    flat = entries.reshape(entries.shape[:2] + (-1,))
    taken = jnp.take_along_axis(values, jnp.maximum(flat, 0), axis=-1).reshape(entries.shape)
    return jnp.where(entries >= 0, taken, jnp.zeros((), values.dtype))


def _lists(table, start, end, *, tile_q, block_k, own_chunks, q_offset):
    kv_len = start.shape[-1]
    tiles = table.shape[2]
    own = q_offset + jnp.arange(tiles)[:, None] * tile_q + jnp.arange(own_chunks * block_k)[None, :]
    own = jnp.broadcast_to(own.astype(jnp.int32), table.shape[:3] + own.shape[1:])
    entries = jnp.concatenate([table, own], axis=-1)
    entries = jnp.where((entries >= 0) & (entries < kv_len), entries, -1)
    start_m, end_m = _gather_lanes(start, entries), _gather_lanes(end, entries)
    entries = jnp.where(end_m > start_m, entries, -1)
    column = jnp.arange(table.shape[-1], dtype=jnp.int32)
    last = jnp.max(jnp.where(table >= 0, column, -1), axis=-1)
    counts = ((last + block_k) // block_k).reshape(-1).astype(jnp.int32)
    return _Lists(table, entries, jnp.where(entries >= 0, start_m, 0), jnp.where(entries >= 0, end_m, 0), counts)


def _meta(bias, lists, block_k):
    """(bias, start, end) of each list entry, (B, Hb, tiles, chunks, block_k)."""
    bias_m = _gather_lanes(bias.astype(jnp.float32), lists.entries)
    chunked = lambda x: x.reshape(x.shape[:3] + (-1, block_k))
    return chunked(bias_m), chunked(lists.start), chunked(lists.end)


def _offsets(rows, per_bias):
    return (jnp.arange(rows, dtype=jnp.int32) // per_bias)[None, :]


def _slot_flags(table):
    """ARRIVES where a slot's occupant differs from the previous tile's; LEAVES on its last tile."""
    edge = lambda fill: jnp.full(table.shape[:2] + (1, table.shape[3]), fill, table.dtype)
    previous = jnp.concatenate([edge(-2), table[:, :, :-1]], axis=2)
    following = jnp.concatenate([table[:, :, 1:], edge(-1)], axis=2)
    arrives = table != previous
    leaves = (table >= 0) & (following != table)
    return (jnp.where(arrives, ARRIVES, 0) | jnp.where(leaves, LEAVES, 0)).astype(jnp.int32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _kernels(cfg, q_tiles, k, v, bias, lists, lists_bwd):
    return _kernels_fwd(cfg, q_tiles, k, v, bias, lists, lists_bwd)[0]


def _kernels_fwd(cfg, q_tiles, k, v, bias, lists, lists_bwd):
    rows = q_tiles.shape[3]
    out, lse = dma_forward_tpu(
        q_tiles, k, v, lists.keys, _meta(bias, lists, cfg.block_k), lists.counts, _offsets(rows, rows // cfg.block_q),
        scale=cfg.scale, block_q=cfg.block_q, q_offset=cfg.q_offset, own_chunks=cfg.own_chunks,
        zero_row=cfg.zero_row, options=cfg.options,
    )
    return out, (q_tiles, k, v, bias, lists_bwd, out, lse)


def _place_own(x, cfg, tiles):
    """Own-key gradients (B, Hb, tiles, own_width, ...) -> (B, Hb, Tk, ...), zeros before q_offset."""
    own = x[:, :, :, : cfg.block_q_bwd].reshape((x.shape[0], x.shape[1], tiles * cfg.block_q_bwd) + x.shape[4:])
    own = own[:, :, : cfg.kv_len - cfg.q_offset]
    return jnp.pad(own, ((0, 0), (0, 0), (cfg.q_offset, 0)) + ((0, 0),) * (x.ndim - 4))


def _kernels_bwd(cfg, residuals, d_out):
    q_tiles, k, v, bias, lists, out, lse = residuals
    batch, bias_heads, tiles_fwd, rows_fwd, dim = q_tiles.shape
    kv_heads, kv_len = k.shape[1], cfg.kv_len
    tiles = lists.keys.shape[2]
    rows = rows_fwd * tiles_fwd // tiles
    # Re-tile to the backward's smaller tiles: rows are position-major, so this is a reshape.
    retile = lambda x: x.reshape((batch, bias_heads, tiles, -1) + x.shape[4:])
    q_tiles, d_out, out = retile(q_tiles), retile(d_out).astype(q_tiles.dtype), retile(out)
    lse = lse.reshape(batch, bias_heads, tiles, 1, rows)
    delta = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)[:, :, :, None, :]
    offsets = _offsets(rows, rows // cfg.block_q_bwd)
    common = dict(scale=cfg.scale, block_q=cfg.block_q_bwd, q_offset=cfg.q_offset, zero_row=cfg.zero_row, options=cfg.options)
    meta = _meta(bias, lists, cfg.block_k_bwd)
    pass1 = dma_backward_queries_tpu(
        q_tiles, d_out, lse, delta, k, v, lists.keys, meta, lists.counts, offsets, own_chunks=cfg.own_chunks_bwd, **common
    )
    flags = _slot_flags(lists.keys)
    as_lanes = lambda x: x.reshape(x.shape[:3] + (1, -1))
    lanes = tuple(as_lanes(x) for x in meta) + (as_lanes(flags),)
    dk, dv, db_flush = dma_backward_slots_tpu(
        q_tiles, d_out, lse, delta, k, v, lists.keys, flags, lanes, offsets, block_slots=cfg.block_slots, **common
    )
    dk, dv = dk[:, :, :kv_len, :dim], dv[:, :, :kv_len, :dim]
    # Each key leaves its slot once: a scatter with unique in-range targets (deterministic).
    target = jnp.where((flags & LEAVES) != 0, lists.keys, kv_len).reshape(batch, bias_heads, -1)
    scatter = lambda t, d: jnp.zeros((kv_len,), jnp.float32).at[t].set(d, mode="drop")
    dbias = jax.vmap(jax.vmap(scatter))(target, db_flush.reshape(batch, bias_heads, -1))
    if cfg.own_chunks_bwd:
        _, dk_own, dv_own, db_own = pass1
        dk = dk + _place_own(dk_own, cfg, tiles)
        dv = dv + _place_own(dv_own, cfg, tiles)
        dbias = dbias + _place_own(db_own.reshape(batch, bias_heads, tiles, -1), cfg, tiles)
    dq = pass1[0].reshape(batch, bias_heads, tiles_fwd, rows_fwd, dim)
    per_kv = lambda x: x.reshape(batch, kv_heads, bias_heads // kv_heads, kv_len, -1).sum(axis=2)
    pad_rows = ((0, 0), (0, 0), (0, k.shape[2] - kv_len), (0, dim - dk.shape[-1]))
    dk, dv = jnp.pad(per_kv(dk), pad_rows), jnp.pad(per_kv(dv), pad_rows)
    return dq, dk.astype(k.dtype), dv.astype(v.dtype), dbias.astype(bias.dtype), None, None


_kernels.defvjp(_kernels_fwd, _kernels_bwd)


def dma_attention_pallas_tpu(q, k, v, bias, window, *, causal, scale, segment_ids, key_mask, config=PallasTpuConfig()):
    """DMA with the Pallas TPU kernels; arguments and result as ``dma_attention``.

    ``config`` sets tiles and launch options (``PallasTpuConfig().interpreted()`` off a TPU).
    """
    dims = check_attention_args(q, k, v, bias, window, causal, segment_ids, key_mask, scale)
    batch, q_len, kv_len, head_dim = dims.batch, dims.q_len, dims.kv_len, dims.head_dim
    heads, bias_heads = dims.heads, dims.bias_heads
    per_bias = heads // bias_heads
    scale = head_dim**-0.5 if scale is None else float(scale)
    block_q = config.block_q or max(SUBLANES, (256 // per_bias) // SUBLANES * SUBLANES)
    block_q_bwd = config.block_q_bwd or block_q
    if block_q % block_q_bwd or block_q_bwd % SUBLANES:
        raise ValueError(f"block_q_bwd={block_q_bwd} must divide block_q={block_q} and be a multiple of {SUBLANES}")
    tiles = num_tiles(q_len, block_q)
    tiles_bwd = tiles * (block_q // block_q_bwd)
    q_offset = kv_len - q_len if causal else 0
    own_chunks = -(-block_q // config.block_k) if causal else 0
    own_chunks_bwd = -(-block_q_bwd // config.block_k_bwd) if causal else 0

    bias_sel = lax.stop_gradient(bias)
    start, end = key_intervals(bias_sel, window, q_len, causal=causal, segment_ids=segment_ids, key_mask=key_mask)
    if causal:
        window_slots = kv_len if window is None else min(window, kv_len)
        slots = key_slots(end, window_slots, segment_ids=segment_ids, key_mask=key_mask, bias=bias_sel)
        width = window_slots
    else:
        width = table_width(window, kv_len, block_q, segment_ids is not None)  # block_q >= block_q_bwd: fits both
    block_slots = min(config.block_slots, _round_up(width, config.block_k_bwd))
    width = _round_up(width, math.lcm(config.block_k, config.block_k_bwd, block_slots))

    def lists_for(tile_q, count, block_k, own):
        if causal:
            table = carried_key_table(end, slots, q_len, tile_q, window_slots)
            table = jnp.pad(table, ((0, 0), (0, 0), (0, count - table.shape[2]), (0, 0)), constant_values=-1)
        else:
            table = noncausal_table(bias_sel, window, count, tile_q, segment_ids, key_mask)
        table = jnp.pad(table, ((0, 0),) * 3 + ((0, width - table.shape[-1]),), constant_values=-1)
        return _lists(table, start, end, tile_q=tile_q, block_k=block_k, own_chunks=own, q_offset=q_offset)

    lists = lists_for(block_q, tiles, config.block_k, own_chunks)
    lists_bwd = lists_for(block_q_bwd, tiles_bwd, config.block_k_bwd, own_chunks_bwd)

    # k, v -> (B, Hkv, kv_rows, Dp): zero rows past Tk cover the last tile's own chunks and zero_row.
    reach = q_offset + max(
        (tiles - 1) * block_q + own_chunks * config.block_k, (tiles_bwd - 1) * block_q_bwd + own_chunks_bwd * config.block_k_bwd
    )
    zero_row = max(kv_len, reach)
    dim = _round_up(head_dim, LANES)
    pad_kv = ((0, 0), (0, 0), (0, _round_up(zero_row + 1, SUBLANES) - kv_len), (0, dim - head_dim))
    kt = jnp.pad(jnp.transpose(k, (0, 2, 1, 3)), pad_kv)
    vt = jnp.pad(jnp.transpose(v, (0, 2, 1, 3)), pad_kv)
    # q -> (B, Hb, tiles, block_q * R, Dp).
    qp = jnp.pad(q, ((0, 0), (0, tiles * block_q - q_len), (0, 0), (0, dim - head_dim)))
    qp = qp.reshape(batch, tiles, block_q, bias_heads, per_bias, dim)
    qp = jnp.transpose(qp, (0, 3, 1, 2, 4, 5)).reshape(batch, bias_heads, tiles, block_q * per_bias, dim)

    cfg = _Static(
        scale, block_q, config.block_k, block_q_bwd, config.block_k_bwd, block_slots, q_offset, own_chunks,
        own_chunks_bwd, zero_row, kv_len, config.options,
    )
    out = _kernels(cfg, qp, kt, vt, bias, lists, lists_bwd)
    out = out.reshape(batch, bias_heads, tiles, block_q, per_bias, dim)[..., :head_dim]
    out = jnp.transpose(out, (0, 2, 3, 1, 4, 5)).reshape(batch, tiles * block_q, heads, head_dim)
    return out[:, :q_len]
