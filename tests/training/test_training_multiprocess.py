"""Two JAX processes (2 CPU devices each, gloo collectives) train like one process with 4 devices.

Each process reads its own rows of every global batch through grain and writes its own data
iterator state; Orbax writes the shared train state once.
"""

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from small_runs import host_devices_env

ROOT = Path(__file__).resolve().parents[2]
OVERRIDES = ["steps=4", "optim.warmup_steps=1", "eval_every=2", "checkpoint_every=2", "log_every=1",
             "data.global_batch_size=8"]


def command(workdir, *extra):
    return [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "smoke.py"), "--workdir",
            str(workdir), "--no-progress", *extra, *OVERRIDES]


def env(devices):
    return host_devices_env(devices)


def losses(workdir):
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return np.array([r.get("loss", r.get("eval_loss")) for r in records if r["event"] in ("train", "eval")])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    single = subprocess.run(command(tmp_path / "one"), env=env(4), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    port = free_port()
    procs = [
        subprocess.Popen(command(tmp_path / "two", "--coordinator", f"localhost:{port}", "--num-processes", "2",
                                 "--process-id", str(i)), env=env(2), cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    np.testing.assert_allclose(losses(tmp_path / "two"), losses(tmp_path / "one"), rtol=1e-5)
    data_states = sorted(p.name for p in (tmp_path / "two" / "checkpoints" / "4" / "data").glob("*.json"))
    assert data_states == ["process_0-of-2.json", "process_1-of-2.json"]
