"""The decoding cache of a DMA layer: the w live keys per (sequence, bias head), nothing more.

A causal query's kept set is the top-w of the previous query's kept set plus the new key (the
live-range fact), so decoding needs only those w entries: when a key arrives, it replaces the
worst entry if it beats it (ties go to the newer key, as in training). The cache never grows
with the context, and decoding from it gives exactly what a full forward pass computes.

The local-window variant (``local_window`` l, ``sink_keys`` s) keeps w entries too: the s sinks
(the smallest positions), the l newest other entries, and the best older ones. A new key always
enters (as local, when l > 0); the entry it pushes out of the local window joins the older ones,
and the worst of those leaves.

Layout (per layer): keys, values (B, Hb, w, D) (bias head hb stores kv head hb // (Hb / Hkv)),
bias (B, Hb, w) float32, position (B, Hb, w) int32 with -1 for an empty slot.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from dma_jax.ops import dma_attention, masked_softmax
from dma_jax.selection import live_ranges


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class DMACache:
    keys: jax.Array  # (B, Hb, w, D)
    values: jax.Array  # (B, Hb, w, D)
    bias: jax.Array  # (B, Hb, w) float32
    position: jax.Array  # (B, Hb, w) int32, -1: empty

    @property
    def window(self) -> int:
        return self.position.shape[-1]


def _per_bias_head(x, bias_heads):
    """(B, T, Hkv, D) -> (B, Hb, T, D), repeating each kv head for its bias heads."""
    return jnp.repeat(jnp.transpose(x, (0, 2, 1, 3)), bias_heads // x.shape[2], axis=1)


def _cache_of_live(keys, values, bias, position, live, window: int) -> DMACache:
    """Pack the live entries (at most ``window`` per row) of (B, Hb, T, ...) arrays into a cache.

    Entries keep their index order; with fewer than ``window`` live, the rest are empty slots.
    """
    length = live.shape[-1]
    if window > length:  # the cache still has w slots for the keys to come
        pad = ((0, 0), (0, 0), (0, window - length))
        live, bias, position = jnp.pad(live, pad), jnp.pad(bias, pad), jnp.pad(position, pad)
        keys = jnp.pad(keys, pad + ((0, 0),))
        values = jnp.pad(values, pad + ((0, 0),))
    order = jnp.argsort(~live, axis=-1, stable=True)[..., :window]
    filled = jnp.take_along_axis(live, order, axis=-1)
    gather = lambda x: jnp.take_along_axis(x, order[..., None], axis=2)
    return DMACache(
        keys=gather(keys),
        values=gather(values),
        bias=jnp.where(filled, jnp.take_along_axis(bias.astype(jnp.float32), order, axis=-1), 0.0),
        position=jnp.where(filled, jnp.take_along_axis(position, order, axis=-1), -1).astype(jnp.int32),
    )


def cache_from_prefill(k, v, bias, window: int, lengths: jax.Array, local_window: int = 0,
                       sink_keys: int = 0) -> DMACache:
    """The cache after prompts of ``lengths`` tokens: the keys kept by each prompt's last query.

    Args:
      k, v: (B, T, Hkv, D) keys (with RoPE) and values of the padded prompts.
      bias: float (B, Hb, T). window: w. lengths: int (B,), 1 <= lengths <= T; positions at or
        past a sequence's length are padding. local_window, sink_keys: the variant's (``live_ranges``).
    """
    batch, length = k.shape[:2]
    bias_heads = bias.shape[1]
    index = jnp.arange(length)
    ends = live_ranges(bias, window, key_mask=index[None, :] < lengths[:, None], local_window=local_window,
                       sink_keys=sink_keys)
    last = (lengths - 1)[:, None, None]
    live = (index[None, None, :] <= last) & (ends > last)  # kept by the last query
    position = jnp.broadcast_to(index, bias.shape).astype(jnp.int32)
    return _cache_of_live(_per_bias_head(k, bias_heads), _per_bias_head(v, bias_heads), bias, position, live, window)


def cache_extend(cache: DMACache, q, k, v, bias, positions, lengths=None, local_window: int = 0, sink_keys: int = 0):
    """C new tokens per sequence: their attention outputs, and the cache after them.

    The keys a chunk query may keep are the cache's live keys (all earlier) and the chunk's own
    keys up to it: DMA over that list (cache entries in position order, then the chunk) is exact,
    because keys evicted before the chunk never return.

    Args:
      q: (B, C, H, D); k, v: (B, C, Hkv, D); bias: float (B, Hb, C); positions: int (B, C).
      lengths: optional int (B,): tokens at positions >= lengths are padding (not offered).
      local_window, sink_keys: the variant's; the cache holds its sinks first (their positions are
        the smallest) and its local keys last, so the list's own variant selection is exact.

    Returns:
      (out float (B, C, H, D), cache).
    """
    batch, chunk = positions.shape
    bias_heads, window = cache.bias.shape[1], cache.window
    real = jnp.ones((batch, chunk), bool) if lengths is None else positions < lengths[:, None]
    order = jnp.argsort(cache.position, axis=-1)  # empty slots (-1) first
    gather = lambda x: jnp.take_along_axis(x, order.reshape(order.shape + (1,) * (x.ndim - 3)), axis=2)
    keys = jnp.concatenate([gather(cache.keys), _per_bias_head(k, bias_heads).astype(cache.keys.dtype)], axis=2)
    values = jnp.concatenate([gather(cache.values), _per_bias_head(v, bias_heads).astype(cache.values.dtype)], axis=2)
    cached_position = gather(cache.position)
    all_bias = jnp.concatenate([
        jnp.where(cached_position >= 0, gather(cache.bias), -jnp.inf),
        jnp.where(real[:, None, :], bias.astype(jnp.float32), -jnp.inf),
    ], axis=-1)
    out = dma_attention(
        q, jnp.swapaxes(keys, 1, 2).astype(q.dtype), jnp.swapaxes(values, 1, 2).astype(q.dtype), all_bias, window,
        local_window=local_window, sink_keys=sink_keys,
    )
    # The new cache: what the last real query keeps (the old cache when the chunk has none).
    last = (window + real.sum(axis=1) - 1)[:, None, None]
    index = jnp.arange(window + chunk)
    ends = live_ranges(all_bias, window, local_window=local_window, sink_keys=sink_keys)
    live = (index[None, None, :] <= last) & (ends > last)
    position = jnp.concatenate(
        [cached_position, jnp.broadcast_to(positions[:, None, :], (batch, bias_heads, chunk)).astype(jnp.int32)], axis=-1
    )
    return out, _cache_of_live(keys, values, all_bias, position, live, window)


def cache_append(cache: DMACache, k_new, v_new, bias_new, position, local_window: int = 0,
                 sink_keys: int = 0) -> DMACache:
    """Offer one new key per sequence; it replaces the worst entry when it beats it (DMA), or, in
    the local-window variant, always enters and the worst older entry leaves.

    Args:
      k_new, v_new: (B, Hkv, D); bias_new: (B, Hb); position: int (B,), the new key's index.
      local_window, sink_keys: the variant's (``live_ranges``); 0 and 0 is DMA.
    """
    bias_heads = cache.bias.shape[1]
    k_new = jnp.repeat(k_new, bias_heads // k_new.shape[1], axis=1)
    v_new = jnp.repeat(v_new, bias_heads // v_new.shape[1], axis=1)
    bias_new = bias_new.astype(jnp.float32)
    empty = cache.position < 0
    has_room = empty.any(-1)
    # Who may leave: not the sinks (the smallest positions), not the local keys that stay local
    # (the local_window - 1 newest others: the newest local key is pushed out to the older ones).
    never = jnp.iinfo(jnp.int32).max
    order = jnp.argsort(jnp.where(empty, never, cache.position), axis=-1)  # filled slots by position
    filled = (~empty).sum(-1, keepdims=True)
    place = jnp.argsort(order, axis=-1)  # each slot's rank by position
    stays = (place < sink_keys) | ((place >= filled - max(local_window - 1, 0)) & (local_window > 0))
    candidate = ~empty & ~stays
    # The slot to take: an empty one if any, else the worst candidate (smallest bias, then oldest).
    worst_bias = jnp.min(jnp.where(candidate, cache.bias, jnp.inf), axis=-1)
    is_worst = candidate & (cache.bias == worst_bias[..., None])
    oldest_worst = jnp.argmin(jnp.where(is_worst, cache.position, never), axis=-1)
    slot = jnp.where(has_room, jnp.argmax(empty, axis=-1), oldest_worst)
    # Ties go to the newer key, so it wins whenever its bias is not smaller than the worst; a new
    # key of the variant is local, so it always enters.
    wins = (has_room | (bias_new >= worst_bias) | (local_window > 0)) & (bias_new > -jnp.inf)
    take = wins[..., None] & (jnp.arange(cache.window) == slot[..., None])  # (B, Hb, w)
    return DMACache(
        keys=jnp.where(take[..., None], k_new[:, :, None, :], cache.keys),
        values=jnp.where(take[..., None], v_new[:, :, None, :], cache.values),
        bias=jnp.where(take, bias_new[..., None], cache.bias),
        position=jnp.where(take, position.astype(jnp.int32)[:, None, None], cache.position),
    )


def cached_attention(q, cache: DMACache, scale: float | None = None):
    """One query per sequence against the cache: q (B, H, D) -> (B, H, D).

    Query head h uses bias head ``h // (H / Hb)``; equal to row t of ``dma_attention`` when the
    cache holds the keys offered up to position t.
    """
    batch, heads, head_dim = q.shape
    bias_heads = cache.bias.shape[1]
    scale = head_dim**-0.5 if scale is None else scale
    q = q.reshape(batch, bias_heads, heads // bias_heads, head_dim)
    logits = jnp.einsum("bgrd,bgwd->bgrw", q.astype(jnp.float32), cache.keys.astype(jnp.float32)) * scale
    logits = logits + cache.bias[:, :, None, :]
    probs = masked_softmax(logits, (cache.position >= 0)[:, :, None, :])
    out = jnp.einsum("bgrw,bgwd->bgrd", probs, cache.values.astype(jnp.float32))
    return out.reshape(batch, heads, head_dim).astype(q.dtype)
