"""benchmarks.data_pipeline at toy size on the CPU: one row per thread and process count, the
stand-in loop never faster than its own work, and the JSON with the card and the command."""

import json

import pytest

from benchmarks import data_pipeline


def test_toy_run_times_each_thread_count_and_writes_json(tmp_path, capsys):
    out = tmp_path / "pipeline.json"
    result = data_pipeline.main(["--config", "configs/smoke.py", "--threads", "1", "2", "--batches", "4",
                                 "--python-ms", "1", "--wait-ms", "3", "--out", str(out), "data.global_batch_size=4"])
    rows = result["rows"]
    assert [(r["read_threads"], r["read_processes"]) for r in rows] == [(1, 0), (2, 0)]
    for row in rows:
        assert row["ms_per_batch_alone"] > 0 and row["loop_work_ms"] == 4.0
        assert row["ms_per_step_in_loop"] >= 4.0
    stored = json.loads(out.read_text())
    assert "python -m benchmarks.data_pipeline" in stored["command"] and stored["rows"] == rows
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote {out}"


@pytest.mark.parametrize("bad", [["--threads", "0"], ["--processes", "-1"]], ids=["threads", "processes"])
def test_a_count_out_of_range_is_refused(tmp_path, bad):
    with pytest.raises(SystemExit):
        data_pipeline.main(["--config", "configs/smoke.py", *bad, "--out", str(tmp_path / "x.json")])
