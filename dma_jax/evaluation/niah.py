"""Needle-in-a-haystack accuracy by (context length, needle depth), scored exactly."""

from __future__ import annotations

import numpy as np
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from dma_jax.data import build_niah
from dma_jax.evaluation.scoring import BatchScorer


def niah_batch(tokenizer: Tokenizer, length: int, depth: float, seeds) -> dict[str, np.ndarray]:
    """Rows of prompt (``length`` tokens) + answer, loss on the answer tokens only, padded to one
    width. Keys: inputs, targets, segment_ids, loss_mask, each (len(seeds), width)."""
    examples = [build_niah(tokenizer, length, depth, int(seed)) for seed in seeds]
    width = max(len(e.prompt_ids) + len(e.answer_ids) for e in examples) - 1
    batch = {k: np.zeros((len(examples), width), np.int32) for k in ("inputs", "targets", "segment_ids")}
    batch["loss_mask"] = np.zeros((len(examples), width), np.float32)
    for row, example in enumerate(examples):
        sequence = np.asarray(example.prompt_ids + example.answer_ids, np.int32)
        n = len(sequence) - 1
        batch["inputs"][row, :n], batch["targets"][row, :n] = sequence[:-1], sequence[1:]
        batch["segment_ids"][row, :n] = 1
        batch["loss_mask"][row, len(example.prompt_ids) - 1 : n] = 1.0
    return batch


def niah_accuracy(scorer: BatchScorer, tokenizer: Tokenizer, lengths, depths, *, per_cell: int = 8, seed: int = 0,
                  progress: bool = True) -> list[dict]:
    """Exact-match accuracy of the answer for each (length, depth): one dict per cell with
    length, depth, accuracy, token_accuracy, examples.

    Scored by teacher forcing: an example counts when the argmax predicts every answer token,
    which is exactly when greedy decoding would produce the answer. Seeds differ per cell.
    """
    rows = []
    cells = [(length, depth) for length in lengths for depth in depths]
    for i, (length, depth) in enumerate(tqdm(cells, desc="niah", disable=not progress, leave=False)):
        seeds = 1_000_000 * (seed + 1) + per_cell * i + np.arange(per_cell)
        scores = scorer(niah_batch(tokenizer, length, depth, seeds))
        rows.append({"length": length, "depth": depth, "accuracy": float(scores["exact"].mean()),
                     "token_accuracy": float(scores["correct"].sum() / scores["tokens"].sum()), "examples": per_cell})
    return rows
