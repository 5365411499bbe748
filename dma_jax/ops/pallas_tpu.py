"""DMA through the Pallas TPU kernels, with a custom VJP; layouts and selection prepared here.

The selection stage (``dma_jax.selection.key_tables``, in XLA) is the GPU path's; the kernels
(``pallas_kernels.tpu``) get index tables only. Layout: the R = H / Hb query heads of a
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
from jax.ad_checkpoint import checkpoint_name

from dma_jax.remat import OUTPUT, STATS
from dma_jax.selection.tables import key_tables, num_tiles, table_width
from pallas_kernels.tpu.backward import ARRIVES, LEAVES, dma_backward_queries_tpu, dma_backward_slots_tpu
from pallas_kernels.tpu.common import LANES, SUBLANES, TpuKernelOptions
from pallas_kernels.tpu.forward import dma_forward_tpu


@dataclasses.dataclass(frozen=True)
class PallasTpuConfig:
    """Tile sizes of the TPU kernels (static, hashable); ``dma_attention(..., implementation=
    PallasTpuConfig(...))`` uses them. Fields left None are filled per call by ``resolve``.

    On a TPU, ``block_k``, ``block_k_bwd`` and ``block_slots`` are lane dims (multiples of 128) and
    ``block_q * R`` rows should be a multiple of 8 (``block_q`` is). ``block_q_bwd`` divides ``block_q``.

    block_q: forward query positions per tile (default 256 rows / R, a multiple of 8).
    block_k: keys gathered per forward step. block_q_bwd (default ``block_q``), block_k_bwd: the
    same for the backward. block_slots: slots per program of the key-major backward (capped by the
    table width).
    """

    block_q: int | None = None
    block_k: int = 128
    block_q_bwd: int | None = None
    block_k_bwd: int = 128
    block_slots: int = 512
    options: TpuKernelOptions = TpuKernelOptions()

    def interpreted(self, poison_outputs: bool = False) -> "PallasTpuConfig":
        """Small tiles and TPU interpret mode, for CPU tests."""
        return PallasTpuConfig(8, 8, 8, 8, 8, TpuKernelOptions(interpret=True, poison_outputs=poison_outputs))

    def resolve(self, *, per_bias: int, window, kv_len: int, causal: bool, segments: bool) -> "PallasTpuConfig":
        """This config with every field set for a call with R = ``per_bias`` query heads per bias
        head (the other arguments as ``dma_attention``; they size the key tables)."""
        block_q = self.block_q or max(SUBLANES, (256 // per_bias) // SUBLANES * SUBLANES)
        block_q_bwd = self.block_q_bwd or block_q
        if block_q % block_q_bwd or block_q_bwd % SUBLANES:
            raise ValueError(f"block_q_bwd={block_q_bwd} must divide block_q={block_q} and be a multiple of {SUBLANES}")
        width = table_width(window, kv_len, block_q, causal=causal, segments=segments)
        block_slots = min(self.block_slots, _round_up(width, self.block_k_bwd))
        return dataclasses.replace(self, block_q=block_q, block_q_bwd=block_q_bwd, block_slots=block_slots)


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
class _Call:
    """The static part of one kernel call: the resolved config and what the call adds to it."""

    config: PallasTpuConfig
    scale: float
    q_offset: int  # sequence position of query 0
    causal: bool  # causal lists end with the tile's own keys
    zero_row: int  # a zero row of k and v, fetched for empty list entries
    kv_len: int

    @property
    def own_chunks(self) -> int:
        return _own_chunks(self.config.block_q, self.config.block_k, self.causal)

    @property
    def own_chunks_bwd(self) -> int:
        return _own_chunks(self.config.block_q_bwd, self.config.block_k_bwd, self.causal)


def _own_chunks(block_q: int, block_k: int, causal: bool) -> int:
    """Key chunks covering a tile's own keys (causal lists end with them; none otherwise)."""
    return -(-block_q // block_k) if causal else 0


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
def _kernels(call, q_tiles, k, v, bias, lists, lists_bwd):
    return _kernels_fwd(call, q_tiles, k, v, bias, lists, lists_bwd)[0]


def _kernels_fwd(call, q_tiles, k, v, bias, lists, lists_bwd):
    config = call.config
    rows = q_tiles.shape[3]
    out, lse = dma_forward_tpu(
        q_tiles, k, v, lists.keys, _meta(bias, lists, config.block_k), lists.counts,
        _offsets(rows, rows // config.block_q), scale=call.scale, block_q=config.block_q, q_offset=call.q_offset,
        own_chunks=call.own_chunks, zero_row=call.zero_row, options=config.options,
    )
    out, lse = checkpoint_name(out, OUTPUT), checkpoint_name(lse, STATS)
    return out, (q_tiles, k, v, bias, lists_bwd, out, lse)


def _place_own(x, call, tiles):
    """Own-key gradients (B, Hb, tiles, own_width, ...) -> (B, Hb, Tk, ...), zeros before q_offset."""
    block_q = call.config.block_q_bwd
    own = x[:, :, :, :block_q].reshape((x.shape[0], x.shape[1], tiles * block_q) + x.shape[4:])
    own = own[:, :, : call.kv_len - call.q_offset]
    return jnp.pad(own, ((0, 0), (0, 0), (call.q_offset, 0)) + ((0, 0),) * (x.ndim - 4))


def _kernels_bwd(call, residuals, d_out):
    config = call.config
    q_tiles, k, v, bias, lists, out, lse = residuals
    batch, bias_heads, tiles_fwd, rows_fwd, dim = q_tiles.shape
    kv_heads, kv_len = k.shape[1], call.kv_len
    tiles = lists.keys.shape[2]
    rows = rows_fwd * tiles_fwd // tiles
    # Re-tile to the backward's smaller tiles: rows are position-major, so this is a reshape.
    retile = lambda x: x.reshape((batch, bias_heads, tiles, -1) + x.shape[4:])
    q_tiles, d_out, out = retile(q_tiles), retile(d_out).astype(q_tiles.dtype), retile(out)
    lse = lse.reshape(batch, bias_heads, tiles, 1, rows)
    delta = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)[:, :, :, None, :]
    offsets = _offsets(rows, rows // config.block_q_bwd)
    common = dict(scale=call.scale, block_q=config.block_q_bwd, q_offset=call.q_offset, zero_row=call.zero_row,
                  options=config.options)
    meta = _meta(bias, lists, config.block_k_bwd)
    pass1 = dma_backward_queries_tpu(
        q_tiles, d_out, lse, delta, k, v, lists.keys, meta, lists.counts, offsets, own_chunks=call.own_chunks_bwd,
        **common,
    )
    flags = _slot_flags(lists.keys)
    as_lanes = lambda x: x.reshape(x.shape[:3] + (1, -1))
    lanes = tuple(as_lanes(x) for x in meta) + (as_lanes(flags),)
    dk, dv, db_flush = dma_backward_slots_tpu(
        q_tiles, d_out, lse, delta, k, v, lists.keys, flags, lanes, offsets, block_slots=config.block_slots, **common
    )
    dk, dv = dk[:, :, :kv_len, :dim], dv[:, :, :kv_len, :dim]
    # Each key leaves its slot once: a scatter with unique in-range targets (deterministic).
    target = jnp.where((flags & LEAVES) != 0, lists.keys, kv_len).reshape(batch, bias_heads, -1)
    scatter = lambda t, d: jnp.zeros((kv_len,), jnp.float32).at[t].set(d, mode="drop")
    dbias = jax.vmap(jax.vmap(scatter))(target, db_flush.reshape(batch, bias_heads, -1))
    if call.own_chunks_bwd:
        _, dk_own, dv_own, db_own = pass1
        dk = dk + _place_own(dk_own, call, tiles)
        dv = dv + _place_own(dv_own, call, tiles)
        dbias = dbias + _place_own(db_own.reshape(batch, bias_heads, tiles, -1), call, tiles)
    dq = pass1[0].reshape(batch, bias_heads, tiles_fwd, rows_fwd, dim)
    per_kv = lambda x: x.reshape(batch, kv_heads, bias_heads // kv_heads, kv_len, -1).sum(axis=2)
    pad_rows = ((0, 0), (0, 0), (0, k.shape[2] - kv_len), (0, dim - dk.shape[-1]))
    dk, dv = jnp.pad(per_kv(dk), pad_rows), jnp.pad(per_kv(dv), pad_rows)
    return dq, dk.astype(k.dtype), dv.astype(v.dtype), dbias.astype(bias.dtype), None, None


_kernels.defvjp(_kernels_fwd, _kernels_bwd)


def dma_attention_pallas_tpu(q, k, v, bias, window, *, causal, scale, segment_ids, key_mask, config=PallasTpuConfig(),
                             local_window=0, sink_keys=0):
    """DMA with the Pallas TPU kernels; arguments as ``dma_attention`` (already checked).

    ``config`` sets tiles and launch options (``PallasTpuConfig().interpreted()`` off a TPU).
    """
    batch, q_len, heads, head_dim = q.shape
    kv_len, bias_heads = k.shape[1], bias.shape[1]
    per_bias = heads // bias_heads
    segments = segment_ids is not None
    config = config.resolve(per_bias=per_bias, window=window, kv_len=kv_len, causal=causal, segments=segments)
    block_q, block_q_bwd = config.block_q, config.block_q_bwd
    tiles = num_tiles(q_len, block_q)
    tiles_bwd = tiles * (block_q // block_q_bwd)
    q_offset = kv_len - q_len if causal else 0
    width = table_width(window, kv_len, block_q, causal=causal, segments=segments)  # block_q's covers block_q_bwd's
    width = _round_up(width, math.lcm(config.block_k, config.block_k_bwd, config.block_slots))
    start, end, (table, table_bwd) = key_tables(bias, window, q_len, (block_q, block_q_bwd), width, causal=causal,
                                                segment_ids=segment_ids, key_mask=key_mask,
                                                local_window=local_window, sink_keys=sink_keys)

    # k, v -> (B, Hkv, kv_rows, Dp): zero rows past Tk cover the last tile's own chunks and zero_row.
    reach = q_offset + max((tiles - 1) * block_q + _own_chunks(block_q, config.block_k, causal) * config.block_k,
                           (tiles_bwd - 1) * block_q_bwd + _own_chunks(block_q_bwd, config.block_k_bwd, causal)
                           * config.block_k_bwd)
    zero_row = max(kv_len, reach)
    call = _Call(config, head_dim**-0.5 if scale is None else float(scale), q_offset, causal, zero_row, kv_len)
    lists = _lists(table, start, end, tile_q=block_q, block_k=config.block_k, own_chunks=call.own_chunks,
                   q_offset=q_offset)
    lists_bwd = _lists(table_bwd, start, end, tile_q=block_q_bwd, block_k=config.block_k_bwd,
                       own_chunks=call.own_chunks_bwd, q_offset=q_offset)
    dim = _round_up(head_dim, LANES)
    pad_kv = ((0, 0), (0, 0), (0, _round_up(zero_row + 1, SUBLANES) - kv_len), (0, dim - head_dim))
    kt = jnp.pad(jnp.transpose(k, (0, 2, 1, 3)), pad_kv)
    vt = jnp.pad(jnp.transpose(v, (0, 2, 1, 3)), pad_kv)
    # q -> (B, Hb, tiles, block_q * R, Dp).
    qp = jnp.pad(q, ((0, 0), (0, tiles * block_q - q_len), (0, 0), (0, dim - head_dim)))
    qp = qp.reshape(batch, tiles, block_q, bias_heads, per_bias, dim)
    qp = jnp.transpose(qp, (0, 3, 1, 2, 4, 5)).reshape(batch, bias_heads, tiles, block_q * per_bias, dim)
    out = _kernels(call, qp, kt, vt, bias, lists, lists_bwd)
    out = out.reshape(batch, bias_heads, tiles, block_q, per_bias, dim)[..., :head_dim]
    out = jnp.transpose(out, (0, 2, 3, 1, 4, 5)).reshape(batch, tiles * block_q, heads, head_dim)
    return out[:, :q_len]
