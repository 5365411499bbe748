"""The decoding cache of a DMA layer: the w live keys per (sequence, bias head), nothing more.

A causal query's kept set is the top-w of the previous query's kept set plus the new key (the
live-range fact), so decoding needs only those w entries: when a key arrives, it replaces the
worst entry if it beats it (ties go to the newer key, as in training). The cache never grows
with the context, and decoding from it gives exactly what a full forward pass computes.

Layout (per layer): keys, values (B, Hb, w, D) (bias head hb stores kv head hb // (Hb / Hkv)),
bias (B, Hb, w) float32, position (B, Hb, w) int32 with -1 for an empty slot.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from dma_jax.reference import masked_softmax
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


def cache_from_prefill(k, v, bias, window: int, lengths: jax.Array) -> DMACache:
    """The cache after prompts of ``lengths`` tokens: the keys kept by each prompt's last query.

    Args:
      k, v: (B, T, Hkv, D) keys (with RoPE) and values of the padded prompts.
      bias: float (B, Hb, T). window: w. lengths: int (B,), 1 <= lengths <= T; positions at or
        past a sequence's length are padding.
    """
    batch, length = k.shape[:2]
    bias_heads = bias.shape[1]
    real = jnp.arange(length)[None, :] < lengths[:, None]
    ends = live_ranges(bias, window, key_mask=real)
    last = (lengths - 1)[:, None, None]
    live = (jnp.arange(length)[None, None, :] <= last) & (ends > last)  # kept by the last query
    # Take the live keys (at most w) in index order; empty slots get position -1. With a
    # window longer than the prompt, the cache still has w slots for the keys to come.
    if window > length:
        pad = ((0, 0), (0, 0), (0, window - length))
        live = jnp.pad(live, pad)
        bias = jnp.pad(bias, pad)
        k = jnp.pad(k, ((0, 0), (0, window - length), (0, 0), (0, 0)))
        v = jnp.pad(v, ((0, 0), (0, window - length), (0, 0), (0, 0)))
    order = jnp.argsort(~live, axis=-1, stable=True)[..., :window]
    filled = jnp.take_along_axis(live, order, axis=-1)
    gather = lambda x: jnp.take_along_axis(x, order[..., None], axis=2)
    return DMACache(
        keys=gather(_per_bias_head(k, bias_heads)),
        values=gather(_per_bias_head(v, bias_heads)),
        bias=jnp.where(filled, jnp.take_along_axis(bias.astype(jnp.float32), order, axis=-1), 0.0),
        position=jnp.where(filled, order, -1).astype(jnp.int32),
    )


def cache_append(cache: DMACache, k_new, v_new, bias_new, position) -> DMACache:
    """Offer one new key per sequence; it replaces the worst entry when it beats it.

    Args:
      k_new, v_new: (B, Hkv, D); bias_new: (B, Hb); position: int (B,), the new key's index.
    """
    bias_heads = cache.bias.shape[1]
    k_new = jnp.repeat(k_new, bias_heads // k_new.shape[1], axis=1)
    v_new = jnp.repeat(v_new, bias_heads // v_new.shape[1], axis=1)
    bias_new = bias_new.astype(jnp.float32)
    empty = cache.position < 0
    # The slot to take: an empty one if any, else the worst key (smallest bias, then oldest).
    score = jnp.where(empty, -jnp.inf, cache.bias)
    worst_bias = jnp.min(score, axis=-1, keepdims=True)
    oldest_among_worst = jnp.where(score == worst_bias, jnp.where(empty, -1, cache.position), jnp.iinfo(jnp.int32).max)
    slot = jnp.where(empty.any(-1), jnp.argmax(empty, axis=-1), jnp.argmin(oldest_among_worst, axis=-1))
    has_room = empty.any(-1)
    # Ties go to the newer key, so it wins whenever its bias is not smaller than the worst.
    wins = has_room | (bias_new >= worst_bias[..., 0])
    wins = wins & (bias_new > -jnp.inf)
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
