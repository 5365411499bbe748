"""Dense references for the kernels, in their own tile layout (plain jnp, differentiable).

Given complete key tables, the kernels compute attention over exactly the keys whose live range
covers the query: ``start[j] <= t < end[j]``. These references compute that over all keys at
once, O(T^2), for tests.
"""

from __future__ import annotations

import jax.numpy as jnp


def interval_attention_reference(q_tiles, k, v, bias, start, end, *, scale, block_q, q_offset):
    """Reference of ``dma_forward`` (same arguments but the tables), in float32.

    Returns (out (B, Hb, tiles, rows, D) float32, lse (B, Hb, tiles, rows) with +inf for rows
    that keep no key).
    """
    batch, bias_heads, tiles, rows, head_dim = q_tiles.shape
    group = bias_heads // k.shape[1]
    per_position = rows // block_q
    kf = jnp.repeat(k.astype(jnp.float32), group, axis=1)  # (B, Hb, Tk, D)
    vf = jnp.repeat(v.astype(jnp.float32), group, axis=1)
    query = q_offset + (jnp.arange(tiles)[:, None] * block_q + jnp.arange(rows)[None, :] // per_position)
    logits = jnp.einsum("bhnrd,bhkd->bhnrk", q_tiles.astype(jnp.float32), kf) * scale
    logits = logits + bias.astype(jnp.float32)[:, :, None, None, :]
    keep = (start[:, :, None, None, :] <= query[None, None, :, :, None]) & (
        query[None, None, :, :, None] < end[:, :, None, None, :]
    )
    masked = jnp.where(keep, logits, -jnp.inf)
    row_max = jnp.max(masked, axis=-1, keepdims=True)
    safe_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
    weights = jnp.where(keep, jnp.exp(masked - safe_max), 0.0)
    total = jnp.sum(weights, axis=-1)
    out = jnp.einsum("bhnrk,bhkd->bhnrd", weights, vf) / jnp.where(total == 0, 1.0, total)[..., None]
    lse = jnp.where(total == 0, jnp.inf, safe_max[..., 0] + jnp.log(jnp.where(total == 0, 1.0, total)))
    return out, lse
