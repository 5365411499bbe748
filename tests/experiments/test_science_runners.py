"""The science runners end to end at toy size: experiments/window_sweep.py, mqar_seeds.py and
passkey.py train their cells (train.py), score them right after (eval.py), and write results,
summary rows and plots; plus the cell strings they share (experiments/cells.py)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dma_jax.data.toy_corpus import write_toy_tokens
from experiments.cells import Cell, parse_cell, parse_cells_or_exit

ROOT = Path(__file__).resolve().parents[2]
TINY = ("model.d_model=32", "model.num_layers=1", "model.num_kv_heads=1", "model.num_heads=2", "model.dtype=float32",
        "model.implementation=xla", "eval_batches=2")


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    return write_toy_tokens(tmp_path_factory.mktemp("toy"), num_documents=60, vocab_size=300)


def _run(script: str, *args: str, timeout: float = 600) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / script), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("text,cell,name", [
    ("mha", Cell("mha"), "mha"), ("swa:512", Cell("swa", 512), "swa512"),
    ("dma:512:l64:s4", Cell("dma", 512, 64, 4), "dma512_l64_s4"), ("DMA:256:hq", Cell("dma", 256, 0, 0, True), "dma256_hq"),
])
def test_cells_parse_and_name_themselves(text, cell, name):
    assert parse_cell(text) == cell and cell.name == name and parse_cell(cell.spec) == cell


@pytest.mark.parametrize("text", ["gqa", "swa", "swa:0", "swa:8:l2", "dma:8:x3", "mha:4", "dma:8:l6:s4"])
def test_bad_cells_are_refused_with_the_syntax(text):
    with pytest.raises(ValueError, match="bad cell"):
        parse_cell(text)


def test_a_bad_cell_on_the_command_line_ends_with_its_message():
    assert parse_cells_or_exit(["mha", "dma:8:l2"]) == [Cell("mha"), Cell("dma", 8, 2)]
    with pytest.raises(SystemExit, match="bad cell 'swa'"):
        parse_cells_or_exit(["mha", "swa"])


def test_cell_overrides_set_the_variant_and_per_head_scores():
    assert parse_cell("dma:64:l8:hq").overrides(4) == (
        "model.attention=dma", "model.window=64", "model.dma_local_window=8", "model.dma_sink_keys=0",
        "model.bias_heads=4")
    with pytest.raises(ValueError, match="num_heads"):
        parse_cell("dma:64:hq").overrides()


@pytest.mark.slow  # 140 s end to end on a fresh clone; the cell strings have their own tests above
def test_window_sweep_trains_scores_and_plots(tmp_path, tokens):
    results = tmp_path / "sweep.json"
    out = _run("window_sweep.py", "--config", str(ROOT / "configs" / "smoke.py"), "--cells", "dma:16:l4",
               "--seeded-cells", "--seq-len", "64", "--batch", "4", "--tokens-per-param", "0", "--recent-keys", "4",
               "--results", str(results), "--workroot", str(tmp_path / "runs"), *TINY, "model.vocab_size=300",
               f"data.corpus_path={tokens}", "data.kind=lm")
    stored = json.loads(results.read_text())
    runs = {run["cell"]["cell"]: run for run in stored["cells"].values()}
    assert set(runs) == {"dma:16:l4"} and "error" not in runs["dma:16:l4"]
    split = runs["dma:16:l4"]["perplexity"]["by_position"]
    assert split["split_at"] == 16 and split["before"]["tokens"] > 0 and split["after"]["tokens"] > 0
    [layer] = runs["dma:16:l4"]["recent_keys"]
    assert 0 < layer["recent_share"] <= 1
    assert len(runs["dma:16:l4"]["learned_A"]) == 1
    [row] = stored["summary"]
    assert row["cell"] == "dma:16:l4" and row["attention_flops_per_token"] > 0 and row["eval_perplexity"] > 1
    assert (tmp_path / "sweep.png").stat().st_size > 1000 and (tmp_path / "sweep_by_position.png").stat().st_size > 1000
    assert "dma:16:l4" in out.splitlines()[-1] or "dma:16:l4" in out

    # --cost (in this process): tokens/s of each cell beside its perplexity, nothing trained
    from experiments import window_sweep

    window_sweep.main(["--config", str(ROOT / "configs" / "smoke.py"), "--cost", "--cells", "dma:16:l4",
                       "--seq-len", "64", "--batch", "4", "--decode-tokens", "3", "--cost-repeats", "2",
                       "--results", str(results), *TINY, "model.vocab_size=300"])
    stored = json.loads(results.read_text())
    assert set(stored["cost"]) == {"dma:16:l4"} and len(stored["cells"]) == 1  # no run added
    for cost in stored["cost"].values():
        assert "error" not in cost, cost["error"]
        assert cost["train"]["tokens_per_s_amortised"] > 0 and cost["inference"]["decode_tokens_per_s"] > 0
    [row] = stored["summary"]
    assert row["train_tokens_per_s"] == stored["cost"]["dma:16:l4"]["train"]["tokens_per_s_amortised"]


@pytest.mark.slow  # 40 s end to end; its summary and the later seeds' rates have their own tests below
def test_mqar_seeds_trains_scores_and_summarises(tmp_path):
    results = tmp_path / "seeds.json"
    out = _run("mqar_seeds.py", "--cells", "dma:{w}:l{l}", "--seq-lens", "64", "--pairs", "4", "--lrs", "3e-3",
               "--seeds", "0", "--steps", "3", "--batch", "4", "--eval-examples", "8", "--results", str(results),
               "--workroot", str(tmp_path / "runs"), "model.d_model=32", "model.vocab_size=128", "data.vocab_size=128",
               "eval_batches=1")
    stored = json.loads(results.read_text())
    [run] = stored["cells"].values()
    assert "error" not in run, run.get("error")
    assert run["cell"]["spec"] == "dma:8:l1" and run["mqar"][0]["queries_beyond"] > 0
    [row] = stored["summary"]
    assert row["cell"] == "dma:{w}:l{l}" and row["window"] == 8 and row["seeds"] == 1 and row["best_lr"] == 3e-3
    assert (tmp_path / "seeds.png").stat().st_size > 1000 and "best lr" in out


def test_mqar_seeds_summary_takes_the_best_learning_rate_and_counts_solved_seeds():
    from experiments.mqar_seeds import summary

    def run(lr, seed, accuracy):
        return {"cell": {"cell": "dma:{w}", "seq_len": 1024, "num_kv_pairs": 16, "window": 128, "lr": lr, "seed": seed},
                "mqar": [{"accuracy": accuracy, "beyond_window": accuracy / 2}], "wall_s": 10.0}

    runs = [run(1e-3, 0, 0.95), run(1e-3, 1, 0.5), run(3e-3, 0, 0.92), run(3e-3, 1, 0.91), run(3e-3, 2, 0.2),
            {"cell": {"cell": "dma:{w}", "seq_len": 1024, "num_kv_pairs": 16, "lr": 3e-3, "seed": 3}, "error": "x"}]
    [row] = summary({"cells": {str(i): r for i, r in enumerate(runs)}}, solved=0.9)
    assert row["lr_means"] == {"0.001": pytest.approx(0.725), "0.003": pytest.approx(0.6766666)}
    # Compared on the seeds both rates ran (0 and 1): 0.915 against 0.725; then all of 3e-3's seeds.
    assert row["best_lr"] == 3e-3 and row["lr_chosen_on_seeds"] == [0, 1]
    assert row["seeds"] == 3 and row["min"] == 0.2 and row["max"] == 0.92
    assert row["solved_share"] == pytest.approx(2 / 3) and row["beyond_window"] == pytest.approx(2.03 / 6)
    same_seeds = [run(1e-3, 0, 0.95), run(1e-3, 1, 0.5), run(3e-3, 0, 0.92), run(3e-3, 1, 0.2)]
    [row] = summary({"cells": {str(i): r for i, r in enumerate(same_seeds)}}, solved=0.9)
    assert row["best_lr"] == 1e-3 and row["seeds"] == 2


def test_mqar_seeds_runs_the_other_seeds_at_the_rate_seed_0_chose():
    from argparse import Namespace

    from experiments.mqar_seeds import jobs

    args = Namespace(seeds=[0, 1, 2], seq_lens=[1024], pairs=[16, 64], window_ratio=8, lrs=[1e-3, 3e-3],
                     cells=["dma:{w}"], batch=64, steps=100, config="configs/mqar.py", overrides=[], lr_search_seeds=[0])
    first = jobs(args, num_heads=2, results={})
    assert {(j.cell["seed"], j.cell["lr"]) for j in first} == {(0, 1e-3), (0, 3e-3)} and len(first) == 4

    def done(pairs, lr, accuracy):
        return {"cell": {"cell": "dma:{w}", "seq_len": 1024, "num_kv_pairs": pairs, "lr": lr, "seed": 0},
                "mqar": [{"accuracy": accuracy}]}

    # 16 pairs: both rates scored, 3e-3 better; 64 pairs: one rate still missing, so nothing more there yet.
    results = {"cells": {"a": done(16, 1e-3, 0.4), "b": done(16, 3e-3, 0.9), "c": done(64, 1e-3, 0.7)}}
    later = [j.cell for j in jobs(args, num_heads=2, results=results) if j.cell["seed"] != 0]
    assert sorted((c["seed"], c["num_kv_pairs"], c["lr"]) for c in later) == [(1, 16, 3e-3), (2, 16, 3e-3)]
    args.lr_search_seeds = None
    assert len(jobs(args, num_heads=2, results=results)) == 12
    # length-major: every seed of the first length comes before the second length
    args.seq_lens = [1024, 2048]
    lengths = [j.cell["seq_len"] for j in jobs(args, num_heads=2, results=results)]
    assert lengths == [1024] * 12 + [2048] * 12


@pytest.mark.slow  # 37 s end to end; the mixed needles and eval.py --niah have their own tests
def test_passkey_mixes_needles_into_text_and_scores_past_the_training_length(tmp_path, tokens):
    results = tmp_path / "passkey.json"
    _run("passkey.py", "--cells", "dma:32:l8", "--seeds", "0", "--steps", "3", "--train-len", "256", "--scales", "1", "2",
         "--depths", "0", "1", "--per-cell", "1", "--results", str(results), "--workroot", str(tmp_path / "runs"),
         *TINY, "model.vocab_size=300", "data.global_batch_size=4", "data.niah_share=0.5", f"data.corpus_path={tokens}")
    stored = json.loads(results.read_text())
    [run] = stored["cells"].values()
    assert "error" not in run, run.get("error")
    assert sorted({(r["length"], r["depth"]) for r in run["niah"]}) == [(256, 0.0), (256, 1.0), (512, 0.0), (512, 1.0)]
    assert [(r["cell"], r["length"]) for r in stored["summary"]] == [("dma:32:l8", 256), ("dma:32:l8", 512)]
    assert (tmp_path / "passkey.png").stat().st_size > 1000 and (tmp_path / "passkey_depths.png").stat().st_size > 1000
    split = run["perplexity"]["by_position"]  # --ppl-scale 2: windows of 512, split at the training length
    assert run["perplexity"]["seq_len"] == 512 and split["split_at"] == 256
    assert split["after"]["tokens"] > 0 and split["after"]["loss"] > 0
    [lm] = stored["lm_summary"]
    assert lm["cell"] == "dma:32:l8" and lm["after"]["loss"] == split["after"]["loss"]


def test_passkey_lm_summary_averages_each_side_of_the_training_length_over_seeds():
    from experiments.passkey import lm_summary

    def run(cell, before, after):
        return {"cell": {"cell": cell}, "perplexity": {"seq_len": 2048, "by_position": {
            "split_at": 1024, "before": {"loss": before, "tokens": 10.0}, "after": {"loss": after, "tokens": 5.0}}}}

    results = {"cells": {"a": run("mha", 2.0, 6.0), "b": run("mha", 2.2, 8.0), "c": run("swa:256", 2.3, 2.4),
                         "d": {"cell": {"cell": "dma:256"}},  # scored before --ppl-scale existed
                         "e": run("dma:256", 2.5, None)}}  # no token reached the split
    rows = lm_summary(results)
    assert [r["cell"] for r in rows] == ["mha", "swa:256"]
    assert rows[0]["seeds"] == 2 and abs(rows[0]["before"]["loss"] - 2.1) < 1e-12
    assert (rows[0]["after"]["loss"], rows[0]["after"]["min"], rows[0]["after"]["max"]) == (7.0, 6.0, 8.0)
