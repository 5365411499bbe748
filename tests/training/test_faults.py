"""Failures a long run meets, each reproduced: kills at the worst moments, a second trainer, damaged
checkpoints, a torn metrics line, a config that does not match the checkpoint, preemption.

Runs that must die, and the checks of train.py's exit status, go through ``train.py`` in a
subprocess (``DMA_FAULT`` picks where it is killed); the rest call ``train`` in-process on the same
config (``train_here``). Every case ends by comparing the metrics log with an uninterrupted
subprocess run's, record for record (timings aside).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dataclasses

import numpy as np
import pytest

from dma_jax.data import make_iterator
from dma_jax.models import ModelConfig
from dma_jax.training.checkpointing import Checkpointer, CheckpointMismatch
from dma_jax.training.config import load_config
from dma_jax.training.loop import train
from dma_jax.training.workdir import WorkdirBusy, WorkdirLock, read_records
from small_runs import built_once, small_config

ROOT = Path(__file__).resolve().parents[2]
OVERRIDES = ["steps=6", "log_every=1", "eval_every=3", "eval_batches=1", "checkpoint_every=2", "keep_checkpoints=10",
             "optim.warmup_steps=1", "data.global_batch_size=8", "data.mqar_num_eval_examples=16"]
TIMINGS = ("tokens_per_s", "step_time_s", "mfu", "peak_memory_gib")


def run_train(workdir, *extra, fault=None, timeout=300, wait=True):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("DMA_FAULT", None)
    if fault:
        env["DMA_FAULT"] = fault
    command = [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "smoke.py"), "--workdir",
               str(workdir), "--no-progress", *OVERRIDES, *extra]
    if not wait:
        return subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def train_here(workdir, *extra, stop_after=None):
    """``run_train``'s run (same config and overrides) in this process, for runs that are not
    killed: a subprocess costs another import and compile. Its stdout goes to pytest's capsys."""
    config = load_config(ROOT / "configs" / "smoke.py", [*OVERRIDES, *extra])
    return train(config, workdir, stop_after=stop_after, progress=False)


def comparable(records):
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in records]


