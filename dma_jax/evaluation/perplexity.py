"""Perplexity on held-out text: mean token NLL over the validation split's disjoint windows."""

from __future__ import annotations

import dataclasses
import math

from tqdm.auto import tqdm

from dma_jax.data import DataConfig, make_iterator
from dma_jax.evaluation.scoring import BatchScorer


def perplexity(scorer: BatchScorer, data: DataConfig, *, seq_len: int | None = None, batch_size: int = 8,
               max_batches: int | None = None, progress: bool = True) -> dict:
    """Loss and perplexity over the held-out documents of ``data`` (kind "lm"), cut into disjoint
    windows of ``seq_len`` tokens (default: the training length); padding rows do not count.

    Returns {"loss", "perplexity", "tokens", "windows", "seq_len"}.
    """
    if data.kind != "lm":
        raise ValueError(f"perplexity needs data.kind='lm', got {data.kind!r}")
    data = dataclasses.replace(data, seq_len=seq_len or data.seq_len, global_batch_size=batch_size,
                               eval_max_batches=max_batches)
    nll = tokens = windows = 0.0
    for batch in tqdm(make_iterator(data, "validation"), desc=f"perplexity T={data.seq_len}", disable=not progress,
                      leave=False):
        scores = scorer(batch)
        nll += float(scores["nll"].sum())
        tokens += float(scores["tokens"].sum())
        windows += int((scores["tokens"] > 0).sum())
    if tokens == 0:
        raise ValueError("the validation split holds no tokens")
    loss = nll / tokens
    return {"loss": loss, "perplexity": math.exp(loss), "tokens": tokens, "windows": windows, "seq_len": data.seq_len}
