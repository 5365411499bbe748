"""Concatenate-then-split packing of a document stream into fixed-length rows.

A stream is a flat token array (every document ends with its end-of-document token) plus the
document boundaries ``offsets`` (D + 1,). Row r covers stream positions ``[r L, (r + 1) L)``:

* ``inputs[t] = stream[r L + t]`` and ``targets[t] = stream[r L + t + 1]``;
* ``segment_ids[t]`` numbers the documents inside the row 1, 2, ... in order (a document cut by a
  row boundary continues as segment 1 of the next row; its positions restart there);
* ``loss_mask[t] = 1`` when the target belongs to the same document as the input, so each
  end-of-document token is predicted but the next document's first token is not;
* past the end of the stream (the last row's tail, and any rows added by ``num_rows_padded``)
  everything is 0: ``segment_ids = 0`` marks padding.
"""

from __future__ import annotations

import numpy as np


def row_count(num_tokens: int, seq_len: int) -> int:
    """Rows needed so that every next-token prediction of the stream is in exactly one row."""
    return -(-max(num_tokens - 1, 0) // seq_len)


class PackedRows:
    """Random-access rows of a packed stream; a grain ``MapDataset.source``.

    ``rows[i]`` -> dict of (L,) arrays: ``inputs``, ``targets``, ``segment_ids`` (int32) and
    ``loss_mask`` (float32), as the module docstring defines. ``num_rows_padded`` (>= the natural
    row count) appends all-padding rows, e.g. to fill the last global batch of an eval pass.
    """

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray, seq_len: int, num_rows_padded: int | None = None):
        if offsets[0] != 0 or offsets[-1] != len(tokens) or np.any(np.diff(offsets) <= 0):
            raise ValueError("offsets must rise strictly from 0 to len(tokens)")
        self.tokens, self.offsets, self.seq_len = tokens, np.asarray(offsets, np.int64), seq_len
        self.num_rows = row_count(len(tokens), seq_len)
        self.num_rows_padded = self.num_rows if num_rows_padded is None else num_rows_padded
        if self.num_rows_padded < self.num_rows:
            raise ValueError(f"num_rows_padded={num_rows_padded} < {self.num_rows} rows of data")

    def __len__(self) -> int:
        return self.num_rows_padded

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        length, n = self.seq_len, len(self.tokens)
        if not 0 <= index < self.num_rows_padded:
            raise IndexError(f"row {index} out of range [0, {self.num_rows_padded})")
        start = index * length                                   # the row reads stream[start : stop]
        stop = min(start + length + 1, n)                        # its inputs and the one next token
        window = np.zeros(length + 1, np.int32)
        count = max(stop - start, 0)                             # window[:count] exists
        window[:count] = self.tokens[start:stop]
        # document of window[t], counted from the row's first document: the boundaries inside
        boundaries = self.offsets[np.searchsorted(self.offsets, start, side="right"):
                                  np.searchsorted(self.offsets, stop - 1, side="right")]
        starts = np.zeros(length + 1, np.int32)
        starts[boundaries - start] = 1
        document = np.cumsum(starts, dtype=np.int32)
        valid = np.arange(length + 1) < count
        real = valid[1:]                                         # both input and target exist
        return {
            "inputs": window[:-1],
            "targets": np.where(real, window[1:], 0),
            "segment_ids": np.where(valid[:-1], document[:-1] + 1, 0),
            "loss_mask": (real & (document[:-1] == document[1:])).astype(np.float32),
        }


def select_documents(tokens: np.ndarray, offsets: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, offsets) of the stream made of the documents where ``keep`` (D,) is true, in order."""
    lengths = np.diff(offsets)
    token_keep = np.repeat(keep, lengths)
    kept = np.asarray(tokens)[token_keep]
    return kept, np.concatenate([[0], np.cumsum(lengths[keep], dtype=np.int64)])
