"""Memory-frugal DMA in plain XLA: query tiles attend to gathered key lists.

Each tile of ``block_q`` queries gathers the keys it may keep (``selection.tables.tile_key_lists``) and
runs dense math on them with the exact mask ``start_j <= t < end_j`` (and equal segments).
Tiles are processed a few at a time under ``lax.map`` with rematerialisation, so memory stays
O(B * H * T * D) plus the key lists, forward and backward. When the window covers nearly the
whole sequence (or there is none), or attention is not causal, every tile uses all keys.
This path runs anywhere (CPU, GPU, TPU); the Pallas kernels replace it where they exist.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from dma_jax.ops.reference import masked_softmax
from dma_jax.remat import SELECTION
from dma_jax.selection.tables import key_intervals, num_tiles, tile_key_lists

_ELEMENTS_PER_STEP = 1 << 24  # logits per lax.map step, across batch and heads


@dataclasses.dataclass(frozen=True)
class XlaConfig:
    """Tiles of the XLA path (static): ``block_q`` query positions gather one key list."""

    block_q: int = 64


def _attend_tile(q_tile, query_pos, query_seg, keys, k_rows, v_rows, bias_row, start, end, key_seg, scale):
    """One tile for one (batch, bias head).

    q_tile: (BM, R, D); query_pos, query_seg: (BM,); keys: (K,) indices, -1 = empty slot;
    k_rows, v_rows: (Tk, D); bias_row, start, end: (Tk,); key_seg: (Tk,) or None.
    Returns (BM, R, D) in float32 (float64 for float64 inputs).
    """
    safe = jnp.maximum(keys, 0)
    k_g, v_g = k_rows[safe], v_rows[safe]
    mask = (keys >= 0)[None, :] & (start[safe][None, :] <= query_pos[:, None]) & (query_pos[:, None] < end[safe][None, :])
    if key_seg is not None:
        mask = mask & (query_seg[:, None] == key_seg[safe][None, :])
    accumulate = jnp.promote_types(q_tile.dtype, jnp.float32)
    logits = jnp.einsum("qrd,kd->qrk", q_tile, k_g, preferred_element_type=accumulate) * scale
    logits = logits + bias_row[safe].astype(accumulate)[None, None, :]
    probs = masked_softmax(logits, mask[:, None, :])
    return jnp.einsum("qrk,kd->qrd", probs, v_g.astype(accumulate))


def dma_attention_xla(q, k, v, bias, window, *, causal, scale, segment_ids, key_mask, config=XlaConfig(),
                      local_window=0, sink_keys=0):
    """DMA with gathered key tiles in XLA; arguments as ``dma_attention`` (already checked).

    Returns (B, Tq, H, D) in q's dtype, computed with float32 (or wider) accumulation.
    """
    block_q = config.block_q
    batch, q_len, heads, head_dim = q.shape
    kv_len, kv_heads = k.shape[1], k.shape[2]
    bias_heads = bias.shape[1]
    per_bias_head = heads // bias_heads
    scale = head_dim**-0.5 if scale is None else scale
    block_q = min(block_q, q_len)
    tiles = num_tiles(q_len, block_q)
    q_offset = kv_len - q_len if causal else 0

    start, end = checkpoint_name(key_intervals(bias, window, q_len, causal=causal, segment_ids=segment_ids,
                                               key_mask=key_mask, local_window=local_window, sink_keys=sink_keys),
                                 SELECTION)
    sparse = causal and window is not None and window + block_q < kv_len
    if sparse:
        lists = checkpoint_name(tile_key_lists(end, q_len, block_q, window, segment_ids=segment_ids,
                                               key_mask=key_mask, bias=bias), SELECTION)
        lists = jnp.moveaxis(lists, 2, 0)  # (tiles, B, Hb, K)
        keys_per_tile = window + block_q
    else:
        lists = None
        keys_per_tile = kv_len

    # Put q in (tiles, B, Hb, BM, R, D) and k, v in (B, Hb, Tk, D) order.
    pad = tiles * block_q - q_len
    q_tiles = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0)))
    q_tiles = q_tiles.reshape(batch, tiles, block_q, bias_heads, per_bias_head, head_dim)
    q_tiles = jnp.transpose(q_tiles, (1, 0, 3, 2, 4, 5))
    kv_of_bias_head = jnp.arange(bias_heads) // (bias_heads // kv_heads)
    k_rows = jnp.transpose(k[:, :, kv_of_bias_head], (0, 2, 1, 3))
    v_rows = jnp.transpose(v[:, :, kv_of_bias_head], (0, 2, 1, 3))
    seg_q = None if segment_ids is None else jnp.pad(segment_ids, ((0, 0), (0, pad)), constant_values=-1)

    per_head = jax.vmap(_attend_tile, in_axes=(0, None, None, 0, 0, 0, 0, 0, 0, None, None))
    per_batch = jax.vmap(per_head, in_axes=(0, None, 0, 0, 0, 0, 0, 0, 0, 0, None))

    @jax.checkpoint
    def one_tile(args):
        n, q_tile, keys = args
        positions = q_offset + n * block_q + jnp.arange(block_q)
        if keys is None:
            keys = jnp.broadcast_to(jnp.arange(kv_len, dtype=jnp.int32), (batch, bias_heads, kv_len))
        if seg_q is None:
            query_seg = jnp.zeros((batch, block_q), jnp.int32)
            key_seg = None
        else:
            query_seg = jax.lax.dynamic_slice_in_dim(seg_q, n * block_q, block_q, axis=1)
            key_seg = segment_ids
        return per_batch(q_tile, positions, query_seg, keys, k_rows, v_rows, bias, start, end, key_seg, scale)

    per_step = max(1, _ELEMENTS_PER_STEP // (batch * heads * block_q * keys_per_tile))
    out = jax.lax.map(one_tile, (jnp.arange(tiles), q_tiles, lists), batch_size=min(per_step, tiles))
    # (tiles, B, Hb, BM, R, D) -> (B, Tq, H, D)
    out = jnp.transpose(out, (1, 0, 3, 2, 4, 5)).reshape(batch, tiles * block_q, heads, head_dim)
    return out[:, :q_len].astype(q.dtype)
