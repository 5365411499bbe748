"""experiments/launch.py: a grid runs its cells, stores their final records, and skips done cells."""

import json
from pathlib import Path

from experiments.launch import Job, run_grid

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.py")
QUICK = ("steps=4", "optim.warmup_steps=1", "eval_every=4", "checkpoint_every=-1", "log_every=2")


def test_grid_runs_missing_cells_and_records_errors(tmp_path):
    results = tmp_path / "grid.json"
    jobs = [Job("dma", SMOKE, QUICK, {"attention": "dma"}),
            Job("broken", SMOKE, (*QUICK, "model.attention=nsa", "model.nsa_num_selected=1"), {"attention": "nsa"})]
    first = run_grid(jobs, results, tmp_path / "runs")
    assert first["cells"]["dma"]["eval"]["eval_accuracy"] >= 0 and first["cells"]["dma"]["train"]["step"] == 4
    assert first["cells"]["dma"]["params"] > 0 and first["card"]["device_kind"]
    assert "num_selected" in first["cells"]["broken"]["error"]
    stored = json.loads(results.read_text())
    assert set(stored["cells"]) == {"dma", "broken"}
    wall = stored["cells"]["dma"]["wall_s"]
    again = run_grid(jobs + [Job("swa", SMOKE, (*QUICK, "model.attention=swa"), {"attention": "swa"})], results,
                     tmp_path / "runs")
    assert again["cells"]["dma"]["wall_s"] == wall  # not run again
    assert again["cells"]["swa"]["train"]["step"] == 4
