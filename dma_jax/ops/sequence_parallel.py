"""Sequence-parallel DMA: a sequence sharded over a mesh axis, with O(P·w) communication.

Call ``sequence_parallel_attention`` inside ``shard_map`` with every input split along T over the
mesh axis ``axis_name`` (shard s holds positions [s·L, (s+1)·L), L = T / P), causal attention.

Why it is cheap: a key that is not among the top w of the keys before shard s's first position
(of that position's segment) can never be kept by a query of shard s, because the kept set of a
causal query is the top w of the previous query's kept set plus one key: evicted keys never
return. So shard s needs only its *carried set* C_s, the top w of the keys before it, beside its
own keys. Top-w of a union is associative, so each shard offers the top min(w, L) keys of its last
segment (the only one that can continue into later shards), one all-gather brings every shard all
P offers, and shard s merges those of earlier shards in its first position's segment. Moved per
device: P·min(w, L) keys with their values, scores and positions (and the same back in the
backward, where the all-gather's transpose returns the carried keys' gradients to their owners),
never the whole sequence.

Shard s then computes exactly what chunked prefill computes (``decoding.dma_cache.cache_extend``):
DMA over [C_s in position order, its own keys], with its own queries after ``cap`` empty query
rows (``dma_attention`` needs as many queries as keys when segments are given); it is exact, up
to float rounding. With Hb = H > Hkv the carried keys differ per query head, so the shard's call
repeats k and v to H heads. ``window=None`` carries every earlier key of the segment: O(T)
communication (the dense regime).
"""

from __future__ import annotations

import math
import re

import jax.numpy as jnp
from jax import lax

from dma_jax.selection.ranges import valid_keys


def _ranked(bias, valid, index, count: int):
    """The ``count`` best keys of each (B, Hb) row: valid first, larger score, then larger index
    (the selection's order; -0.0 ties with 0.0). Returns the positions of those keys in the row."""
    score = jnp.where(valid & (bias != 0), bias, 0.0)
    ranks = (~valid).astype(jnp.int32), -score, -index
    *_, order = lax.sort((*ranks, jnp.broadcast_to(jnp.arange(bias.shape[-1], dtype=jnp.int32), bias.shape)),
                         num_keys=3)
    return order[..., :count]