def logged(workdir):
    return comparable(read_records(Path(workdir) / "metrics.jsonl"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The metrics log of one uninterrupted subprocess run (the reference of every case below),
    run by one worker for all."""

    def build(workdir):
        result = run_train(workdir)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    return logged(built_once(tmp_path_factory, "faults_uninterrupted", build))


def test_a_kill_while_the_metrics_log_is_rewritten_loses_no_history(tmp_path, uninterrupted):
    """Case 1: on resume the log drops records past the checkpoint; a kill in that window must
    leave the old file whole (it used to be truncated in place: a 0-byte log)."""
    train_here(tmp_path)
    before = (tmp_path / "metrics.jsonl").read_text()
    for step in (6, 4):  # back to checkpoint 2: records of steps 3-6 must go on resume
        Checkpointer(tmp_path / "checkpoints", every=0, keep=10).manager.delete(step)
    killed = run_train(tmp_path, fault="metrics_rewrite")
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-2000:]
    assert (tmp_path / "metrics.jsonl").read_text() == before
    train_here(tmp_path)
    assert logged(tmp_path) == uninterrupted


@pytest.mark.slow  # 31 s on a fresh clone
def test_a_torn_last_line_is_skipped_with_a_warning(tmp_path, uninterrupted):
    """Case 5: a kill mid-write leaves half a line; every later resume used to crash on it."""
    killed = run_train(tmp_path, "--stop-after", "3", fault="metrics_append")
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "metrics.jsonl").read_text().endswith("\n")
    with pytest.warns(UserWarning, match="torn last line"):
        train_here(tmp_path)
    assert logged(tmp_path) == uninterrupted


def test_a_second_trainer_on_a_busy_workdir_is_refused(tmp_path):
    """Case 2: a lock held by a live process refuses a second trainer, naming the holder; the lock
    of a dead process on this host is taken over."""
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (tmp_path / "train.lock").write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename,
                                                         "started": "now"}))
        with pytest.raises(WorkdirBusy, match=f"process {holder.pid} on {os.uname().nodename}"):
            train(small_config(steps=2), tmp_path, progress=False)
        refused = run_train(tmp_path)
        assert refused.returncode == 3 and f"process {holder.pid}" in refused.stderr
        assert not (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "checkpoints").exists()
    finally:
        holder.kill()
        holder.wait()
    records = train(small_config(steps=2, eval_every=0), tmp_path, progress=False)  # the holder is gone
    assert [r["step"] for r in records if r["event"] == "train"] == [1, 2]
    assert not (tmp_path / "train.lock").exists()


@pytest.mark.slow  # 35 s; a second trainer on a busy workdir stays in CI
def test_two_trainers_started_together_one_runs(tmp_path):
    first, second = run_train(tmp_path, wait=False), run_train(tmp_path, wait=False)
    outputs = [p.communicate(timeout=300)[0] for p in (first, second)]
    codes = sorted(p.returncode for p in (first, second))
    assert codes == [0, 3], outputs
    assert "one trainer per workdir" in "".join(outputs)
    assert [r["step"] for r in read_records(tmp_path / "metrics.jsonl") if r["event"] == "train"] == list(range(1, 7))


def test_lock_is_released_and_a_stale_one_taken_over(tmp_path, capsys):
    lock = WorkdirLock(tmp_path)
    with lock:
        assert json.loads((tmp_path / "train.lock").read_text())["pid"] == os.getpid()
    assert not (tmp_path / "train.lock").exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "train.lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "started": "x"}))
    with WorkdirLock(tmp_path):
        assert "taking over" in capsys.readouterr().out


def _damage(step_dir: Path, how: str) -> None:
    if how == "truncated-array":
        biggest = max((p for p in (step_dir / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
        biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 3])
    elif how == "state-metadata-deleted":
        (step_dir / "state" / "_METADATA").unlink()
    elif how == "empty-iterator-state":
        next((step_dir / "data").glob("process_*.json")).write_text("")


def test_damaged_latest_checkpoints_fall_back_to_the_newest_good_one(tmp_path, uninterrupted, capsys):
    """Case 6: checkpoints 6, 5 and 4 damaged three ways (a truncated array file, a deleted
    metadata file, an empty iterator state): restore says which it skipped and why, sets them
    aside, resumes from 3, and the run ends as the uninterrupted one."""
    train_here(tmp_path, "checkpoint_every=1")
    for step, how in ((6, "truncated-array"), (5, "state-metadata-deleted"), (4, "empty-iterator-state")):
        _damage(tmp_path / "checkpoints" / str(step), how)
    capsys.readouterr()
    train_here(tmp_path, "checkpoint_every=1")
    out = capsys.readouterr().out
    assert "resumed from step 3" in out, out[-3000:]
    for step in (6, 5, 4):
        assert f"skipped checkpoint {step}" in out and (tmp_path / "damaged_checkpoints" / str(step)).is_dir()
    assert {6, 5, 4} <= {int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()}
    assert logged(tmp_path) == uninterrupted


@pytest.mark.slow  # 47 s on a fresh clone
def test_no_checkpoint_restoring_is_a_clear_error(tmp_path):
    train_here(tmp_path, stop_after=2)
    for metadata in (tmp_path / "checkpoints").glob("*/state/_METADATA"):
        metadata.unlink()
    failed = run_train(tmp_path)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert f"no checkpoint in {tmp_path / 'checkpoints'} restores" in failed.stderr


def test_a_data_state_of_another_worker_count_is_refused_not_set_aside(tmp_path):
    """Checkpoints saved with the iterator in the training process, restored into one with a
    worker process (data.read_processes = 1): a clear CheckpointMismatch, and the checkpoint
    stays where it is (its iterator state would otherwise fail to load as damage)."""
    data = small_config().data
    state = {"params": {"w": np.ones((2, 3), np.float32)}}
    checkpointer = Checkpointer(tmp_path / "checkpoints", every=1, keep=2, async_save=False)
    checkpointer.save(1, state, make_iterator(data))
    checkpointer.close()
    checkpointer = Checkpointer(tmp_path / "checkpoints", every=1, keep=2, async_save=False)
    workers = make_iterator(dataclasses.replace(data, read_processes=1))
    try:
        with pytest.raises(CheckpointMismatch, match="data.read_processes"):
            checkpointer.restore_newest(state, workers)
    finally:
        workers.close()
        checkpointer.close()
    assert checkpointer.all_steps() == [1] and not (tmp_path / "damaged_checkpoints").exists()


def _set_attention(workdir, attention):
    config = json.loads((workdir / "config.json").read_text())
    config["model"]["attention"] = attention
    (workdir / "config.json").write_text(json.dumps(config))


@pytest.mark.slow  # 49 s on a fresh clone
@pytest.mark.parametrize("trained,claimed", [("dma", "mha")])
def test_eval_refuses_a_checkpoint_of_another_model(tmp_path, trained, claimed):
    """Case 3: config.json saying mha over a DMA run's checkpoints used to score an MHA model whose
    DMA parameters were dropped (the reverse, which crashed unclearly, takes the same check and
    names the first mismatch too)."""
    train(small_config(steps=2, eval_every=0, model=ModelConfig.preset("tiny", attention=trained, window=8,
                                                                        implementation="xla")), tmp_path, progress=False)
    _set_attention(tmp_path, claimed)
    from dma_jax.evaluation import load_run

    with pytest.raises(CheckpointMismatch, match=r"blocks/0/attn/(A|dt_proj)"):
        load_run(tmp_path)
    result = subprocess.run([sys.executable, str(ROOT / "eval.py"), "--workdir", str(tmp_path), "--out",
                             str(tmp_path / "eval.json"), "--no-progress"], capture_output=True, text=True, cwd=ROOT,
                            timeout=300)
    assert result.returncode == 2 and "does not match" in result.stderr, result.stderr[-2000:]
    with pytest.raises(CheckpointMismatch):  # and training on refuses too
        train(small_config(steps=4, eval_every=0, model=ModelConfig.preset("tiny", attention=claimed, window=8,
                                                                            implementation="xla")), tmp_path, progress=False)


@pytest.mark.slow  # 37 s; a kill while the log is rewritten stays in CI
def test_a_kill_before_the_first_checkpoint_logs_start_once(tmp_path, uninterrupted):
    """Case 7: a run killed before its first checkpoint starts over; its log must not keep the
    first attempt's start event (or its steps)."""
    killed = run_train(tmp_path, "checkpoint_every=4", "log_every=1", fault="metrics_append")
    assert killed.returncode == -signal.SIGKILL
    with pytest.warns(UserWarning, match="torn last line"):  # the start record the kill cut
        train_here(tmp_path)
    assert logged(tmp_path) == uninterrupted


@pytest.mark.slow  # 53 s; kills and SIGTERM resume to the same log in the cases kept in CI
def test_stop_after_logs_what_an_uninterrupted_run_logs(tmp_path):
    """Case 7: --stop-after used to add a record at its last step that the uninterrupted run lacks.
    Runs that stop between log steps, and a run of a single step, log what one run logs, each log
    step with a finite throughput."""
    config = small_config(steps=8, log_every=4, eval_every=0, checkpoint_every=0)  # stops save their own
    whole = comparable(train(config, tmp_path / "whole", progress=False))
    split = []
    for stop_after in (3, 1, 3, 1):  # steps 1-3, 4, 5-7, 8
        split += [r for r in train(config, tmp_path / "split", stop_after=stop_after, progress=False) if r["event"] == "train"]
    assert logged(tmp_path / "split") == logged(tmp_path / "whole") == whole
    assert [r["step"] for r in whole if r["event"] == "train"] == [4, 8]
    assert [r["step"] for r in split] == [4, 8] and all(r["tokens_per_s"] > 0 for r in split)


@pytest.mark.slow  # 26 s on a fresh clone
def test_resume_says_where_it_resumed_and_when_nothing_is_left(tmp_path, capsys):
    """Also: a checkpoint without its top-level _CHECKPOINT_METADATA (descriptive only: Orbax
    restores without it and warns) is no damage."""
    train_here(tmp_path, stop_after=4)
    assert "resumed" not in capsys.readouterr().out
    (tmp_path / "checkpoints" / "4" / "_CHECKPOINT_METADATA").unlink()
    train_here(tmp_path)
    assert "resumed from step 4" in capsys.readouterr().out
    train_here(tmp_path)
    assert "already at step 6, nothing to do" in capsys.readouterr().out


def test_sigterm_saves_a_checkpoint_at_the_current_step_and_exits_cleanly(tmp_path, uninterrupted):
    process = run_train(tmp_path, "steps=400", "optim.decay_fraction=0.01", "checkpoint_every=1000", wait=False)
    deadline = time.time() + 240
    metrics = tmp_path / "metrics.jsonl"
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count('"train"') >= 3):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 0, output[-3000:]
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    last_logged = max(r["step"] for r in read_records(metrics) if r["event"] == "train")
    assert steps[-1] == last_logged and 3 <= last_logged < 400
    assert f"stopped at step {last_logged} (SIGTERM)" in output


def test_remote_style_workdirs_are_kept_as_uris(tmp_path, monkeypatch):
    """Workdirs on gs:// are etils.epath paths end to end: the lock, the metrics log and the
    checkpoint folder (Path('gs://b').absolute() used to turn it into '<cwd>/gs:/b'). The gs://
    backend is redirected to a local folder."""
    from etils import epath
    from etils.epath import testing

    from dma_jax.training import checkpointing
    from dma_jax.training.workdir import MetricsLog

    local = lambda x: str(x).replace("gs://bucket", str(tmp_path)) if str(x).startswith("gs://") else x  # noqa: E731
    redirect = lambda fn, path, *a, **k: fn(local(path), *(local(x) for x in a), **k)  # noqa: E731
    mocks = {name: redirect for name in ("open", "exists", "isdir", "listdir", "glob", "makedirs", "mkdir", "remove",
                                         "rename", "replace", "rmtree", "stat")}
    with testing.mock_epath(**mocks):
        workdir = epath.Path("gs://bucket/run")
        with WorkdirLock(workdir):
            assert (tmp_path / "run" / "train.lock").exists()
            log = MetricsLog(workdir / "metrics.jsonl", 0, True)
            log({"step": 1, "event": "train", "loss": 1.0})
            log({"step": 2, "event": "train", "loss": 0.5})
            MetricsLog(workdir / "metrics.jsonl", 1, True)  # resume at 1: step 2 goes by rename
        assert read_records(workdir / "metrics.jsonl") == [{"step": 1, "event": "train", "loss": 1.0}]
    assert not (tmp_path / "run" / "train.lock").exists()
    seen = []
    monkeypatch.setattr(checkpointing.ocp, "CheckpointManager", lambda directory, options: seen.append(directory))
    Checkpointer("gs://bucket/run/checkpoints", every=1, keep=1)
    assert isinstance(seen[0], epath.Path) and str(seen[0]) == "gs://bucket/run/checkpoints"
