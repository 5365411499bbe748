"""Position-slotted KV cache for the dense baselines: all keys (MHA) or a ring of the last w (SWA).

Layout: keys, values (B, S, Hkv, D); position (B, S) int32, -1 for an empty slot. Key t lives in
slot ``t % S``: with S >= the total length nothing is overwritten (MHA); with S = w the slot
holds the last w keys (SWA's ring buffer).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from dma_jax.reference import masked_softmax


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
    keys: jax.Array
    values: jax.Array
    position: jax.Array


def kv_cache_from_prefill(k, v, size: int, lengths) -> KVCache:
    """Cache of ``size`` slots after prompts of ``lengths`` (B,) tokens; k (B, T, Hkv, Dk), v (B, T, Hkv, Dv)."""
    batch, length, kv_heads, key_dim = k.shape
    index = jnp.arange(length)
    keep = (index[None, :] < lengths[:, None]) & (index[None, :] >= lengths[:, None] - size)
    slot = jnp.where(keep, index[None, :] % size, size)  # size: dropped
    rows = jnp.arange(batch)[:, None]
    empty = KVCache(
        keys=jnp.zeros((batch, size, kv_heads, key_dim), k.dtype),
        values=jnp.zeros((batch, size, kv_heads, v.shape[-1]), v.dtype),
        position=jnp.full((batch, size), -1, jnp.int32),
    )
    return KVCache(
        keys=empty.keys.at[rows, slot].set(k, mode="drop"),
        values=empty.values.at[rows, slot].set(v, mode="drop"),
        position=empty.position.at[rows, slot].set(jnp.broadcast_to(index, (batch, length)).astype(jnp.int32), mode="drop"),
    )


def kv_cache_append(cache: KVCache, k_new, v_new, position) -> KVCache:
    """Write key ``position`` (B,) with k_new, v_new (B, Hkv, D) into slot ``position % S``."""
    size = cache.position.shape[1]
    rows = jnp.arange(cache.position.shape[0])
    slot = position % size
    return KVCache(
        keys=cache.keys.at[rows, slot].set(k_new),
        values=cache.values.at[rows, slot].set(v_new),
        position=cache.position.at[rows, slot].set(position.astype(jnp.int32)),
    )


def kv_cached_attention(q, cache: KVCache, position, window: int | None = None, scale: float | None = None):
    """Query at ``position`` (B,), q (B, H, D), over cached keys ``position - window < j <= position``."""
    batch, heads, dim = q.shape
    kv_heads = cache.keys.shape[2]
    scale = dim**-0.5 if scale is None else scale
    q = q.reshape(batch, kv_heads, heads // kv_heads, dim).astype(jnp.float32)
    logits = jnp.einsum("bgrd,bsgd->bgrs", q, cache.keys.astype(jnp.float32)) * scale
    visible = (cache.position >= 0) & (cache.position <= position[:, None])
    if window is not None:
        visible = visible & (cache.position > position[:, None] - window)
    probs = masked_softmax(logits, visible[:, None, None, :])
    out = jnp.einsum("bgrs,bsgd->bgrd", probs, cache.values.astype(jnp.float32))
    return out.reshape(batch, heads, dim)
