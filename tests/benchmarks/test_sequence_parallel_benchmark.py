"""benchmarks.sequence_parallel runs end to end on 8 CPU devices at a small T: DMA over 1, 4 and 8
devices and the all-gather baseline, with the collectives' bytes beside the prediction."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from small_runs import host_devices_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_small_run_on_eight_cpu_devices(tmp_path):
    env = host_devices_env(8, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "benchmarks.sequence_parallel", "--lengths", "512", "--devices", "1", "4", "8",
               "--windows", "16", "--heads", "4", "--kv-heads", "2", "--head-dim", "16", "--dtype", "float32",
               "--repeats", "2", "--out-dir", str(tmp_path)]
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    rows = json.loads((tmp_path / "sequence_parallel.json").read_text())["rows"]
    assert [(r["kind"], r["devices"]) for r in rows] == [
        ("dma_one_device", 1), ("mha_allgather", 1), ("dma", 4), ("mha_allgather", 4), ("dma", 8), ("mha_allgather", 8)]
    assert all("error" not in r and r["fwd_bwd_ms"] > 0 for r in rows)
    for row in (r for r in rows if r["kind"] == "dma"):  # k and v of P * w keys per kv head, plus scores and positions
        assert row["predicted_allgather_bytes"] <= row["collective_bytes"]["all-gather"] < 1.2 * row["predicted_allgather_bytes"]
    assert "gathered MB" in result.stdout
