"""An independent, loop-by-loop oracle for dynamic mask attention (DMA).

Shares no code with ``dma_jax``. The key selection is done in plain Python on concrete
numpy values; the attention itself is a differentiable ``jnp`` function of (q, k, v, bias)
built row by row over the fixed kept-index lists, so ``jax.grad`` works through it.

Only for tiny inputs (T <= 16, B * H * Tq <= ~200 rows): it traces one Python loop
iteration per (batch, query head, query).

Semantics (what the library promises):
  q (B, Tq, H, D); k, v (B, Tk, Hkv, D); bias (B, Hb, Tk).
  Causal: key j is visible to query t iff j <= t + Tk - Tq.
  segment_ids (B, T): only keys of the query's segment. key_mask (B, Tk): only True keys.
  A key whose bias is -inf (or NaN) is never kept.
  Kept keys of query t under bias head hb: the min(w, #visible) visible keys with the largest
  bias, ties to the larger key index (w = None: all visible keys).
  Query head h uses kv head h // (H // Hkv) and bias head h // (H // Hb).
  Output: softmax over kept keys of scale * q.k + bias, times v; zeros if nothing is kept.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def _is_valid_bias(value: float) -> bool:
    return not (math.isnan(value) or value == -math.inf)


def naive_kept_sets(
    bias,
    window,
    q_len,
    *,
    causal=True,
    segment_ids=None,
    key_mask=None,
    local_window=0,
    sink_keys=0,
):
    """Kept key indices, as nested Python lists ``kept[b][hb][t]`` (ascending indices).

    ``bias`` must be concrete (numpy or a concrete jax array). ``local_window`` l and ``sink_keys``
    s (causal): the first s valid keys of the query's segment, its last l other visible valid keys,
    and the ``window - l - s`` best of the rest.
    """
    bias = np.asarray(bias, dtype=np.float64)
    batch, bias_heads, kv_len = bias.shape
    seg = None if segment_ids is None else np.asarray(segment_ids)
    mask = None if key_mask is None else np.asarray(key_mask)
    kept = []
    for b in range(batch):
        per_head = []
        for hb in range(bias_heads):
            per_query = []
            for t in range(q_len):
                visible = []
                for j in range(kv_len):
                    if causal and not j <= t + kv_len - q_len:
                        continue
                    if seg is not None and int(seg[b, t]) != int(seg[b, j]):
                        continue
                    if mask is not None and not bool(mask[b, j]):
                        continue
                    value = float(bias[b, hb, j])
                    if not _is_valid_bias(value):
                        continue
                    visible.append((value, j))
                # Largest bias first; ties to the larger index. Python compares -0.0 == 0.0.
                if window is not None and (local_window or sink_keys) and len(visible) > window:
                    in_order = sorted(visible, key=lambda pair: pair[1])  # by position
                    sinks, rest = in_order[:sink_keys], in_order[sink_keys:]
                    local = rest[len(rest) - local_window:] if local_window else []
                    older = rest[: len(rest) - local_window] if local_window else rest
                    best = sorted(older, key=lambda pair: (-pair[0], -pair[1]))[: window - local_window - sink_keys]
                    per_query.append(sorted(j for _, j in sinks + local + best))
                    continue
                ranked = sorted(visible, key=lambda pair: (-pair[0], -pair[1]))
                chosen = ranked if window is None else ranked[:window]
                per_query.append(sorted(j for _, j in chosen))
            per_head.append(per_query)
        kept.append(per_head)
    return kept


def kept_sets_to_mask(kept, kv_len) -> np.ndarray:
    """bool (B, Hb, Tq, Tk) from ``naive_kept_sets`` lists."""
    batch, bias_heads, q_len = len(kept), len(kept[0]), len(kept[0][0])
    mask = np.zeros((batch, bias_heads, q_len, kv_len), dtype=bool)
    for b in range(batch):
        for hb in range(bias_heads):
            for t in range(q_len):
                for j in kept[b][hb][t]:
                    mask[b, hb, t, j] = True
    return mask


def naive_attention_with_kept(q, k, v, bias, kept, *, scale=None):
    """Differentiable attention over fixed kept lists ``kept[b][hb][t]``.

    A jnp function of (q, k, v, bias): use it under ``jax.grad`` / ``jax.vjp``. Each query row
    gathers exactly its listed keys (lists padded to the longest, the padding weighted 0) and takes
    a softmax over them; a row that keeps nothing is zeros, with no gradient.
    """
    batch, q_len, heads, head_dim = q.shape
    kv_heads, bias_heads = k.shape[2], bias.shape[1]
    if scale is None:
        scale = 1.0 / math.sqrt(head_dim)
    width = max(1, max(len(row) for per_head in kept for per_query in per_head for row in per_query))
    index = np.zeros((batch, heads, q_len, width), np.int32)
    listed = np.zeros((batch, heads, q_len, width), bool)
    for b in range(batch):
        for h in range(heads):
            for t in range(q_len):
                row = kept[b][h // (heads // bias_heads)][t]
                index[b, h, t, : len(row)], listed[b, h, t, : len(row)] = row, True
    row = np.arange(batch)[:, None, None, None]  # broadcast against index (B, H, Tq, n)
    kv_head = (np.arange(heads) // (heads // kv_heads))[None, :, None, None]
    bias_head = (np.arange(heads) // (heads // bias_heads))[None, :, None, None]
    keys = k.transpose(0, 2, 1, 3)[row, kv_head, index]  # (B, H, Tq, n, D)
    values = v.transpose(0, 2, 1, 3)[row, kv_head, index]
    key_bias = bias[row, bias_head, index]  # (B, H, Tq, n)
    logits = scale * jnp.einsum("bhtnd,bthd->bhtn", keys, q) + key_bias
    logits = jnp.where(listed, logits, -jnp.inf)
    top = jnp.where(listed.any(-1, keepdims=True), jnp.max(logits, axis=-1, keepdims=True), 0.0)
    weights = jnp.where(listed, jnp.exp(logits - jax.lax.stop_gradient(top)), 0.0)
    total = jnp.sum(weights, axis=-1, keepdims=True)
    probs = weights / jnp.where(total > 0, total, 1.0)
    out = jnp.einsum("bhtn,bhtnd->bthd", probs, values)
    return out.astype(q.dtype)


def naive_dma_attention(
    q,
    k,
    v,
    bias,
    window,
    *,
    causal=True,
    scale=None,
    segment_ids=None,
    key_mask=None,
):
    """Naive DMA: kept lists from concrete bias, then differentiable attention over them.

    ``bias`` must be concrete when this is called: to differentiate, compute
    ``naive_kept_sets`` first and call ``naive_attention_with_kept`` under ``jax.grad``,
    or pass concrete arrays and differentiate ``naive_dma_fn``.
    """
    kept = naive_kept_sets(
        np.asarray(bias), window, q.shape[1], causal=causal, segment_ids=segment_ids, key_mask=key_mask
    )
    return naive_attention_with_kept(q, k, v, bias, kept, scale=scale)


def naive_dma_fn(bias, window, q_len, *, causal=True, scale=None, segment_ids=None, key_mask=None):
    """A function ``f(q, k, v, bias)`` with the selection fixed from this concrete ``bias``.

    ``f`` is differentiable in all four inputs (the selection has no gradient).
    """
    kept = naive_kept_sets(
        np.asarray(bias), window, q_len, causal=causal, segment_ids=segment_ids, key_mask=key_mask
    )

    def f(q, k, v, bias_):
        return naive_attention_with_kept(q, k, v, bias_, kept, scale=scale)

    return f
