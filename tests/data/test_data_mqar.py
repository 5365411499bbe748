"""MQAR examples follow zoology's multiquery_ar layout and are deterministic per index."""

import numpy as np
import pytest

from dma_jax.data.mqar import gap_probabilities, masked_accuracy, mqar_example

CASES = [(64, 8192, 4), (128, 300, 16), (256, 8192, 64)]


@pytest.mark.parametrize("seq_len, vocab, pairs", CASES, ids=[f"L{l}-V{v}-N{n}" for l, v, n in CASES])
@pytest.mark.parametrize("random_non_queries", [True, False], ids=["noise", "zeros"])
def test_layout(seq_len, vocab, pairs, random_non_queries):
    ex = mqar_example(3, 11, seq_len=seq_len, vocab_size=vocab, num_kv_pairs=pairs, power_a=0.1,
                      random_non_queries=random_non_queries)
    inputs, targets, mask = ex["inputs"], ex["targets"], ex["loss_mask"]
    keys, values = inputs[0:2 * pairs:2], inputs[1:2 * pairs:2]
    assert len(set(keys)) == len(set(values)) == pairs
    assert ((keys >= 1) & (keys < vocab // 2)).all() and ((values >= vocab // 2) & (values < vocab)).all()
    queries = np.flatnonzero(mask)
    assert len(queries) == pairs and ((queries - 2 * pairs) % 2 == 0).all() and queries.min() >= 2 * pairs
    answer = dict(zip(keys.tolist(), values.tolist()))
    assert sorted(inputs[queries].tolist()) == sorted(keys.tolist())       # each key queried once
    assert [answer[k] for k in inputs[queries]] == targets[queries].tolist()
    assert not targets[mask == 0].any() and (ex["segment_ids"] == 1).all()
    rest = np.ones(seq_len, bool)
    rest[:2 * pairs] = rest[queries] = False
    assert inputs[rest].any() == random_non_queries
    assert inputs.dtype == targets.dtype == np.int32 and mask.dtype == np.float32


def test_deterministic_per_seed_split_and_index():
    make = lambda seed, index, split="train": mqar_example(seed, index, seq_len=64, vocab_size=512, num_kv_pairs=4, split=split)
    np.testing.assert_array_equal(make(0, 5)["inputs"], make(0, 5)["inputs"])
    for other in (make(0, 6), make(1, 5), make(0, 5, "validation")):
        assert not np.array_equal(make(0, 5)["inputs"], other["inputs"])


def test_small_power_a_favours_short_gaps():
    def mean_gap(a):
        gaps = [np.flatnonzero(mqar_example(0, i, seq_len=256, vocab_size=512, num_kv_pairs=4, power_a=a,
                                            random_non_queries=False)["loss_mask"]) for i in range(100)]
        return np.mean(np.concatenate(gaps))
    assert mean_gap(0.01) + 40 < mean_gap(1.0)
    np.testing.assert_allclose(gap_probabilities(10, 1.0), np.full(10, 0.1))


def test_masked_accuracy():
    targets = np.array([[0, 5, 0, 7]])
    mask = np.array([[0, 1, 0, 1]], np.float32)
    assert masked_accuracy(np.array([[9, 5, 9, 1]]), targets, mask) == 0.5
    assert masked_accuracy(targets, targets, mask) == 1.0
