"""DMA through the Pallas kernels, with a custom VJP; layouts and selection prepared here.

Selection: live ranges by the wavelet matrix in XLA (or, opt-in, the selection kernel of
``dma_jax.selection_scan``), slot tables in XLA; the attention kernels (``pallas_kernels``) get
index tables only. Layout: the R = H / Hb query heads of a bias head are packed with ``block_q``
consecutive positions into one tile of ``rows = block_q * R`` rows. Head dims and R are padded
to powers of two (Triton needs power-of-two blocks); padded rows and columns are zeros.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax

from dma_jax.noncausal_tables import noncausal_table
from dma_jax.selection import live_ranges_unchecked
from dma_jax.selection_scan import live_ranges_scan
from dma_jax.slots import carried_key_table, key_slots
from dma_jax.tiles import num_tiles
from dma_jax.xla_attention import key_intervals
from pallas_kernels.common import KernelOptions
from pallas_kernels.dma_backward import add_chunk_carries, dma_backward_queries, dma_backward_slots
from pallas_kernels.dma_forward import dma_forward


@dataclasses.dataclass(frozen=True)
class PallasConfig:
    """Tile sizes and launch options of the Pallas path (static).

    The backward runs on its own (smaller) query tiles: ``block_q_bwd`` must divide ``block_q``.
    """

    block_q: int | None = None  # forward query positions per tile; default 128 rows (64 if D > 128) / R
    block_k: int = 64  # keys gathered per forward step
    options: KernelOptions = KernelOptions(num_warps=4, num_stages=2)
    block_q_bwd: int | None = None  # default: block_q
    block_k_bwd: int = 64
    block_slots: int = 32  # slots per program of the key-major backward
    slot_chunk_tiles: int | None = None  # backward tiles per key-major program (None: all; chunks measured no faster)
    options_bwd: KernelOptions = KernelOptions(num_warps=4, num_stages=2)
    # Live ranges: "wavelet" (the wavelet matrix in XLA) or "kernel" (pallas_kernels.live_range_scan).
    # Both are exact; on the H200 the kernel was 3-7x slower (docs/kernels.md), so it is opt-in.
    selection: str = "wavelet"
    selection_options: KernelOptions = KernelOptions(num_warps=4, num_stages=1)
    # The forward reads q and writes its output in their (B, T, H, D) layout instead of transposing
    # them into tiles. Used where R = H / Hb and D are powers of two. On an H200 (session 9,
    # docs/kernels.md) the 4K forward went from 0.92 to 0.79 ms, the 32K one from 4.18 to 4.08 ms.
    sequence_layout: bool = True
    # The key-major backward accumulates dK^T and dV^T (D x slots), so its two per-tile products
    # run on wgmma instead of mma.sync (Triton 3.6 for sm_90: 64 wgmma and no mma.sync, against 32
    # and 128); on an H200 forward+backward at 32K went from 18.8 to 17.8 ms (session 9). Used for
    # 16-bit inputs with D <= 128 (the measured case; it needs 170 KB of shared memory at 2 stages
    # there, more for float32 or D = 256). ``options_slots``: launch options of that kernel alone
    # (None: ``options_bwd``); 8 warps and 1 stage measured slower.
    slot_sums_transposed: bool = True
    options_slots: KernelOptions | None = None

    def interpreted(self, poison_outputs: bool = False) -> "PallasConfig":
        """Small tiles and interpret mode, for CPU tests."""
        options = KernelOptions(interpret=True, poison_outputs=poison_outputs)
        return PallasConfig(block_q=16, block_k=16, options=options, block_q_bwd=8, block_k_bwd=8, block_slots=16,
                            slot_chunk_tiles=2, options_bwd=options, selection=self.selection, selection_options=options,
                            sequence_layout=self.sequence_layout, slot_sums_transposed=self.slot_sums_transposed)

    def slot_options(self) -> KernelOptions:
        """Launch options of the key-major backward kernel: ``options_slots``, else ``options_bwd``."""
        return self.options_slots or self.options_bwd

    def live_ranges_fn(self):
        """``live_ranges_unchecked`` or its kernel twin, as ``selection`` says."""
        if self.selection == "wavelet":
            return live_ranges_unchecked
        if self.selection == "kernel":  # small tiles in interpret mode; else the kernel's (best measured) ones
            tiles = dict(block_keys=16, block_index=32) if self.selection_options.interpret else {}
            return functools.partial(live_ranges_scan, options=self.selection_options, **tiles)
        raise ValueError(f"selection must be 'kernel' or 'wavelet', got {self.selection!r}")


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


@dataclasses.dataclass(frozen=True)
class _Static:
    scale: float
    block_q: int
    block_k: int
    options: KernelOptions
    block_q_bwd: int
    block_k_bwd: int
    block_slots: int
    options_bwd: KernelOptions
    q_offset: int
    own_keys: bool
    slot_chunk_tiles: int | None
    sequence_bias_heads: int | None  # Hb when q and the output are in the sequence layout, else None
    options_slots: KernelOptions
    slot_sums_transposed: bool


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _kernels(cfg, q_tiles, k, v, bias, start, end, table, table_bwd):
    return _kernels_fwd(cfg, q_tiles, k, v, bias, start, end, table, table_bwd)[0]


def _kernels_fwd(cfg, q_tiles, k, v, bias, start, end, table, table_bwd):
    out, lse = dma_forward(
        q_tiles, k, v, bias, start, end, table, scale=cfg.scale, block_q=cfg.block_q, block_k=cfg.block_k,
        q_offset=cfg.q_offset, own_keys=cfg.own_keys, options=cfg.options, bias_heads=cfg.sequence_bias_heads,
    )
    return out, (q_tiles, k, v, bias, start, end, table_bwd, out, lse)


def _sequence_to_tiles(x, bias_heads, block_q, rows_per_pos=None):
    """(B, tiles * block_q, Hb * R, ...) -> (B, Hb, tiles, block_q * R', ...): the tile layout of
    ``common``, each position's R heads zero-padded to ``rows_per_pos`` = R' rows (default R)."""
    batch, length, heads = x.shape[:3]
    per_bias, rest = heads // bias_heads, x.shape[3:]
    rows_per_pos = rows_per_pos or per_bias
    x = x.reshape((batch, length // block_q, block_q, bias_heads, per_bias) + rest)
    x = jnp.pad(x, ((0, 0),) * 4 + ((0, rows_per_pos - per_bias),) + ((0, 0),) * len(rest))
    x = jnp.moveaxis(x, 3, 1)
    return x.reshape((batch, bias_heads, length // block_q, block_q * rows_per_pos) + rest)


def _tiles_to_sequence(x, per_bias, rows_per_pos=None):
    """Inverse of ``_sequence_to_tiles`` for (B, Hb, tiles, rows, D): drops the padded head rows."""
    batch, bias_heads, tiles, rows, dim = x.shape
    rows_per_pos = rows_per_pos or per_bias
    x = x.reshape(batch, bias_heads, tiles, rows // rows_per_pos, rows_per_pos, dim)[:, :, :, :, :per_bias]
    return jnp.moveaxis(x, 1, 3).reshape(batch, tiles * (rows // rows_per_pos), bias_heads * per_bias, dim)


def _transposed_sums_fit(dtype, padded_head_dim: int, options: KernelOptions) -> bool:
    """Whether the transposed key-major pass runs (``PallasConfig.slot_sums_transposed``): 16-bit
    inputs and padded head dims up to 128, the case measured to fit in shared memory and to be
    faster; always in interpret mode, where shared memory does not limit it (so CPU tests check it)."""
    return options.interpret or (jnp.dtype(dtype).itemsize == 2 and padded_head_dim <= 128)


def _kernels_bwd(cfg, residuals, d_out):
    q_tiles, k, v, bias, start, end, table, out, lse = residuals
    delta = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)
    if cfg.sequence_bias_heads is not None:  # the backward kernels read the tile layout
        q_tiles, d_out, delta = (_sequence_to_tiles(x, cfg.sequence_bias_heads, cfg.block_q) for x in (q_tiles, d_out, delta))
    batch, bias_heads, tiles_fwd, rows_fwd, head_dim = q_tiles.shape
    kv_heads, kv_len = k.shape[1], k.shape[2]
    # Re-tile to the backward's smaller tiles: rows are position-major, so this is a reshape.
    tiles = table.shape[2]
    retile = lambda x: x.reshape((batch, bias_heads, tiles, -1) + x.shape[4:])
    q_tiles, d_out, delta, lse = retile(q_tiles), retile(d_out), retile(delta), retile(lse)
    common = dict(scale=cfg.scale, block_q=cfg.block_q_bwd, q_offset=cfg.q_offset, options=cfg.options_bwd)
    args = (q_tiles, d_out.astype(q_tiles.dtype), lse, delta, k, v, bias, start, end, table)
    dq, dk_own, dv_own, db_own = dma_backward_queries(*args, block_k=cfg.block_k_bwd, own_keys=cfg.own_keys, **common)
    slot_sums = dma_backward_slots(*args, block_slots=cfg.block_slots, chunk_tiles=cfg.slot_chunk_tiles,
                                   transposed=cfg.slot_sums_transposed, **{**common, "options": cfg.options_slots})
    dk, dv, dbias = add_chunk_carries(*slot_sums, table, cfg.slot_chunk_tiles)
    dq = dq.reshape(batch, bias_heads, tiles_fwd, rows_fwd, head_dim)
    if cfg.sequence_bias_heads is not None:
        dq = _tiles_to_sequence(dq, rows_fwd // cfg.block_q)
    dk, dv, dbias = dk[:, :, :kv_len], dv[:, :, :kv_len], dbias[:, :, :kv_len]
    if cfg.own_keys:  # own keys of tile n sit at positions q_offset + n * block_q + i
        own = kv_len - cfg.q_offset
        flat = lambda x: x.reshape((batch, bias_heads, tiles * cfg.block_q_bwd) + x.shape[4:])[:, :, :own]
        dk = dk.at[:, :, cfg.q_offset :].add(flat(dk_own))
        dv = dv.at[:, :, cfg.q_offset :].add(flat(dv_own))
        dbias = dbias.at[:, :, cfg.q_offset :].add(flat(db_own))
    per_kv = lambda x: x.reshape(batch, kv_heads, bias_heads // kv_heads, kv_len, head_dim).sum(axis=2)
    return dq, per_kv(dk).astype(k.dtype), per_kv(dv).astype(v.dtype), dbias.astype(bias.dtype), None, None, None, None


_kernels.defvjp(_kernels_fwd, _kernels_bwd)


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def tiling(config: PallasConfig, head_dim: int, per_bias: int) -> tuple[int, int, int, int, int]:
    """(rows per position, block_q, block_k, block_q_bwd, block_k_bwd) for R = ``per_bias`` query heads per bias head."""
    rows_per_pos = _next_pow2(per_bias)
    block_q = config.block_q or max(16, (128 if head_dim <= 128 else 64) // rows_per_pos)
    block_k = min(config.block_k, block_q)
    block_q_bwd = config.block_q_bwd or block_q
    block_k_bwd = min(config.block_k_bwd, block_q_bwd)
    if block_q % block_q_bwd:
        raise ValueError(f"block_q_bwd={block_q_bwd} must divide block_q={block_q}")
    return rows_per_pos, block_q, block_k, block_q_bwd, block_k_bwd


def selection_tables(bias, window, q_len, *, causal, segment_ids, key_mask, config, head_dim, per_bias):
    """The selection stage of the Pallas path: live ranges and the key tables of both passes.

    Returns (start, end) int32 (B, Hb, Tk) and the tables int32 (B, Hb, tiles, W) for the query
    tiles of the forward and of the backward (``tiling``), W padded with -1 to a multiple of
    every key block that reads it.
    """
    kv_len = bias.shape[-1]
    _, block_q, block_k, block_q_bwd, block_k_bwd = tiling(config, head_dim, per_bias)
    multiple = max(block_k, block_k_bwd, config.block_slots)
    tiles = num_tiles(q_len, block_q)
    start, end = key_intervals(bias, window, q_len, causal=causal, segment_ids=segment_ids, key_mask=key_mask,
                               live_ranges_fn=config.live_ranges_fn())
    if causal:
        window_slots = kv_len if window is None else min(window, kv_len)
        slots = key_slots(end, window_slots, segment_ids=segment_ids, key_mask=key_mask, bias=bias)

    def table_for(tile_q):
        """Carried-key table for tiles of ``tile_q`` positions, padded to ``multiple`` columns."""
        count = tiles * (block_q // tile_q)
        if causal:
            table = carried_key_table(end, slots, q_len, tile_q, window_slots)
            table = jnp.pad(table, ((0, 0), (0, 0), (0, count - table.shape[2]), (0, 0)), constant_values=-1)
        else:
            table = noncausal_table(bias, window, count, tile_q, segment_ids, key_mask)
        width = _round_up(table.shape[-1], multiple)
        return jnp.pad(table, ((0, 0), (0, 0), (0, 0), (0, width - table.shape[-1])), constant_values=-1)

    return start, end, table_for(block_q), table_for(block_q_bwd)


def dma_attention_pallas(q, k, v, bias, window, *, causal, scale, segment_ids, key_mask, config=PallasConfig()):
    """DMA with the Pallas kernels; arguments as ``dma_attention`` (already checked)."""
    batch, q_len, heads, head_dim = q.shape
    kv_len = k.shape[1]
    bias_heads = bias.shape[1]
    per_bias = heads // bias_heads
    scale = head_dim**-0.5 if scale is None else float(scale)
    rows_per_pos, block_q, block_k, block_q_bwd, block_k_bwd = tiling(config, head_dim, per_bias)
    tiles = num_tiles(q_len, block_q)
    q_offset = kv_len - q_len if causal else 0

    bias_sel = lax.stop_gradient(bias)
    start, end, table, table_bwd = selection_tables(
        bias_sel, window, q_len, causal=causal, segment_ids=segment_ids, key_mask=key_mask, config=config,
        head_dim=head_dim, per_bias=per_bias,
    )

    # Zero-pad D and R to powers of two; q -> (B, Hb, tiles, block_q * R', D'), or in place.
    dim = max(16, _next_pow2(head_dim))
    pad_d = ((0, 0),) * 3 + ((0, dim - head_dim),)
    sequence = config.sequence_layout and rows_per_pos == per_bias and dim == head_dim
    qp = jnp.pad(q, ((0, 0), (0, tiles * block_q - q_len), (0, 0), (0, dim - head_dim)))
    if not sequence:
        qp = _sequence_to_tiles(qp, bias_heads, block_q, rows_per_pos)
    kt = jnp.transpose(jnp.pad(k, pad_d), (0, 2, 1, 3))
    vt = jnp.transpose(jnp.pad(v, pad_d), (0, 2, 1, 3))

    cfg = _Static(
        scale, block_q, block_k, config.options, block_q_bwd, block_k_bwd, config.block_slots,
        config.options_bwd, q_offset, causal, config.slot_chunk_tiles, bias_heads if sequence else None,
        config.slot_options(), config.slot_sums_transposed and _transposed_sums_fit(q.dtype, dim, config.slot_options()),
    )
    out = _kernels(cfg, qp, kt, vt, bias, start, end, table, table_bwd)
    if not sequence:
        out = _tiles_to_sequence(out, per_bias, rows_per_pos)[..., :head_dim]
    return out[:, :q_len]