def _per_bias_head(x, bias_heads):
    """(B, L, Hkv, D) -> (B, Hb, L, D): each bias head's kv head."""
    return jnp.repeat(jnp.transpose(x, (0, 2, 1, 3)), bias_heads // x.shape[2], axis=1)


def carried_keys(k, v, bias, window, *, axis_name, segment_ids=None, key_mask=None):
    """The carried set of this shard: keys of earlier shards that its queries may keep.

    Per-shard inputs: k, v (B, L, Hkv, D), bias (B, Hb, L), segment_ids (B, L), key_mask (B, L).
    Returns (k, v) (B, Hb, cap, D), bias float32 (B, Hb, cap) with -inf for empty entries, in
    ascending position order, cap = min(w, (P - 1)·L) (every earlier position for window None).
    """
    batch, length = k.shape[:2]
    bias_heads = bias.shape[1]
    shards, shard = lax.axis_size(axis_name), lax.axis_index(axis_name)
    cap = (shards - 1) * length if window is None else min(window, (shards - 1) * length)
    offer = min(cap, length)
    position = shard * length + jnp.arange(length, dtype=jnp.int32)  # global positions of this shard
    selection_bias = lax.stop_gradient(bias.astype(jnp.float32))
    valid = valid_keys(selection_bias, key_mask)
    if segment_ids is None:
        last_segment = first_segment = jnp.zeros((batch,), jnp.int32)
    else:
        first_segment, last_segment = segment_ids[:, 0].astype(jnp.int32), segment_ids[:, -1].astype(jnp.int32)
        valid = valid & (segment_ids == segment_ids[:, -1:])[:, None, :]  # only the last segment continues
    index = jnp.broadcast_to(position, bias.shape)
    picked = _ranked(selection_bias, valid, index, offer)  # (B, Hb, offer)
    take = lambda x: jnp.take_along_axis(x, picked, axis=-1)  # noqa: E731
    rows = lambda x: jnp.take_along_axis(_per_bias_head(x, bias_heads), picked[..., None], axis=2)  # noqa: E731
    offers = (rows(k), rows(v), take(bias.astype(jnp.float32)), take(selection_bias), take(valid), take(index))
    # Every shard's offer, with the segment it belongs to: (P, ...) each.
    gathered = [lax.all_gather(x, axis_name) for x in offers]
    offered_segment = lax.all_gather(last_segment, axis_name)  # (P, B)
    k_all, v_all, bias_all, rank_bias, valid_all, index_all = (
        jnp.moveaxis(x, 0, 2).reshape(x.shape[1:3] + (shards * offer,) + x.shape[4:]) for x in gathered
    )  # (B, Hb, P * offer, ...)
    source = jnp.repeat(jnp.arange(shards), offer)  # the shard each entry comes from
    same = jnp.repeat(offered_segment.T == first_segment[:, None], offer, axis=1)  # (B, P * offer)
    usable = valid_all & (source < shard)[None, None, :] & same[:, None, :]
    best = _ranked(rank_bias, usable, index_all, cap)  # (B, Hb, cap): the carried set
    keep = jnp.take_along_axis(usable, best, axis=-1)
    # Position order (empty entries first), as a prefix of the sequence: ties go to larger positions.
    best_index = jnp.where(keep, jnp.take_along_axis(index_all, best, axis=-1), -1)
    order = jnp.argsort(best_index, axis=-1, stable=True)
    best = jnp.take_along_axis(best, order, axis=-1)
    keep = jnp.take_along_axis(keep, order, axis=-1)
    carried_bias = jnp.where(keep, jnp.take_along_axis(bias_all, best, axis=-1), -jnp.inf)
    gather = lambda x: jnp.take_along_axis(x, best[..., None], axis=2)  # noqa: E731
    return gather(k_all), gather(v_all), carried_bias


def sequence_parallel_attention(q, k, v, bias, window, *, axis_name, scale=None, segment_ids=None, key_mask=None,
                                implementation=None, local_window=0, sink_keys=0):
    """Causal DMA of one shard of a sequence split over the mesh axis ``axis_name`` (call it
    inside ``shard_map``). Arguments as ``dma_attention``, each the shard's slice along T:
    q (B, L, H, D), k, v (B, L, Hkv, D), bias (B, Hb, L), segment_ids and key_mask (B, L) (segments
    may cross shard borders; each must be one contiguous run of the whole sequence). Returns this
    shard's (B, L, H, D), equal to the same rows of ``dma_attention`` on the whole sequence."""
    from dma_jax.ops.attention import dma_attention  # the op sits above this module

    if local_window or sink_keys:  # a slice's recent keys cross its border whatever their score
        raise NotImplementedError("sequence parallelism is built for the paper's DMA, not the local-window variant")

    if lax.axis_size(axis_name) == 1:
        return dma_attention(q, k, v, bias, window, scale=scale, segment_ids=segment_ids, key_mask=key_mask,
                             implementation=implementation)
    batch, length, heads, dim = q.shape
    bias_heads, kv_heads = bias.shape[1], k.shape[2]
    carried_k, carried_v, carried_bias = carried_keys(k, v, bias, window, axis_name=axis_name,
                                                      segment_ids=segment_ids, key_mask=key_mask)
    cap = carried_bias.shape[-1]
    if bias_heads == kv_heads:
        k_cat = jnp.concatenate([jnp.swapaxes(carried_k, 1, 2).astype(k.dtype), k], axis=1)
        v_cat = jnp.concatenate([jnp.swapaxes(carried_v, 1, 2).astype(v.dtype), v], axis=1)
    else:  # one selection per query head: each gets its own carried keys
        repeat = lambda x: jnp.repeat(x, bias_heads // kv_heads, axis=2)  # noqa: E731
        k_cat = jnp.concatenate([jnp.swapaxes(carried_k, 1, 2).astype(k.dtype), repeat(k)], axis=1)
        v_cat = jnp.concatenate([jnp.swapaxes(carried_v, 1, 2).astype(v.dtype), repeat(v)], axis=1)
    bias_cat = jnp.concatenate([carried_bias.astype(bias.dtype), bias], axis=-1)
    q_cat = jnp.concatenate([jnp.zeros((batch, cap, heads, dim), q.dtype), q], axis=1)
    segment_cat = None if segment_ids is None else jnp.concatenate(
        [jnp.broadcast_to(segment_ids[:, :1], (batch, cap)), segment_ids], axis=1)
    mask_cat = None if key_mask is None else jnp.concatenate([jnp.ones((batch, cap), bool), key_mask], axis=1)
    out = dma_attention(q_cat, k_cat, v_cat, bias_cat, window, scale=scale, segment_ids=segment_cat,
                        key_mask=mask_cat, implementation=implementation)
    return out[:, cap:]


_COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
_BYTES = {"f64": 8, "s64": 8, "u64": 8, "f32": 4, "s32": 4, "u32": 4, "bf16": 2, "f16": 2, "s16": 2, "u16": 2,
          "s8": 1, "u8": 1, "pred": 1}


def collective_bytes(hlo_text: str) -> dict[str, int]:
    """Bytes of the results of each kind of collective in a compiled module's HLO text
    (``jax.jit(f).lower(...).compile().as_text()``), summed per kind: what a device receives from
    an all-gather, keeps of a reduce-scatter, ... Async pairs count once (their ``-start``)."""
    pattern = re.compile(r"=\s*(\(?[^=]*?\)?)\s+(" + "|".join(_COLLECTIVES) + r")(-start)?\(")
    totals: dict[str, int] = {}
    for line in hlo_text.splitlines():
        match = pattern.search(line)
        if not match:
            continue
        shapes = re.findall(r"\b(" + "|".join(_BYTES) + r")\[([0-9,]*)\]", match.group(1))
        size = sum(_BYTES[kind] * math.prod(int(d) for d in dims.split(",") if d) for kind, dims in shapes)
        totals[match.group(2)] = totals.get(match.group(2), 0) + size
    return totals
