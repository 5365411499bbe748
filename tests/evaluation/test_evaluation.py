"""dma_jax.evaluation and eval.py: loading runs, scoring, perplexity, MQAR slices, needle grid."""

import json
import math
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from tokenizers import Tokenizer

from dma_jax.data import DataConfig
from dma_jax.data.toy_corpus import write_toy_tokens
from dma_jax.evaluation import BatchScorer, load_run, mqar_accuracy, niah_accuracy, perplexity
from dma_jax.evaluation.niah import niah_batch
from dma_jax.training.loop import train
from dma_jax.training.workdir import read_records
from small_runs import built_once, small_config

ROOT = Path(__file__).resolve().parents[2]


class TableModel(nnx.Module):
    """logits = table[inputs]: a stand-in model whose predictions the test controls."""

    def __init__(self, table):
        self.table = nnx.Param(jnp.asarray(table, jnp.float32))

    def __call__(self, tokens, segment_ids=None):
        return self.table[...][tokens]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A 6-step run's workdir and its logged records, trained by one worker for all."""
    workdir = built_once(tmp_path_factory, "evaluation_run",
                         lambda d: train(small_config(steps=6, eval_every=6, checkpoint_every=3), d, progress=False))
    return workdir, read_records(workdir / "metrics.jsonl")


@pytest.fixture(scope="module")
def toy_tokens(tmp_path_factory):
    return write_toy_tokens(tmp_path_factory.mktemp("toy"), num_documents=40, vocab_size=300)


def test_load_run_reproduces_the_logged_eval_loss(trained_run):
    workdir, records = trained_run
    run = load_run(workdir)
    assert run.step == 6 and run.config == small_config(steps=6, eval_every=6, checkpoint_every=3)
    logged = next(r for r in records if r["event"] == "eval")
    scorer = BatchScorer(run.model)
    rows = mqar_accuracy(scorer, run.config.data, [32], [4], examples=16, batch_size=8, progress=False)
    assert rows[0]["accuracy"] == pytest.approx(logged["eval_accuracy"], abs=1e-6)
    earlier = load_run(workdir, step=3)
    assert earlier.step == 3
    with pytest.raises(FileNotFoundError, match="no checkpoint at step 4"):
        load_run(workdir, step=4)


def test_scorer_counts_and_exact_match():
    vocab = 5
    table = np.zeros((vocab, vocab))
    table[np.arange(vocab), (np.arange(vocab) + 1) % vocab] = 1.0  # predicts x + 1
    scorer = BatchScorer(TableModel(table))
    inputs = np.array([[0, 1, 2, 3], [0, 1, 2, 3]], np.int32)
    targets = np.array([[1, 2, 3, 4], [1, 2, 0, 4]], np.int32)  # row 1 has one wrong target
    mask = np.array([[0, 1, 1, 1], [0, 1, 1, 1]], np.float32)
    scores = scorer({"inputs": inputs, "targets": targets, "segment_ids": np.ones_like(inputs), "loss_mask": mask})
    np.testing.assert_array_equal(scores["tokens"], [3, 3])
    np.testing.assert_array_equal(scores["correct"], [3, 2])
    np.testing.assert_array_equal(scores["exact"], [True, False])
    log_z = math.log(math.e + 4)
    assert scores["nll"][0] == pytest.approx(3 * (log_z - 1), rel=1e-5)


def test_scorer_chunks_long_batches_without_changing_scores():
    rng = np.random.default_rng(0)
    vocab, rows, length = 7, 5, 6
    table_model = TableModel(rng.normal(size=(vocab, vocab)))
    batch = {"inputs": rng.integers(0, vocab, (rows, length)).astype(np.int32),
             "targets": rng.integers(0, vocab, (rows, length)).astype(np.int32),
             "segment_ids": np.ones((rows, length), np.int32),
             "loss_mask": (rng.random((rows, length)) < 0.7).astype(np.float32)}
    whole = BatchScorer(table_model)(batch)
    chunked = BatchScorer(table_model, max_tokens=2 * length)(batch)  # chunks of 2 rows, the last one padded
    assert set(chunked) == set(whole)
    for key in whole:
        assert chunked[key].shape == ((rows, length) if key in ("hits", "token_nll") else (rows,))
        np.testing.assert_allclose(chunked[key], whole[key], rtol=1e-6)
    one_row = BatchScorer(table_model, max_tokens=1)(batch)  # less than a row: one row at a time
    np.testing.assert_allclose(one_row["nll"], whole["nll"], rtol=1e-6)
    with pytest.raises(ValueError, match="max_tokens"):
        BatchScorer(table_model, max_tokens=0)


def test_perplexity_of_a_uniform_model_is_the_vocabulary(toy_tokens):
    vocab = Tokenizer.from_file(str(toy_tokens / "tokenizer.json")).get_vocab_size()
    data = DataConfig(kind="lm", seq_len=32, global_batch_size=4, corpus_path=str(toy_tokens), read_threads=1)
    result = perplexity(BatchScorer(TableModel(np.zeros((vocab, vocab)))), data, batch_size=4, progress=False)
    assert result["perplexity"] == pytest.approx(vocab, rel=1e-5)
    assert result["windows"] > 0 and result["tokens"] > result["windows"]


