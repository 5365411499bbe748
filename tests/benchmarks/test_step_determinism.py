"""benchmarks.step_determinism: the bitwise comparison of two pytrees, the merge over repeated
calls, and a toy run on the CPU, where a step is reproducible and the JSON carries the card, the
command and XLA_FLAGS."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import step_determinism


def test_leaf_differences_name_each_leaf_that_differs_in_any_bit():
    first = {"w": np.zeros((2, 3), np.float32), "emb": np.array(jnp.ones(4, jnp.bfloat16)), "nan": np.float32("nan")}
    same = {"w": first["w"].copy(), "emb": first["emb"].copy(), "nan": np.float32("nan")}
    assert step_determinism.leaf_differences(first, same) == []  # NaN against NaN is the same bits
    other = {"w": first["w"].copy(), "emb": first["emb"].copy(), "nan": np.float32("nan")}
    other["w"][1, 2] = np.nextafter(np.float32(0), np.float32(1))  # one ulp
    other["emb"][[0, 3]] = 2
    rows = {r["leaf"]: r for r in step_determinism.leaf_differences(first, other)}
    assert sorted(rows) == ["['emb']", "['w']"]
    assert rows["['w']"]["differing"] == 1 and rows["['w']"]["size"] == 6 and rows["['w']"]["max_abs_diff"] > 0
    assert rows["['emb']"]["differing"] == 2 and rows["['emb']"]["max_abs_diff"] == 1.0
    signed = {"w": -first["w"], "emb": first["emb"], "nan": first["nan"]}  # -0.0 is another bit pattern
    assert [r["leaf"] for r in step_determinism.leaf_differences(first, signed)] == ["['w']"]
    with pytest.raises(ValueError, match="shapes"):
        step_determinism.leaf_differences(first, {**first, "w": np.zeros(6, np.float32)})


def test_merge_counts_calls_and_keeps_the_largest_difference():
    calls = [[{"leaf": "a", "max_abs_diff": 1e-6, "differing": 3, "size": 9}], [],
             [{"leaf": "a", "max_abs_diff": 4e-6, "differing": 2, "size": 9},
              {"leaf": "b", "max_abs_diff": 1.0, "differing": 1, "size": 1}]]
    merged = step_determinism._merge(calls)
    assert [(r["leaf"], r["calls"], r["max_abs_diff"], r["differing"]) for r in merged] == [
        ("a", 2, 4e-6, 3), ("b", 1, 1.0, 1)]


def test_toy_run_on_the_cpu_is_bitwise_reproducible(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    out = tmp_path / "determinism.json"
    result = step_determinism.main(["--config", "configs/smoke.py", "--repeats", "2", "--steps", "2",
                                    "--out", str(out), "data.global_batch_size=4"])
    assert [(r["batch"], r["calls"], r["calls_differing"], r["leaves"]) for r in result["gradient"]] == [
        ("random tokens", 2, 0, []), ("data", 2, 0, [])]
    run = result["run"]
    assert run["first_step_with_another_loss"] is None and run["final_params_differing"] == []
    assert len(run["losses"][0]) == 2 and run["losses"][0] == run["losses"][1]
    assert run["losses"][0][0] != run["losses"][0][1]  # two steps, two batches: the run moved
    stored = json.loads(out.read_text())
    assert "python -m benchmarks.step_determinism" in stored["command"] and stored["card"]["jax"]
    assert stored["xla_flags"] == "--xla_force_host_platform_device_count=1"
    assert "run of 2 steps, twice" in capsys.readouterr().out
