"""train(): exact resumption, gradient accumulation, metrics files, and config errors from train.py."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dma_jax.training.loop import train
from small_runs import small_config, train_losses

ROOT = Path(__file__).resolve().parents[2]


def train_cli(argv, capsys) -> tuple[int, str]:
    """train.py's main() in this process (its config errors come before JAX is touched):
    (exit status, stderr). The README test below runs the script itself."""
    spec = importlib.util.spec_from_file_location("train_script", ROOT / "train.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    status = script.main([str(a) for a in argv])
    return status, capsys.readouterr().err


@pytest.mark.slow  # 55 s; resumed logs equal whole ones in tests/training/test_faults.py
def test_resume_continues_exactly(tmp_path):
    config = small_config()
    whole = train(config, tmp_path / "whole", progress=False)
    first = train(config, tmp_path / "split", stop_after=4, progress=False)
    assert max(train_losses(first)) == 4
    second = train(config, tmp_path / "split", progress=False)
    assert min(train_losses(second)) == 5
    expected = train_losses(whole)
    got = {**train_losses(first), **train_losses(second)}
    assert got.keys() == expected.keys() == set(range(1, 9))
    np.testing.assert_array_equal([got[s] for s in range(1, 9)], [expected[s] for s in range(1, 9)])
    evals = lambda records: [r["eval_loss"] for r in records if r["event"] == "eval"]
    np.testing.assert_array_equal(evals(first) + evals(second), evals(whole))
    # the log of the resumed run reads like one run: every step once
    logged = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if r["event"] == "train"] == list(range(1, 9))


def test_training_reduces_the_loss(tmp_path):
    records = train(small_config(steps=30, eval_every=0, checkpoint_every=0, log_every=10), tmp_path, progress=False)
    losses = train_losses(records)
    assert losses[30] < losses[10] - 0.5
    assert (tmp_path / "config.json").exists() and (tmp_path / "checkpoints").is_dir()
    assert records[0]["event"] == "start" and records[0]["params"] > 0


@pytest.mark.slow  # 41 s on a fresh clone
def test_gradient_accumulation_matches_one_batch(tmp_path):
    one = train(small_config(steps=3, eval_every=0), tmp_path / "one", progress=False)
    four = train(small_config(steps=3, eval_every=0, grad_accum=4), tmp_path / "four", progress=False)
    np.testing.assert_allclose(list(train_losses(four).values()), list(train_losses(one).values()), rtol=2e-5)


@pytest.mark.parametrize(
    "override, message",
    [("model.d_model=oops", "model.d_model"), ("nonsense=1", "unknown config key 'nonsense'"),
     ("data.seq_len=0", "data.seq_len"), ("optim.warmup_steps=500", "optim.warmup_steps"),
     ("model.vocab_size=100", "model.vocab_size"), ("model.attention=rnn", "model.attention"),
     ("model.attention=nsa model.nsa_num_selected=1", "num_selected must be >= 3")],
    ids=["type", "unknown", "data", "schedule", "vocab", "attention-kind", "layer-check"],
)
def test_bad_config_fails_before_compute_naming_the_key(tmp_path, capsys, override, message):
    status, stderr = train_cli(["--config", ROOT / "configs" / "smoke.py", "--workdir", tmp_path, *override.split()],
                               capsys)
    assert status == 2, stderr[-2000:]
    assert message in stderr
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow  # 55 s; train.py's command line also runs in tests/training/test_faults.py
def test_readme_main_job_runs_from_the_command_line(tmp_path):
    """train.py on configs/smoke.py (the README's one-model example), shortened: trains, evaluates and saves."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "smoke.py"), "--workdir",
         str(tmp_path), "steps=10", "optim.warmup_steps=2", "eval_every=5", "checkpoint_every=5"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    events = [json.loads(line)["event"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert events == ["start", "eval", "train", "eval"]  # eval at 5 and 10; log_every=10 logs step 10
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == ["10", "5"]
    assert "step 10: eval loss" in result.stderr + result.stdout


def test_a_config_file_may_define_dataclasses(tmp_path):
    """The config runs as a registered module: a dataclass in it used to crash the loader
    ('NoneType' object has no attribute '__dict__')."""
    from dma_jax.training.config import load_config

    path = tmp_path / "with_dataclass.py"
    path.write_text(
        "from __future__ import annotations\n\n"  # string annotations: what made dataclasses look the module up
        "import dataclasses\n"
        "from dma_jax.data import DataConfig\n"
        "from dma_jax.models import ModelConfig\n"
        "from dma_jax.training.config import TrainConfig\n"
        "from dma_jax.training.optimizer import OptimConfig\n\n"
        "@dataclasses.dataclass(frozen=True)\n"
        "class Sizes:\n"
        "    d_model: int = 32\n\n"
        "def get_config():\n"
        "    model = ModelConfig.preset('tiny', d_model=Sizes().d_model, implementation='xla')\n"
        "    return TrainConfig(model=model, data=DataConfig(kind='mqar', seq_len=32, vocab_size=256), steps=4,\n"
        "                       optim=OptimConfig(warmup_steps=1),\n"
        "                       eval_every=0)\n"
    )
    assert load_config(path, ["steps=3"]).model.d_model == 32


@pytest.mark.parametrize("body,message", [
    ("X = 1\n", "is not a training config: it defines no get_config()"),
    ("def get_config():\n    return {'steps': 3}\n", "get_config() returned a dict, not a TrainConfig"),
], ids=["no-get-config", "wrong-type"])
def test_a_file_that_is_not_a_training_config_gets_one_line(tmp_path, capsys, body, message):
    path = tmp_path / "not_a_config.py"
    path.write_text(body)
    status, stderr = train_cli(["--config", path, "--workdir", tmp_path / "run"], capsys)
    assert status == 2 and message in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
