"""The specification of dynamic mask attention, written densely in plain jnp.

Everything here builds (B, H, Tq, Tk) arrays: use it for tests, pictures and small inputs.
Fast paths (``dma_jax.dma_attention``) are tested against these functions.
"""

from __future__ import annotations

import functools

import einops
import jax
import jax.numpy as jnp
from jax import lax

from dma_jax.selection.ranges import valid_keys
from dma_jax.validation import check_attention_args, check_selection_args


def visible_mask(
    bias: jax.Array,
    q_len: int,
    *,
    causal: bool = True,
    segment_ids: jax.Array | None = None,
    key_mask: jax.Array | None = None,
) -> jax.Array:
    """bool (B, Hb, Tq, Tk): keys a query may see before the top-w choice.

    Causal: key j is visible to query t iff ``j <= t + Tk - Tq`` (bottom-right alignment).
    Keys outside the query's segment, False in ``key_mask``, or with bias -inf/NaN are not.
    """
    _, _, kv_len = bias.shape
    visible = valid_keys(bias, key_mask)[:, :, None, :]
    if causal:
        query = jnp.arange(q_len)[:, None] + (kv_len - q_len)
        visible = visible & (jnp.arange(kv_len)[None, :] <= query)
    if segment_ids is not None:
        same = segment_ids[:, :, None] == segment_ids[:, None, :]
        visible = visible & same[:, None]
    return jnp.broadcast_to(visible, bias.shape[:2] + (q_len, kv_len))


def selection_mask(
    bias: jax.Array,
    window: int | None,
    q_len: int,
    *,
    causal: bool = True,
    segment_ids: jax.Array | None = None,
    key_mask: jax.Array | None = None,
    local_window: int = 0,
    sink_keys: int = 0,
) -> jax.Array:
    """bool (B, Hb, Tq, Tk): which keys each query keeps, by a sort per query row.

    Query t keeps the ``min(window, #visible)`` visible keys with the largest bias; ties go to
    the larger key index. ``window=None`` keeps every visible key. The local-window variant
    (causal; ``local_window`` l, ``sink_keys`` s): query t keeps the first s valid keys of its
    segment, its last l valid other keys, and the top ``window - l - s`` of the rest.
    O(Tq Tk log Tk) time and O(Tq Tk) memory: for tests and pictures, not for training.
    """
    check_selection_args(bias, window, q_len, causal, segment_ids, key_mask, local_window, sink_keys)
    return _selection_mask(bias, window, q_len, causal, segment_ids, key_mask, local_window, sink_keys)


@functools.partial(jax.jit, static_argnames=("window", "q_len", "causal", "local_window", "sink_keys"))
def _selection_mask(bias, window, q_len, causal, segment_ids, key_mask, local_window=0, sink_keys=0):
    bias = lax.stop_gradient(bias)
    visible = visible_mask(bias, q_len, causal=causal, segment_ids=segment_ids, key_mask=key_mask)
    kv_len = bias.shape[-1]
    if window is None or window >= kv_len:
        return visible
    if local_window or sink_keys:
        return _local_window_mask(bias, visible, window, q_len, segment_ids, key_mask, local_window, sink_keys)
    return _top_window(bias, visible, window)


def _local_window_mask(bias, visible, window, q_len, segment_ids, key_mask, local_window, sink_keys):
    """The variant, written directly: sinks by their valid rank in the segment, local keys by how
    many valid non-sink keys follow them up to the query, the top of the rest by a sort."""
    kv_len = bias.shape[-1]
    valid = valid_keys(bias, key_mask)  # (B, Hb, Tk)
    segment = jnp.zeros(bias.shape[::2], jnp.int32) if segment_ids is None else segment_ids
    same = segment[:, :, None] == segment[:, None, :]  # (B, Tk, Tk): [j, i] keys j and i share a segment
    before = jnp.arange(kv_len)[None, :] < jnp.arange(kv_len)[:, None]  # [j, i]: i < j
    valid_rank = jnp.einsum("bhi,bji->bhj", valid.astype(jnp.int32), (same & before).astype(jnp.int32))
    pool = valid & ~(valid_rank < sink_keys)  # (B, Hb, Tk)
    sink = valid & (valid_rank < sink_keys)
    # pool keys i with j < i <= t' in j's segment: the keys that came after j, up to the query
    query = jnp.arange(q_len) + (kv_len - q_len)
    after = (jnp.arange(kv_len)[None, :, None] > jnp.arange(kv_len)[None, None, :]) & (
        jnp.arange(kv_len)[None, :, None] <= query[:, None, None])  # [t, i, j]: j < i <= t'
    following = jnp.einsum("bhi,tij,bji->bhtj", pool.astype(jnp.int32), after.astype(jnp.int32),
                           same.astype(jnp.int32))
    local = visible & pool[:, :, None, :] & (following < local_window)
    older = visible & pool[:, :, None, :] & ~local
    top = _top_window(bias, older, window - local_window - sink_keys) if window > local_window + sink_keys else jnp.zeros_like(older)
    return (visible & sink[:, :, None, :]) | local | top


