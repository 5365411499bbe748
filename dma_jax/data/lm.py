"""Language-modelling rows from a tokenized corpus (the folder ``dma_jax.data.tokenize`` writes).

``lm_rows(corpus_path, split, seq_len)`` keeps the documents of one split (``validation.npy``
marks the held-out ones), concatenates them in corpus order and packs them into rows of L tokens
(``dma_jax.data.packing``): training shuffles these rows, validation reads them in order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dma_jax.data.packing import PackedRows, row_count, select_documents


def load_split(corpus_path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, offsets) of the split's documents, concatenated in corpus order."""
    corpus_path = Path(corpus_path)
    tokens = np.load(corpus_path / "tokens.npy", mmap_mode="r")
    offsets = np.load(corpus_path / "offsets.npy")
    held_out = np.load(corpus_path / "validation.npy")
    keep = held_out if split == "validation" else ~held_out
    if not keep.any():
        raise ValueError(f"the {split} split of {str(corpus_path)!r} has no documents")
    return select_documents(tokens, offsets, keep)


def lm_rows(corpus_path: str | Path, split: str, seq_len: int, pad_rows_to_multiple: int = 1) -> PackedRows:
    """Packed rows of the split; the row count is rounded up to a multiple of
    ``pad_rows_to_multiple`` with all-padding rows (so an eval pass ends on a full global batch)."""
    tokens, offsets = load_split(corpus_path, split)
    rows = row_count(len(tokens), seq_len)
    return PackedRows(tokens, offsets, seq_len, -(-rows // pad_rows_to_multiple) * pad_rows_to_multiple)

