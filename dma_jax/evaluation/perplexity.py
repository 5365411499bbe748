"""Perplexity on held-out text: mean token NLL over the validation split's disjoint windows."""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from dma_jax.data import DataConfig, make_iterator
from dma_jax.evaluation.scoring import BatchScorer
from dma_jax.models import positions_in_segments


def perplexity(scorer: BatchScorer, data: DataConfig, *, seq_len: int | None = None, batch_size: int = 8,
               max_batches: int | None = None, progress: bool = True, split_at: int | None = None) -> dict:
    """Loss and perplexity over the held-out documents of ``data`` (kind "lm"), cut into disjoint
    windows of ``seq_len`` tokens (default: the training length); padding rows do not count.

    Returns {"loss", "perplexity", "tokens", "windows", "seq_len"}; with ``split_at`` = s also
    "by_position": {"split_at": s, "before": {"loss", "tokens"}, "after": {...}}, the loss of the tokens
    that see fewer than s earlier keys of their document in the window (position < s: a window of
    s keeps all of them) and of the rest.
    """
    if data.kind != "lm":
        raise ValueError(f"perplexity needs data.kind='lm', got {data.kind!r}")
    data = dataclasses.replace(data, seq_len=seq_len or data.seq_len, global_batch_size=batch_size,
                               eval_max_batches=max_batches)
    nll = tokens = windows = 0.0
    split = {"before": [0.0, 0.0], "after": [0.0, 0.0]}  # [nll, tokens]
    for batch in tqdm(make_iterator(data, "validation"), desc=f"perplexity T={data.seq_len}", disable=not progress,
                      leave=False):
        scores = scorer(batch)
        nll += float(scores["nll"].sum())
        tokens += float(scores["tokens"].sum())
        windows += int((scores["tokens"] > 0).sum())
        if split_at is not None:
            early = np.asarray(positions_in_segments(jnp.asarray(batch["segment_ids"]))) < split_at
            counted = np.asarray(batch["loss_mask"]) > 0
            for name, where in (("before", early & counted), ("after", ~early & counted)):
                split[name][0] += float(scores["token_nll"][where].sum())
                split[name][1] += float(where.sum())
    if tokens == 0:
        raise ValueError("the validation split holds no tokens")
    loss = nll / tokens
    result = {"loss": loss, "perplexity": math.exp(loss), "tokens": tokens, "windows": windows, "seq_len": data.seq_len}
    if split_at is not None:
        result["by_position"] = {"split_at": split_at, **{
            name: {"loss": total / count if count else None, "tokens": count} for name, (total, count) in split.items()}}
    return result
