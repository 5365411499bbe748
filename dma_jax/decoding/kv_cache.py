"""Position-slotted KV cache for the dense baselines: all keys (MHA) or a ring of the last w (SWA).

Layout: keys, values (B, S, Hkv, D); position (B, S) int32, -1 for an empty slot. Key t lives in
slot ``t % S``: with S >= the total length nothing is overwritten (MHA); with S = w the slot
holds the last w keys (SWA's ring buffer).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from dma_jax.ops import masked_softmax


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


def kv_cache_append(cache: KVCache, k_new, v_new, position, lengths=None) -> KVCache:
    """Write keys at ``position`` (B, C) with k_new, v_new (B, C, Hkv, D) into slots ``position % S``.

    Positions at or past ``lengths`` (B,) are padding and are not written (in a ring they would
    overwrite real keys). A ring (S smaller than the total length) must have
    ``S >= window + C - 1`` so that a chunk does not overwrite keys its own queries still see.
    """
    size = cache.position.shape[1]
    rows = jnp.arange(cache.position.shape[0])[:, None]
    slot = position % size
    if lengths is not None:
        slot = jnp.where(position < lengths[:, None], slot, size)  # size: dropped
    return KVCache(
        keys=cache.keys.at[rows, slot].set(k_new, mode="drop"),
        values=cache.values.at[rows, slot].set(v_new, mode="drop"),
        position=cache.position.at[rows, slot].set(position.astype(jnp.int32), mode="drop"),
    )


def kv_cached_attention(q, cache: KVCache, position, window: int | None = None, scale: float | None = None):
    """Queries at ``position`` (B, C), q (B, C, H, D), over cached keys ``position - window < j <= position``.

    Returns float32 (B, C, H, D).
    """
    batch, chunk, heads, dim = q.shape
    kv_heads = cache.keys.shape[2]
    scale = dim**-0.5 if scale is None else scale
    q = q.reshape(batch, chunk, kv_heads, heads // kv_heads, dim).astype(jnp.float32)
    logits = jnp.einsum("bcgrd,bsgd->bgrcs", q, cache.keys.astype(jnp.float32)) * scale
    t = position[:, :, None]
    visible = (cache.position[:, None, :] >= 0) & (cache.position[:, None, :] <= t)
    if window is not None:
        visible = visible & (cache.position[:, None, :] > t - window)
    probs = masked_softmax(logits, visible[:, None, None])
    out = jnp.einsum("bgrcs,bsgd->bcgrd", probs, cache.values.astype(jnp.float32))
    return out.reshape(batch, chunk, heads, dim)
