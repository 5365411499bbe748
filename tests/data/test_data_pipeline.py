"""make_dataset / make_iterator: config checks, batch layout, process slices, splits."""

import dataclasses

import numpy as np
import pytest

from dma_jax.data import DataConfig, make_dataset, make_iterator, vocab_size_of
from dma_jax.data.lm import load_split
from dma_jax.data.toy_corpus import write_toy_tokens


@pytest.fixture(scope="module")
def tokens_dir(tmp_path_factory):
    return str(write_toy_tokens(tmp_path_factory.mktemp("pipe"), num_documents=80, vocab_size=320))


def configs(tokens_dir):
    return {
        "lm": DataConfig(kind="lm", seq_len=33, global_batch_size=4, corpus_path=tokens_dir),
        "mqar": DataConfig(kind="mqar", seq_len=64, global_batch_size=4, vocab_size=300, mqar_num_kv_pairs=4,
                           mqar_num_train_examples=50, mqar_num_eval_examples=10),
        "niah": DataConfig(kind="niah", seq_len=400, global_batch_size=4, corpus_path=tokens_dir,
                           niah_eval_depths=(0.0, 1.0), niah_eval_per_depth=3),
    }


@pytest.mark.parametrize("bad, message", [
    ({"kind": "text"}, "data.kind"),
    ({"seq_len": 0}, "data.seq_len must be a positive integer, got 0"),
    ({"global_batch_size": -2}, "data.global_batch_size"),
    ({"seed": -1}, "data.seed"),
    ({"eval_max_batches": 0}, "data.eval_max_batches"),
    ({"read_processes": -1}, "data.read_processes must be a non-negative integer, got -1"),
    ({"kind": "mqar", "seq_len": 63}, "data.seq_len must be even"),
    ({"kind": "mqar", "vocab_size": 64, "seq_len": 64}, "data.vocab_size must exceed"),
    ({"kind": "mqar", "seq_len": 64, "mqar_num_kv_pairs": 17}, "data.mqar_num_kv_pairs"),
    ({"kind": "mqar", "mqar_power_a": 0.0}, "data.mqar_power_a"),
    ({"kind": "lm", "corpus_path": "/nonexistent"}, "data.corpus_path"),
    ({"kind": "niah", "tokenizer_path": "/nonexistent.json"}, "data.tokenizer_path"),
    ({"kind": "niah", "niah_eval_depths": (0.5, 2.0)}, "data.niah_eval_depths"),
], ids=["kind", "seq_len", "batch", "seed", "eval_max_batches", "read_processes", "mqar-odd", "mqar-vocab", "mqar-pairs",
        "mqar-power", "lm-corpus", "niah-tokenizer", "niah-depths"])
def test_validate_names_the_bad_key(bad, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(**bad).validate()


def test_from_dict_rejects_unknown_keys():
    assert DataConfig.from_dict({"kind": "mqar", "niah_eval_depths": [0.5]}).niah_eval_depths == (0.5,)
    with pytest.raises(ValueError, match="data.batch_size is not"):
        DataConfig.from_dict({"batch_size": 8})


def test_process_count_must_divide_the_batch(tokens_dir):
    with pytest.raises(ValueError, match="global_batch_size=4 must be divisible by process_count=3"):
        make_dataset(configs(tokens_dir)["mqar"], "train", 0, 3)
    with pytest.raises(ValueError, match="split"):
        make_dataset(configs(tokens_dir)["mqar"], "test")


@pytest.mark.parametrize("kind", ["lm", "mqar", "niah"])
@pytest.mark.parametrize("split", ["train", "validation"])
def test_batch_layout(tokens_dir, kind, split):
    config = configs(tokens_dir)[kind]
    batch = make_dataset(config, split)[0]
    shape = (config.global_batch_size, config.seq_len)
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
        "inputs": (shape, np.int32), "targets": (shape, np.int32),
        "segment_ids": (shape, np.int32), "loss_mask": (shape, np.float32)}
    assert batch["loss_mask"].sum() > 0 and (batch["loss_mask"][batch["segment_ids"] == 0] == 0).all()
    assert batch["inputs"].max() < vocab_size_of(config) and batch["targets"].max() < vocab_size_of(config)


@pytest.mark.parametrize("kind", ["lm", "mqar", "niah"])
@pytest.mark.parametrize("split", ["train", "validation"])
def test_processes_read_disjoint_slices_of_each_global_batch(tokens_dir, kind, split):
    config = configs(tokens_dir)[kind]
    whole = make_dataset(config, split)
    halves = [make_dataset(config, split, p, 2) for p in range(2)]
    for step in range(2):
        joined = np.concatenate([halves[p][step]["inputs"] for p in range(2)])
        np.testing.assert_array_equal(joined, whole[step]["inputs"])


def test_train_is_seeded_shuffled_and_repeats(tokens_dir):
    config = configs(tokens_dir)["lm"]
    first = [b["inputs"] for b in make_dataset(config)[:3]]
    again = [b["inputs"] for b in make_dataset(config)[:3]]
    other = [b["inputs"] for b in make_dataset(dataclasses.replace(config, seed=1))[:3]]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert len(make_dataset(config)) > 10**9


def test_lm_validation_is_one_ordered_pass_over_held_out_documents(tokens_dir):
    config = configs(tokens_dir)["lm"]
    tokens, offsets = load_split(tokens_dir, "validation")
    batches = list(make_iterator(config, "validation"))
    assert len(batches) == len(make_dataset(config, "validation"))
    inputs = np.concatenate([b["inputs"] for b in batches]).ravel()
    mask = np.concatenate([b["loss_mask"] for b in batches]).ravel()
    np.testing.assert_array_equal(inputs[: len(tokens)], tokens)
    assert mask.sum() == len(tokens) - (len(offsets) - 1)     # every in-document prediction once
    capped = make_dataset(dataclasses.replace(config, eval_max_batches=1), "validation")
    assert len(capped) == 1


def test_mqar_validation_differs_from_train(tokens_dir):
    config = configs(tokens_dir)["mqar"]
    train = {make_dataset(config)[i]["inputs"].tobytes() for i in range(12)}
    validation = list(make_dataset(config, "validation"))
    assert len(validation) == 3                                  # 10 examples padded to 12
    assert (validation[-1]["segment_ids"][2:] == 0).all()
    assert not train & {row.tobytes() for b in validation for row in b["inputs"]}


def test_vocab_size_of(tokens_dir):
    assert vocab_size_of(configs(tokens_dir)["mqar"]) == 300
    assert 260 < vocab_size_of(configs(tokens_dir)["lm"]) <= 320


def test_niah_share_mixes_needle_rows_into_text_rows(tokens_dir):
    # a needle row trains on its answer only; a text row on (nearly) every position
    config = dataclasses.replace(configs(tokens_dir)["lm"], seq_len=400, niah_share=0.5)
    rows = np.concatenate([b["loss_mask"] for b in make_dataset(config)[:16]])
    needles = rows.sum(axis=1) < 50
    assert rows.shape == (64, 400) and 0.3 < needles.mean() < 0.7
    plain = np.concatenate([b["loss_mask"] for b in make_dataset(dataclasses.replace(config, niah_share=0.0))[:4]])
    assert (plain.sum(axis=1) >= 50).all()
