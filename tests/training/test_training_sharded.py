"""train() on 8 CPU devices (data, fsdp and tensor axes at once) follows the one-device run step
for step; train.py with the sequence axis too, across a resume."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from small_runs import host_devices_env

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, sys
from small_runs import small_config
from dma_jax.sharding import MeshConfig
from dma_jax.training.loop import train
mesh = MeshConfig(*json.loads(sys.argv[2]))
records = train(small_config(steps=4, eval_every=2, mesh=mesh), sys.argv[1], progress=False)
print("RESULT" + json.dumps([[r["step"], r.get("loss", r.get("eval_loss"))] for r in records if r["event"] != "start"]))
"""


def run(tmp_path, devices, mesh):
    env = host_devices_env(devices, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    workdir = tmp_path / f"{devices}-{'-'.join(map(str, mesh))}"
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(workdir), json.dumps(mesh)], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    line = next(l for l in result.stdout.splitlines() if l.startswith("RESULT"))
    return np.array(json.loads(line[len("RESULT"):]))


def test_sharded_training_matches_one_device(tmp_path):
    expected = run(tmp_path, 1, (1, 1, 1))
    got = run(tmp_path, 8, (2, 2, 2))  # data 2 x fsdp 2 x tensor 2
    np.testing.assert_array_equal(got[:, 0], expected[:, 0])
    np.testing.assert_allclose(got[:, 1], expected[:, 1], rtol=1e-5)


@pytest.mark.slow
def test_train_py_with_the_sequence_split_matches_one_device_and_resumes(tmp_path):
    """train.py with mesh.sequence=4 (and mesh.data=2) on 8 CPU devices: the losses of one device,
    also across a stop and a resume from the checkpoint."""
    common = ["--config", str(ROOT / "configs" / "smoke.py"), "--no-progress", "steps=6", "log_every=1",
              "eval_every=3", "eval_batches=1", "checkpoint_every=2", "optim.warmup_steps=1",
              "data.global_batch_size=8", "data.mqar_num_eval_examples=16"]

    def train_py(workdir, devices, *extra):
        env = host_devices_env(devices)
        result = subprocess.run([sys.executable, str(ROOT / "train.py"), "--workdir", str(workdir), *common, *extra],
                                env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        return result.stdout

    def losses(workdir):
        records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r.get("loss", r.get("eval_loss"))) for r in records if r["event"] != "start"]

    train_py(tmp_path / "one", 1, "mesh.data=1")
    train_py(tmp_path / "split", 8, "mesh.data=2", "mesh.sequence=4", "--stop-after", "3")
    assert "resumed from step 3" in train_py(tmp_path / "split", 8, "mesh.data=2", "mesh.sequence=4")
    got, want = np.array(losses(tmp_path / "split")), np.array(losses(tmp_path / "one"))
    np.testing.assert_array_equal(got[:, 0], want[:, 0])
    np.testing.assert_allclose(got[:, 1], want[:, 1], rtol=1e-5)
