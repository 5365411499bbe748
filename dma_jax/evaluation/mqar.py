"""MQAR accuracy by slice: (sequence length, number of key-value pairs)."""

from __future__ import annotations

import dataclasses
import itertools

from tqdm.auto import tqdm

from dma_jax.data import DataConfig, make_iterator
from dma_jax.evaluation.scoring import BatchScorer


def mqar_accuracy(scorer: BatchScorer, data: DataConfig, seq_lens, num_pairs, *, examples: int = 256,
                  batch_size: int = 32, progress: bool = True) -> list[dict]:
    """Query accuracy for every (seq_len, num_kv_pairs) slice, on ``examples`` validation examples
    of ``data`` (kind "mqar"; its vocabulary and power law) regenerated at that slice.

    Slices that MQAR cannot build (more than seq_len / 4 pairs) are skipped. Returns one dict per
    slice: seq_len, num_kv_pairs, accuracy (over query tokens), exact (whole examples right),
    queries, examples.
    """
    if data.kind != "mqar":
        raise ValueError(f"mqar_accuracy needs data.kind='mqar', got {data.kind!r}")
    rows = []
    for seq_len, pairs in tqdm(list(itertools.product(seq_lens, num_pairs)), desc="mqar", disable=not progress,
                               leave=False):
        if 4 * pairs > seq_len:
            continue
        sliced = dataclasses.replace(data, seq_len=seq_len, mqar_num_kv_pairs=pairs, global_batch_size=batch_size,
                                     mqar_num_eval_examples=examples, eval_max_batches=None)
        correct = queries = exact = count = 0
        for batch in make_iterator(sliced, "validation"):
            scores = scorer(batch)
            real = scores["tokens"] > 0
            correct += float(scores["correct"].sum())
            queries += float(scores["tokens"].sum())
            exact += int(scores["exact"][real].sum())
            count += int(real.sum())
        rows.append({"seq_len": seq_len, "num_kv_pairs": pairs, "accuracy": correct / max(queries, 1),
                     "exact": exact / max(count, 1), "queries": queries, "examples": count})
    return rows
