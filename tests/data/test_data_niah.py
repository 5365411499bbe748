"""Needle in a haystack: exact lengths, needle depth, the training row and the scorer."""

import numpy as np
import pytest
from tokenizers import Tokenizer

from dma_jax.data.niah import NEEDLE, build_niah, exact_match, niah_training_example
from dma_jax.data.toy_corpus import write_toy_tokens


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    tokens = write_toy_tokens(tmp_path_factory.mktemp("niah"), num_documents=40, vocab_size=300)
    return Tokenizer.from_file(str(tokens / "tokenizer.json"))


@pytest.mark.parametrize("length", [300, 557, 1000], ids=lambda n: f"T{n}")
@pytest.mark.parametrize("depth", [0.0, 0.33, 1.0], ids=lambda d: f"depth{d}")
def test_prompt_has_exact_length_and_the_needle(tokenizer, length, depth):
    ex = build_niah(tokenizer, length, depth, seed=5)
    assert len(ex.prompt_ids) == length
    text = tokenizer.decode(ex.prompt_ids)
    assert NEEDLE.format(key=ex.key, value=ex.value).strip() in text
    assert text.rstrip().endswith(f"magic number for {ex.key} is:")
    assert tokenizer.decode(ex.answer_ids).strip() == ex.value and len(ex.value) == 7


def test_needle_moves_with_depth(tokenizer):
    starts = [build_niah(tokenizer, 600, d, seed=1).needle_start for d in np.linspace(0, 1, 6)]
    assert starts == sorted(starts) and starts[0] < starts[-1]
    first = build_niah(tokenizer, 600, 0.0, seed=1)
    last = build_niah(tokenizer, 600, 1.0, seed=1)
    assert tokenizer.decode(first.prompt_ids[first.needle_start:]).startswith(" One of the special")
    assert tokenizer.decode(last.prompt_ids[last.needle_start:]).split(".")[1].startswith("\nWhat is")


def test_seed_changes_needle_and_too_short_raises(tokenizer):
    assert build_niah(tokenizer, 400, 0.5, 1).value != build_niah(tokenizer, 400, 0.5, 2).value
    with pytest.raises(ValueError, match="length=10"):
        build_niah(tokenizer, 10, 0.5, 1)
    with pytest.raises(ValueError, match="depth"):
        build_niah(tokenizer, 400, 1.5, 1)


def test_training_row_scores_only_the_answer(tokenizer):
    row = niah_training_example(tokenizer, 400, 0.5, seed=9)
    ex = build_niah(tokenizer, 401 - int(row["loss_mask"].sum()), 0.5, seed=9)
    assert row["inputs"].shape == row["targets"].shape == (400,)
    np.testing.assert_array_equal(row["targets"][row["loss_mask"] > 0], ex.answer_ids)
    np.testing.assert_array_equal(row["inputs"][: len(ex.prompt_ids)], ex.prompt_ids)
    assert row["loss_mask"][-len(ex.answer_ids):].all() and row["loss_mask"].sum() == len(ex.answer_ids)


@pytest.mark.parametrize("predicted, answer, expected", [
    (" 1234567", "1234567", True),
    ("1234567. The end", "1234567", True),
    ("12345678", "1234567", False),
    ("the number is 1234567", "1234567", False),
    ("", "1234567", False),
    ([5, 6, 7, 1], [5, 6, 7], True),
    ([5, 6], [5, 6, 7], False),
    ([5, 9, 7], [5, 6, 7], False),
], ids=["leading-space", "trailing-words", "longer-number", "not-first", "empty", "ids-prefix", "ids-short", "ids-wrong"])
def test_exact_match(predicted, answer, expected):
    assert exact_match(predicted, answer) is expected


def test_exact_match_rejects_mixed_types():
    with pytest.raises(TypeError):
        exact_match("1", [1])
