"""Which keys a trained DMA model keeps: the share of each query's most recent keys in its window.

A DMA layer starts as sliding-window attention (``A = 0`` gives every key the same score, and
ties go to the most recent key). Training moves the scores to content, and nothing in the top-w
rule protects the last few tokens. ``recent_key_share`` measures how much recency is left.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from dma_jax.data import make_iterator
from dma_jax.selection import live_ranges


def dma_selections(model, batch: dict) -> list[dict]:
    """Run ``model`` once, eagerly, on ``batch`` ((B, T) ``inputs`` and ``segment_ids``) and return
    every DMA layer's selection inputs in call order: dicts of ``bias`` (B, Hb, T) and ``window``."""
    import dma_jax.nn.attention_layers as layers

    captured = []
    original = layers.dma_attention

    def recording(q, k, v, bias, window, **kwargs):
        captured.append({"bias": np.asarray(bias), "window": window, "local_window": kwargs.get("local_window", 0),
                         "sink_keys": kwargs.get("sink_keys", 0)})
        return original(q, k, v, bias, window, **kwargs)

    layers.dma_attention = recording
    try:
        model(jax.numpy.asarray(batch["inputs"]), jax.numpy.asarray(batch["segment_ids"]))
    finally:
        layers.dma_attention = original
    return captured


def recent_key_share(bias: np.ndarray, window: int | None, segment_ids: np.ndarray, recent: int, *,
                     local_window: int = 0, sink_keys: int = 0) -> dict:
    """Share of (query, key) pairs with the key among the query's ``recent`` latest visible keys
    (itself included) that the query keeps, against the share of all visible keys it keeps.

    Args:
      bias: (B, Hb, T) key scores; window: the layer's w; segment_ids: (B, T); recent: r >= 1;
      local_window, sink_keys: the layer's local-window variant (0, 0: the paper's DMA).

    Returns {"recent_share", "visible_share", "recent", "window"}; a sliding window of w >= r has
    ``recent_share`` 1.
    """
    segment_ids = np.asarray(segment_ids)
    ends = np.asarray(live_ranges(bias, window, segment_ids=segment_ids, local_window=local_window,
                                  sink_keys=sink_keys))  # (B, Hb, T)
    length = ends.shape[-1]
    t = np.arange(length)
    kept_recent = pairs_recent = 0
    for offset in range(recent):
        j = t - offset
        ok = j >= 0
        same = np.zeros_like(segment_ids, dtype=bool)
        same[:, ok] = segment_ids[:, ok] == segment_ids[:, j[ok]]
        same &= segment_ids != 0
        kept = ends[:, :, np.clip(j, 0, None)] > t  # (B, Hb, T)
        kept_recent += int((kept & same[:, None, :] & ok).sum())
        pairs_recent += int((same & ok).sum()) * ends.shape[1]
    # All visible keys: query t of a segment starting at s sees t - s + 1 keys and keeps min(w, that).
    starts = np.maximum.accumulate(np.where(np.diff(segment_ids, prepend=-1, axis=1) != 0, t, 0), axis=1)
    visible = np.where(segment_ids != 0, t - starts + 1, 0)
    kept_all = np.minimum(visible, window if window is not None else length)
    return {"recent": recent, "window": window, "recent_share": kept_recent / max(pairs_recent, 1),
            "visible_share": float(kept_all.sum() / max(visible.sum(), 1))}


def recency_report(run, recent: int, batch_size: int = 8) -> list[dict]:
    """``recent_key_share`` of every DMA layer of a loaded run, on its first held-out batch."""
    data = dataclasses.replace(run.config.data, global_batch_size=batch_size, eval_max_batches=1)
    batch = next(iter(make_iterator(data, "validation")))
    return [{"layer": i, **recent_key_share(s["bias"], s["window"], batch["segment_ids"], recent,
                                            local_window=s["local_window"], sink_keys=s["sink_keys"])}
            for i, s in enumerate(dma_selections(run.model, batch))]


def learned_A(model) -> list[list[float]]:
    """Every DMA layer's learned ``A`` (one gate per bias head: the key score is ``A * softplus(dt)``,
    ``dma_jax.nn.DynamicMaskAttention``), layer by layer; stacked (scanned) blocks give one list per
    layer too. Empty for a model without DMA layers."""
    from flax import nnx

    out = []
    for path, value in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        if path[-1] == "A":
            values = np.asarray(value.get_value() if hasattr(value, "get_value") else value.value, np.float64)
            out.extend(values.reshape(-1, values.shape[-1]).tolist())
    return out
