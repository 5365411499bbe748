"""benchmarks.loop_overhead at toy size on the CPU: every row is timed, each row's added time is
its difference from the row above, and the JSON carries the card and the command."""

import json

import pytest

from benchmarks import loop_overhead


@pytest.mark.slow  # 31 s on a fresh clone
def test_toy_run_times_every_row_and_writes_json(tmp_path, capsys):
    out = tmp_path / "loop.json"
    result = loop_overhead.main(["--config", "configs/smoke.py", "--steps", "3", "--out", str(out),
                                 "data.global_batch_size=4", "checkpoint_every=1000"])
    rows = result["rows"]
    assert [r["row"] for r in rows] == list(loop_overhead.ROWS)
    assert all(r["ms_per_step"] > 0 and r["tokens_per_s"] > 0 for r in rows)
    assert rows[0]["added_ms"] is None
    for before, row in zip(rows, rows[1:]):
        assert abs(row["added_ms"] - (row["ms_per_step"] - before["ms_per_step"])) < 1e-9
    # the same step under every row: on a quiet CPU none is far from the bare step
    assert max(r["ms_per_step"] for r in rows) < 20 * rows[0]["ms_per_step"]
    stored = json.loads(out.read_text())
    assert "python -m benchmarks.loop_overhead" in stored["command"] and stored["card"]["jax"]
    assert stored["steps"] == 3 and stored["rows"] == rows
    assert "training loop" in capsys.readouterr().out.splitlines()[-2]
