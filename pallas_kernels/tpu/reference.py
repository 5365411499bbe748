"""Dense reference of the TPU kernels, in their own layouts (plain jnp, differentiable).

A TPU program attends from one query tile to the entries of its key list: the tile's carried keys
(its row of the slot table, -1 = empty) and then its own keys ``[t0, t0 + own_chunks * block_k)``,
each entry with its bias and live range ``[start, end)`` in the metadata lanes (0, 0 for an absent
entry). This reference computes exactly that, all entries at once, for tests. The backward
kernels compute the gradients of this function.
"""

from __future__ import annotations

import jax.numpy as jnp


def list_attention_reference(q_tiles, k, v, keys, meta, offsets, *, scale, block_q, q_offset, own_chunks, zero_row):
    """Reference of ``dma_forward_tpu`` (same arguments but ``counts`` and ``options``), in float32.

    Returns (out (B, Hb, tiles, rows, Dp) float32, lse (B, Hb, tiles, 1, rows) with +inf on rows
    that keep no key).
    """
    batch, bias_heads, tiles, rows, _ = q_tiles.shape
    group = bias_heads // k.shape[1]
    bias, start, end = (x.reshape(x.shape[:3] + (-1,)) for x in meta)  # (B, Hb, tiles, entries)
    block_k = meta[0].shape[-1]
    t0 = q_offset + jnp.arange(tiles) * block_q
    own = t0[:, None] + jnp.arange(own_chunks * block_k)[None, :]  # (tiles, own entries)
    carried = jnp.where(keys >= 0, keys, zero_row)
    entries = jnp.concatenate([carried, jnp.broadcast_to(own, keys.shape[:2] + own.shape)], axis=-1)
    kf = jnp.repeat(k.astype(jnp.float32), group, axis=1)  # (B, Hb, kv_rows, Dp)
    vf = jnp.repeat(v.astype(jnp.float32), group, axis=1)
    gather = lambda x: jnp.take_along_axis(x[:, :, None], entries[..., None], axis=3)  # noqa: E731
    k_e, v_e = gather(kf), gather(vf)  # (B, Hb, tiles, entries, Dp)
    query = t0[:, None] + offsets[0][None, :]  # (tiles, rows)
    logits = jnp.einsum("bhnrd,bhnkd->bhnrk", q_tiles.astype(jnp.float32), k_e) * scale + bias[:, :, :, None, :]
    keep = (start[:, :, :, None, :] <= query[None, None, :, :, None]) & (query[None, None, :, :, None] < end[:, :, :, None, :])
    masked = jnp.where(keep, logits, -jnp.inf)
    row_max = jnp.max(masked, axis=-1, keepdims=True)
    safe_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
    weights = jnp.where(keep, jnp.exp(masked - safe_max), 0.0)
    total = jnp.sum(weights, axis=-1)
    safe_total = jnp.where(total == 0, 1.0, total)
    out = jnp.einsum("bhnrk,bhnkd->bhnrd", weights, v_e) / safe_total[..., None]
    lse = jnp.where(total == 0, jnp.inf, safe_max[..., 0] + jnp.log(safe_total))
    return out, lse.reshape(batch, bias_heads, tiles, 1, rows)
