"""MQAR accuracy by slice (sequence length, number of key-value pairs), and by how far back each
query's pair lies: inside or beyond a window, and in power-of-two distance buckets."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from tqdm.auto import tqdm

from dma_jax.data import DataConfig, make_iterator
from dma_jax.evaluation.scoring import BatchScorer


def pair_distances(inputs: np.ndarray, loss_mask: np.ndarray, num_pairs: int) -> np.ndarray:
    """int (B, L): at each query position t, ``t - p`` where p is the position of the value of the
    pair it asks for (MQAR lays pairs out as ``k0 v0 k1 v1 ...`` and queries repeat the key); -1
    elsewhere. A causal sliding window of w keys (t - w, t] holds the value exactly when the
    distance is below w.
    """
    inputs, queries = np.asarray(inputs), np.asarray(loss_mask) > 0
    keys = inputs[:, 0 : 2 * num_pairs : 2]  # (B, N)
    match = inputs[:, :, None] == keys[:, None, :]  # (B, L, N); keys are distinct within an example
    pair = np.argmax(match, axis=-1)
    distances = np.arange(inputs.shape[1])[None, :] - (2 * pair + 1)
    return np.where(queries & match.any(-1), distances, -1)


def distance_buckets(distances: np.ndarray, hits: np.ndarray) -> list[dict]:
    """Accuracy in power-of-two buckets of pair distance: [0, 2), [2, 4), [4, 8), ...; one dict per
    non-empty bucket: lo, hi (exclusive), accuracy, queries."""
    counted = distances >= 0
    d, h = distances[counted], hits[counted]
    rows = []
    lo = 0
    while d.size and lo <= d.max():
        hi = max(2, 2 * lo)
        inside = (d >= lo) & (d < hi)
        if inside.any():
            rows.append({"lo": lo, "hi": hi, "accuracy": float(h[inside].mean()), "queries": int(inside.sum())})
        lo = hi
    return rows


def mqar_accuracy(scorer: BatchScorer, data: DataConfig, seq_lens, num_pairs, *, examples: int = 256,
                  batch_size: int = 32, window: int | None = None, progress: bool = True) -> list[dict]:
    """Query accuracy for every (seq_len, num_kv_pairs) slice, on ``examples`` validation examples
    of ``data`` (kind "mqar"; its vocabulary and power law) regenerated at that slice.

    Slices that MQAR cannot build (more than seq_len / 4 pairs) are skipped. Returns one dict per
    slice: seq_len, num_kv_pairs, accuracy (over query tokens), exact (whole examples right),
    queries, examples, and ``by_distance`` (``distance_buckets``). With ``window`` w, also
    ``inside_window`` and ``beyond_window``: the accuracy over queries whose pair's value is fewer
    than w positions back (what a sliding window of w could see) and over the rest, with their
    query counts ``queries_inside`` and ``queries_beyond``; an accuracy is None where no query falls.
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
        distances, hits = [], []
        for batch in make_iterator(sliced, "validation"):
            scores = scorer(batch)
            real = scores["tokens"] > 0
            correct += float(scores["correct"].sum())
            queries += float(scores["tokens"].sum())
            exact += int(scores["exact"][real].sum())
            count += int(real.sum())
            distances.append(pair_distances(batch["inputs"], batch["loss_mask"], pairs)[real].ravel())
            hits.append(scores["hits"][real].ravel())
        distances, hits = np.concatenate(distances), np.concatenate(hits)
        row = {"seq_len": seq_len, "num_kv_pairs": pairs, "accuracy": correct / max(queries, 1),
               "exact": exact / max(count, 1), "queries": queries, "examples": count,
               "by_distance": distance_buckets(distances, hits)}
        if window is not None:
            inside, beyond = (distances >= 0) & (distances < window), distances >= window
            row.update(window=window, inside_window=float(hits[inside].mean()) if inside.any() else None,
                       beyond_window=float(hits[beyond].mean()) if beyond.any() else None,
                       queries_inside=int(inside.sum()), queries_beyond=int(beyond.sum()))
        rows.append(row)
    return rows
