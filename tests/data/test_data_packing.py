"""Concatenate-then-split rows: targets, segment ids, loss mask and padding."""

import numpy as np
import pytest

from dma_jax.data.packing import PackedRows, row_count, select_documents

# Three documents ending in the end token 0: [11 12 0] [21 0] [31 32 33 34 0]
TOKENS = np.array([11, 12, 0, 21, 0, 31, 32, 33, 34, 0], np.uint16)
OFFSETS = np.array([0, 3, 5, 10])


def test_rows_by_hand():
    rows = PackedRows(TOKENS, OFFSETS, seq_len=4)
    assert len(rows) == 3                             # 9 predictions in rows of 4
    first, last = rows[0], rows[2]
    np.testing.assert_array_equal(first["inputs"], [11, 12, 0, 21])
    np.testing.assert_array_equal(first["targets"], [12, 0, 21, 0])
    np.testing.assert_array_equal(first["segment_ids"], [1, 1, 1, 2])
    np.testing.assert_array_equal(first["loss_mask"], [1, 1, 0, 1])   # no loss across documents
    np.testing.assert_array_equal(rows[1]["segment_ids"], [1, 2, 2, 2])  # doc 2 continues as segment 1
    np.testing.assert_array_equal(last["inputs"], [34, 0, 0, 0])
    np.testing.assert_array_equal(last["targets"], [0, 0, 0, 0])
    np.testing.assert_array_equal(last["segment_ids"], [1, 1, 0, 0])   # the final end token has no target
    np.testing.assert_array_equal(last["loss_mask"], [1, 0, 0, 0])


@pytest.mark.parametrize("seq_len", [1, 3, 7, 64], ids=lambda n: f"L{n}")
def test_every_in_document_prediction_once(seq_len):
    rng = np.random.default_rng(seq_len)
    lengths = rng.integers(1, 20, 30) + 1
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    tokens = rng.integers(2, 500, offsets[-1]).astype(np.uint16)
    tokens[offsets[1:] - 1] = 0
    rows = PackedRows(tokens, offsets, seq_len, num_rows_padded=row_count(len(tokens), seq_len) + 2)
    batch = {k: np.concatenate([rows[i][k] for i in range(len(rows))]) for k in rows[0]}
    n = len(tokens) - 1
    np.testing.assert_array_equal(batch["inputs"][:n], tokens[:-1])
    same_doc = np.searchsorted(offsets, np.arange(n), "right") == np.searchsorted(offsets, np.arange(1, n + 1), "right")
    np.testing.assert_array_equal(batch["loss_mask"][:n], same_doc)
    assert batch["loss_mask"].sum() == len(tokens) - len(lengths)
    assert not batch["segment_ids"][n + 1:].any() and not batch["loss_mask"][n:].any()
    assert (batch["segment_ids"][:n + 1] >= 1).all()
    assert {k: v.dtype for k, v in rows[0].items()} == {"inputs": np.int32, "targets": np.int32,
                                                        "segment_ids": np.int32, "loss_mask": np.float32}


def test_select_documents_keeps_order():
    tokens, offsets = select_documents(TOKENS, OFFSETS, np.array([True, False, True]))
    np.testing.assert_array_equal(tokens, [11, 12, 0, 31, 32, 33, 34, 0])
    np.testing.assert_array_equal(offsets, [0, 3, 8])


@pytest.mark.parametrize("offsets", [[0, 3, 9], [1, 3, 10], [0, 3, 3, 10]], ids=["short", "no-zero", "empty-doc"])
def test_bad_offsets(offsets):
    with pytest.raises(ValueError, match="offsets"):
        PackedRows(TOKENS, np.array(offsets), 4)


def test_index_out_of_range():
    with pytest.raises(IndexError):
        PackedRows(TOKENS, OFFSETS, 4)[3]


def _reference_row(tokens, offsets, seq_len, index):
    """Row ``index`` position by position, straight from the module docstring's definition."""
    n, out = len(tokens), {k: np.zeros(seq_len, np.int32) for k in ("inputs", "targets", "segment_ids")}
    out["loss_mask"] = np.zeros(seq_len, np.float32)
    document = lambda position: np.searchsorted(offsets, position, "right")
    for t in range(seq_len):
        position = index * seq_len + t
        if position >= n:
            break
        out["inputs"][t] = tokens[position]
        out["segment_ids"][t] = document(position) - document(index * seq_len) + 1
        if position + 1 < n:
            out["targets"][t] = tokens[position + 1]
            out["loss_mask"][t] = document(position) == document(position + 1)
    return out


@pytest.mark.parametrize("seq_len", [1, 2, 5, 16], ids=lambda n: f"L{n}")
def test_rows_equal_the_position_by_position_definition(seq_len):
    rng = np.random.default_rng(100 + seq_len)
    lengths = rng.integers(1, 9, 12)                  # documents of one token too
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    tokens = rng.integers(1, 60000, offsets[-1]).astype(np.uint16)
    rows = PackedRows(tokens, offsets, seq_len, num_rows_padded=row_count(len(tokens), seq_len) + 1)
    for index in range(len(rows)):
        expected = _reference_row(tokens, offsets, seq_len, index)
        for key, value in rows[index].items():
            np.testing.assert_array_equal(value, expected[key], err_msg=f"row {index} {key}")
            assert value.dtype == expected[key].dtype and value.shape == (seq_len,)
