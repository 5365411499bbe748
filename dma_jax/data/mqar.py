"""Multi-query associative recall (MQAR), as zoology's ``multiquery_ar`` defines it.

One example of length L with N key-value pairs and vocabulary V:

* keys: N distinct ids from [1, V/2); values: N distinct ids from [V/2, V);
* positions 0 .. 2N-1 hold ``k0 v0 k1 v1 ...``;
* the rest, 2N .. L-1, is split into (L - 2N) / 2 slots of two tokens; key i is queried once, at
  ``2N + 2 g_i`` where the gaps g are N distinct draws from [0, (L - 2N) / 2) with
  P(g) proportional to ``a (g + 1) ** (a - 1)`` (``power_a`` = a; small a favours short gaps);
* ``targets`` at a query position is that key's value (the next-token prediction the model must
  make); every other position has ``loss_mask = 0`` (zoology's label -100) and ``targets = 0``;
* every other input position is 0, or with ``random_non_queries`` a uniform id from [0, V).

Unlike zoology (one NumPy seed for a whole table), each example comes from its own generator
seeded by (seed, split, index), so any example can be made alone, in any order.
"""

from __future__ import annotations

import numpy as np

SPLIT_STREAMS = {"train": 0, "validation": 1}


def gap_probabilities(space: int, power_a: float) -> np.ndarray:
    """float64 (space,): P(gap = g) proportional to ``power_a * (g + 1) ** (power_a - 1)``."""
    p = power_a * np.arange(1, space + 1, dtype=np.float64) ** (power_a - 1)
    return p / p.sum()


def mqar_example(seed: int, index: int, *, seq_len: int, vocab_size: int, num_kv_pairs: int,
                 power_a: float = 0.01, random_non_queries: bool = True, split: str = "train") -> dict[str, np.ndarray]:
    """One MQAR example: dict of (L,) ``inputs``, ``targets``, ``segment_ids`` (int32, all 1) and
    ``loss_mask`` (float32, 1 at the N query positions). Same (seed, split, index) -> same example."""
    rng = np.random.default_rng([seed, SPLIT_STREAMS[split], index])
    n, length, half = num_kv_pairs, seq_len, vocab_size // 2
    context = 2 * n
    keys = rng.choice(half - 1, n, replace=False) + 1
    values = rng.choice(vocab_size - half, n, replace=False) + half
    space = (length - context) // 2
    gaps = rng.choice(space, n, replace=False, p=gap_probabilities(space, power_a))
    inputs = np.zeros(length, np.int32)
    inputs[0:context:2], inputs[1:context:2] = keys, values
    query_positions = context + 2 * gaps
    inputs[query_positions] = keys
    targets = np.zeros(length, np.int32)
    targets[query_positions] = values
    loss_mask = np.zeros(length, np.float32)
    loss_mask[query_positions] = 1.0
    if random_non_queries:
        empty = inputs == 0
        inputs[empty] = rng.integers(0, vocab_size, int(empty.sum()))
    return {"inputs": inputs, "targets": targets, "segment_ids": np.ones(length, np.int32), "loss_mask": loss_mask}


class MQARSource:
    """Random-access MQAR examples for one split; a grain ``MapDataset.source``."""

    def __init__(self, config, split: str):
        self.config, self.split = config, split
        self.size = config.mqar_num_train_examples if split == "train" else config.mqar_num_eval_examples

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        c = self.config
        return mqar_example(c.seed, int(index), seq_len=c.seq_len, vocab_size=c.vocab_size,
                            num_kv_pairs=c.mqar_num_kv_pairs, power_a=c.mqar_power_a,
                            random_non_queries=c.mqar_random_non_queries, split=self.split)


def masked_accuracy(predictions: np.ndarray, targets: np.ndarray, loss_mask: np.ndarray) -> float:
    """Share of positions with ``loss_mask > 0`` where ``predictions == targets`` (any equal shapes)."""
    mask = np.asarray(loss_mask) > 0
    return float((np.asarray(predictions)[mask] == np.asarray(targets)[mask]).mean()) if mask.any() else float("nan")
