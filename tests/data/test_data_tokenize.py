"""Tiny BPE training and the flat token file on the toy corpus."""

import json

import numpy as np
import pytest
from tokenizers import Tokenizer, models

from dma_jax.data.corpus import read_documents
from dma_jax.data.tokenize import EOD, is_validation_document, main, token_dtype, train_bpe
from dma_jax.data.toy_corpus import write_toy_corpus


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    write_toy_corpus(root / "corpus", 60, seed=0)
    main(["--corpus", str(root / "corpus"), "--out", str(root / "tokens"), "--vocab-size", "320",
          "--validation-fraction", "0.2"])
    return root


def test_files_and_meta(built):
    meta = json.loads((built / "tokens/meta.json").read_text())
    tokens = np.load(built / "tokens/tokens.npy")
    offsets = np.load(built / "tokens/offsets.npy")
    validation = np.load(built / "tokens/validation.npy")
    assert tokens.dtype == np.uint16 and offsets.dtype == np.int64
    assert meta["vocab_size"] <= 320 and meta["eod_id"] == 0 and meta["pad_id"] == 1
    assert offsets[0] == 0 and offsets[-1] == tokens.size == meta["tokens"]
    assert len(validation) == len(offsets) - 1 == meta["documents"] == 60
    assert 0 < validation.sum() == meta["validation_documents"] < 60


def test_documents_decode_back_and_end_with_eod(built):
    tokenizer = Tokenizer.from_file(str(built / "tokens/tokenizer.json"))
    tokens = np.load(built / "tokens/tokens.npy")
    offsets = np.load(built / "tokens/offsets.npy")
    documents = list(read_documents(built / "corpus"))
    eod = tokenizer.token_to_id(EOD)
    assert (tokens[offsets[1:] - 1] == eod).all() and (tokens == eod).sum() == len(documents)
    for d in (0, 17, 59):
        assert tokenizer.decode(tokens[offsets[d]:offsets[d + 1] - 1].tolist()) == documents[d]["text"]


def test_split_is_a_stable_function_of_the_id():
    ids = [f"pkg:doc{i}" for i in range(2000)]
    held = [is_validation_document(i, 0.1) for i in ids]
    assert held == [is_validation_document(i, 0.1) for i in ids]
    assert 150 < sum(held) < 250
    assert not any(is_validation_document(i, 0.0) for i in ids)


@pytest.mark.parametrize("vocab, dtype", [(8192, np.uint16), (65536, np.uint16), (65537, np.uint32)],
                         ids=["8k", "64k", "64k+1"])
def test_token_dtype(vocab, dtype):
    assert token_dtype(vocab) == dtype


def test_bpe_encodes_any_bytes():
    tokenizer = train_bpe(["hello world"] * 10, vocab_size=300)
    text = "z\u00fc\u4e2d \U0001f600"
    assert tokenizer.decode(tokenizer.encode(text).ids) == text


def test_a_given_tokenizer_rebuilds_the_same_tokens(built, tmp_path):
    main(["--corpus", str(built / "corpus"), "--out", str(tmp_path / "again"),
          "--tokenizer", str(built / "tokens/tokenizer.json"), "--validation-fraction", "0.2"])
    first = json.loads((built / "tokens/meta.json").read_text())
    again = json.loads((tmp_path / "again/meta.json").read_text())
    assert again["tokens_sha256"] == first["tokens_sha256"] and again["tokenizer"].endswith("tokenizer.json")
    np.testing.assert_array_equal(np.load(tmp_path / "again/tokens.npy"), np.load(built / "tokens/tokens.npy"))
    np.testing.assert_array_equal(np.load(tmp_path / "again/offsets.npy"), np.load(built / "tokens/offsets.npy"))


def test_a_tokenizer_without_the_special_tokens_is_refused(built, tmp_path):
    foreign = Tokenizer(models.WordLevel({"a": 0, "b": 1}, unk_token="a"))
    foreign.save(str(tmp_path / "foreign.json"))
    with pytest.raises(ValueError, match="special tokens"):
        main(["--corpus", str(built / "corpus"), "--out", str(tmp_path / "x"), "--tokenizer", str(tmp_path / "foreign.json")])