def test_niah_batch_scores_only_the_answer(toy_tokens):
    tokenizer = Tokenizer.from_file(str(toy_tokens / "tokenizer.json"))
    batch = niah_batch(tokenizer, 400, 0.5, [1, 2, 3])
    assert batch["inputs"].shape[0] == 3
    for row in range(3):
        masked = batch["targets"][row][batch["loss_mask"][row] > 0]
        assert tokenizer.decode(masked.tolist()).strip().isdigit()
        assert batch["loss_mask"][row].sum() < 10
    vocab = tokenizer.get_vocab_size()
    rows = niah_accuracy(BatchScorer(TableModel(np.zeros((vocab, vocab)))), tokenizer, [400, 600], [0.0, 1.0],
                         per_cell=2, progress=False)
    assert [(r["length"], r["depth"]) for r in rows] == [(400, 0.0), (400, 1.0), (600, 0.0), (600, 1.0)]
    assert all(r["accuracy"] == 0.0 for r in rows)  # a uniform model never reproduces a 7-digit number


def test_mqar_slices_skip_impossible_ones(trained_run):
    run = load_run(trained_run[0])
    rows = mqar_accuracy(BatchScorer(run.model), run.config.data, [32, 64], [4, 16], examples=8, progress=False)
    assert [(r["seq_len"], r["num_kv_pairs"]) for r in rows] == [(32, 4), (64, 4), (64, 16)]
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["queries"] > 0 for r in rows)


def test_pair_distances_point_each_query_at_its_value():
    from dma_jax.evaluation.mqar import pair_distances

    inputs = np.array([[5, 50, 7, 70, 9, 9, 7, 9, 5]])  # k0 v0 k1 v1 . . k1 . k0
    mask = np.array([[0, 0, 0, 0, 0, 0, 1, 0, 1]])
    assert pair_distances(inputs, mask, 2).tolist() == [[-1, -1, -1, -1, -1, -1, 3, -1, 7]]


def test_mqar_accuracy_splits_queries_by_distance(trained_run):
    from dma_jax.evaluation.mqar import pair_distances

    def near_sighted(batch):  # right exactly when the pair's value is fewer than 10 positions back
        distances = pair_distances(batch["inputs"], batch["loss_mask"], 4)
        hits = (distances >= 0) & (distances < 10)
        tokens, correct = (distances >= 0).sum(1), hits.sum(1)
        return {"tokens": tokens, "correct": correct, "exact": correct == tokens, "hits": hits}

    run = load_run(trained_run[0])
    [row] = mqar_accuracy(near_sighted, run.config.data, [64], [4], examples=32, window=10, progress=False)
    assert row["inside_window"] == 1.0 and row["beyond_window"] == 0.0
    assert row["queries_inside"] + row["queries_beyond"] == row["queries"] and row["queries_beyond"] > 0
    buckets = {(b["lo"], b["hi"]): b["accuracy"] for b in row["by_distance"]}
    assert all(acc == (1.0 if hi <= 10 else 0.0) for (lo, hi), acc in buckets.items() if hi <= 8 or lo >= 16)
    assert sum(b["queries"] for b in row["by_distance"]) == row["queries"]
    assert [row2.get("window") for row2 in mqar_accuracy(near_sighted, run.config.data, [64], [4], examples=8,
                                                         progress=False)] == [None]


def test_eval_cli_writes_json_and_plots(trained_run, tmp_path):
    workdir, _ = trained_run
    out = tmp_path / "eval.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "eval.py"), "--workdir", str(workdir), "--out", str(out), "--no-progress",
         "--mqar", "--mqar-seq-lens", "32", "--mqar-pairs", "2", "4", "--mqar-examples", "8",
         "--recent-keys", "4"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads(out.read_text())
    assert written["card"]["device_kind"] and "eval.py" in written["command"]
    assert len(written["runs"][0]["mqar"]) == 2 and written["runs"][0]["training_flops"] > 0
    assert [Path(p).name for p in written["plots"]] == [f"mqar_{workdir.name}.png", f"mqar_distance_{workdir.name}.png"]
    assert all(Path(p).exists() for p in written["plots"])
    assert written["runs"][0]["mqar"][0]["window"] == 8  # the run's model.window
    layers = written["runs"][0]["recent_keys"]  # the tiny DMA model's 2 layers
    assert [r["layer"] for r in layers] == [0, 1] and all(0 <= r["recent_share"] <= 1 for r in layers)
    bad = subprocess.run([sys.executable, str(ROOT / "eval.py"), "--workdir", str(tmp_path), "--out", str(out)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert bad.returncode == 2 and "no config.json" in bad.stderr


def test_load_run_reads_only_the_parameters(trained_run, monkeypatch):
    """eval.py's loader asks Orbax for the params subtree alone, not the optimizer moments."""
    import orbax.checkpoint as ocp

    workdir, _ = trained_run
    requested = []
    original = ocp.args.PyTreeRestore.__init__

    def spy(self, *args, **kwargs):
        requested.append((kwargs.get("item"), kwargs.get("partial_restore")))
        original(self, *args, **kwargs)

    monkeypatch.setattr(ocp.args.PyTreeRestore, "__init__", spy)
    run = load_run(workdir)
    assert [(set(item), partial) for item, partial in requested] == [({"params"}, True)]
    assert run.model is not None


def test_eval_plots_compare_runs_by_pair_distance(tmp_path):
    sys.path.insert(0, str(ROOT))
    from eval import make_plots

    def run(name, accuracy):
        buckets = [{"lo": 0, "hi": 2, "accuracy": accuracy, "queries": 3}, {"lo": 2, "hi": 4, "accuracy": 0.5, "queries": 5}]
        return {"workdir": f"runs/{name}", "attention": name, "d_model": 8, "step": 1, "train_seq_len": 16,
                "mqar": [{"seq_len": 16, "num_kv_pairs": 2, "accuracy": 0.5, "window": 4, "by_distance": buckets}]}

    written = make_plots([run("dma", 1.0), run("swa", 0.0)], tmp_path)
    assert sorted(Path(p).name for p in written) == ["mqar_distance.png", "mqar_distance_dma.png",
                                                     "mqar_distance_swa.png"]