def _top_window(bias, visible, window):
    """visible & the top ``window`` of the visible keys of each query by (score, index)."""
    kv_len = bias.shape[-1]
    score = jnp.where(bias == 0, jnp.zeros_like(bias), bias)  # -0.0 ties with 0.0
    score = jnp.where(visible, score[:, :, None, :], jnp.zeros_like(score[:, :, None, :]))
    key_index = jnp.broadcast_to(jnp.arange(kv_len), visible.shape)
    hidden = (~visible).astype(jnp.int32)
    # Best first: visible keys, larger bias, larger index.
    sorted_hidden, sorted_neg_score, sorted_neg_index = lax.sort(
        (hidden, -score, -key_index), num_keys=3
    )
    w_hidden = sorted_hidden[..., window - 1 : window]
    w_neg_score = sorted_neg_score[..., window - 1 : window]
    w_neg_index = sorted_neg_index[..., window - 1 : window]
    at_least_as_good = (-score < w_neg_score) | ((-score == w_neg_score) & (-key_index <= w_neg_index))
    return visible & ((w_hidden == 1) | at_least_as_good)


def masked_softmax(logits: jax.Array, mask: jax.Array) -> jax.Array:
    """Softmax over the last axis restricted to ``mask``; rows with nothing kept give zeros.

    Masked entries get probability 0 and no gradient, even where ``logits`` is -inf or NaN.
    """
    lowest = jnp.finfo(logits.dtype).min
    masked = jnp.where(mask, logits, lowest)
    row_max = lax.stop_gradient(jnp.max(masked, axis=-1, keepdims=True))
    weights = jnp.where(mask, jnp.exp(masked - row_max), 0)
    total = jnp.sum(weights, axis=-1, keepdims=True)
    return weights / jnp.where(total == 0, jnp.ones_like(total), total)


def dma_attention_reference(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    bias: jax.Array,
    window: int | None,
    *,
    causal: bool = True,
    scale: float | None = None,
    segment_ids: jax.Array | None = None,
    key_mask: jax.Array | None = None,
    local_window: int = 0,
    sink_keys: int = 0,
) -> jax.Array:
    """Dense dynamic mask attention: the spec every other path is tested against.

    Args:
      q: (B, Tq, H, D). k, v: (B, Tk, Hkv, D), same dtype as q; H % Hkv == 0.
      bias: float (B, Hb, Tk), Hb divides H and is a multiple of Hkv (Hb = Hkv or H).
        Query head h uses kv head ``h // (H // Hkv)`` and bias head ``h // (H // Hb)``.
      window: keys kept per query (int >= 1) or None (all visible keys).
      causal: bottom-right causal alignment; queries are the last Tq positions.
      scale: multiplies q.k; default ``D ** -0.5``.
      segment_ids: optional int (B, T), Tq == Tk: attend within a segment only.
      key_mask: optional bool (B, Tk): False keys are never kept.
      local_window, sink_keys: the local-window variant (``selection_mask``).

    Returns:
      (B, Tq, H, D) in q's dtype: softmax over the kept keys of ``scale * q.k + bias``,
      times v. Arithmetic runs in the promoted dtype of q and bias, with no upcast, like a
      naive implementation would. A query that keeps no key outputs zeros.
    """
    dims = check_attention_args(q, k, v, bias, window, causal, segment_ids, key_mask, scale, local_window, sink_keys)
    scale = dims.head_dim**-0.5 if scale is None else scale
    kept = selection_mask(
        bias, window, dims.q_len, causal=causal, segment_ids=segment_ids, key_mask=key_mask,
        local_window=local_window, sink_keys=sink_keys,
    )
    per_bias_head = dims.heads // dims.bias_heads
    per_kv_head = dims.heads // dims.kv_heads
    kept = einops.repeat(kept, "b g q k -> b (g r) q k", r=per_bias_head)
    head_bias = einops.repeat(bias, "b g k -> b (g r) 1 k", r=per_bias_head)
    k = einops.repeat(k, "b t g d -> b t (g r) d", r=per_kv_head)
    v = einops.repeat(v, "b t g d -> b t (g r) d", r=per_kv_head)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * jnp.asarray(scale, q.dtype) + head_bias
    probs = masked_softmax(logits, kept)
    return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v).astype(q.dtype)
