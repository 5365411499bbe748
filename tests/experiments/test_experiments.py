"""experiments/launch.py: a grid runs its cells, stores their final records, and skips done cells."""

import json
import shutil
import time
from pathlib import Path

import pytest

from experiments.launch import Job, run_grid

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "smoke.py")
QUICK = ("steps=4", "optim.warmup_steps=1", "eval_every=4", "checkpoint_every=-1", "log_every=2")


@pytest.mark.slow  # 55 s; run_grid's resume also runs in tests/experiments/test_science_runners.py
def test_grid_runs_missing_cells_and_records_errors_then_evaluates_cells(tmp_path):
    from experiments.launch import evaluate_cells

    results = tmp_path / "grid.json"
    jobs = [Job("dma", SMOKE, (*QUICK[:-2], "checkpoint_every=0", "log_every=2"), {"attention": "dma"}),
            Job("broken", SMOKE, (*QUICK, "model.attention=nsa", "model.nsa_num_selected=1"), {"attention": "nsa"})]
    first = run_grid(jobs, results, tmp_path / "runs")
    assert first["cells"]["dma"]["eval"]["eval_accuracy"] >= 0 and first["cells"]["dma"]["train"]["step"] == 4
    assert first["cells"]["dma"]["params"] > 0 and first["card"]["device_kind"]
    assert "num_selected" in first["cells"]["broken"]["error"]
    stored = json.loads(results.read_text())
    assert set(stored["cells"]) == {"dma", "broken"}
    assert [r["step"] for r in first["cells"]["dma"]["eval_curve"]] == [4]
    wall = stored["cells"]["dma"]["wall_s"]
    # a second call runs only the new cell (one that fails fast: no second training to wait for)
    late = Job("late", SMOKE, (*QUICK, "model.attention=nsa", "model.nsa_num_selected=1"), {"attention": "nsa"})
    again = run_grid(jobs + [late], results, tmp_path / "runs")
    assert again["cells"]["dma"]["wall_s"] == wall  # not run again
    assert "num_selected" in again["cells"]["late"]["error"]
    assert [call["cells"] for call in again["calls"]] == [["dma", "broken"], ["late"]]
    assert all(call["wall_s"] > 0 for call in again["calls"])
    # after training, each cell is evaluated on its own; a failing evaluation is kept as an error
    shutil.rmtree(tmp_path / "runs" / "late", ignore_errors=True)  # cells without a run directory are skipped
    evaluate_cells(again, tmp_path / "runs", ["--throughput", "--throughput-batch", "2", "--decode-tokens", "2"],
                   "throughput", results)
    stored = json.loads(results.read_text())["cells"]["dma"]
    assert stored["throughput"]["training"]["tokens_per_s"] > 0
    assert stored["throughput"]["inference"]["batch"] == 2
    evaluate_cells(again, tmp_path / "runs", ["--no-such-flag"], "other", results)
    assert "no-such-flag" in json.loads(results.read_text())["cells"]["dma"]["other_error"]


def test_a_cell_cut_off_by_its_timeout_keeps_what_it_logged(tmp_path, monkeypatch):
    from experiments import launch

    class FakeRun:  # a run that logged one evaluation, then ran on past its time
        def __init__(self, command, **kwargs):
            workdir = Path(command[command.index("--workdir") + 1])
            records = [{"event": "start", "params": 10, "flops_per_token": 60.0, "device_kind": "cpu"},
                       {"event": "eval", "step": 500, "eval_loss": 2.5, "eval_accuracy": 0.25}]
            (workdir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records))
            self.returncode = None

        def poll(self):
            return self.returncode

        def kill(self):
            self.returncode = -9

        def wait(self):
            return self.returncode

    monkeypatch.setattr(launch.subprocess, "Popen", FakeRun)
    result = launch.run_job(Job("slow", SMOKE, QUICK, {"attention": "dma"}), tmp_path, 1, timeout_s=1.0)
    assert result["error"].startswith("exit timeout") and "eval" not in result
    assert result["partial"]["eval_curve"] == [{"step": 500, "eval_loss": 2.5, "eval_accuracy": 0.25}]


def test_grid_leaves_cells_it_may_not_start_for_a_later_call(tmp_path):
    results = tmp_path / "grid.json"
    jobs = [Job("dma", SMOKE, QUICK, {"attention": "dma"})]
    late = run_grid(jobs, results, tmp_path / "runs", start_before_s=-1.0)
    assert late["cells"] == {} and late["calls"][0]["cells"] == []


def test_a_call_starts_late_cells_while_its_longest_cell_fits_and_cuts_their_timeouts(tmp_path, monkeypatch):
    import experiments.launch as launch

    timeouts = []

    def fake_run_job(job, workroot, jobs, timeout_s, gpu=None):
        timeouts.append(timeout_s)
        time.sleep(0.5)
        return {"cell": job.cell, "wall_s": 0.5, "eval": None}

    monkeypatch.setattr(launch, "run_job", fake_run_job)
    jobs = [Job(f"cell{i}", SMOKE, QUICK, {}) for i in range(6)]
    # one at a time, 1.7 s for the call: cells of 0.5 s start while 0.55 s is left, so three run
    results = run_grid(jobs, tmp_path / "grid.json", tmp_path / "runs", start_before_s=0.2, call_seconds=1.7,
                       timeout_s=60.0)
    assert sorted(results["cells"]) == ["cell0", "cell1", "cell2"]
    assert results["calls"][0]["cells"] == ["cell0", "cell1", "cell2"]
    assert timeouts[0] <= 1.7 and timeouts[1] <= 1.2 and timeouts[2] <= 0.7  # what the call had left
    # without call_seconds, start_before alone keeps the later cells for another call
    timeouts.clear()
    later = run_grid([Job(f"other{i}", SMOKE, QUICK, {}) for i in range(3)], tmp_path / "other.json",
                     tmp_path / "runs", start_before_s=0.2, timeout_s=60.0)
    assert sorted(later["cells"]) == ["other0"] and timeouts == [60.0]


def test_a_dry_run_lists_the_missing_cells_with_estimates_and_writes_nothing(tmp_path, capsys):
    import argparse

    from experiments.launch import add_grid_arguments, plan_grid, run_grid_from_args

    short, long = {"seq_len": 1024, "steps": 10}, {"seq_len": 2048, "steps": 10}
    stored = {"cells": {"a": {"cell": short, "wall_s": 300.0}, "b": {"cell": short, "wall_s": 400.0},
                        "c": {"cell": short, "wall_s": 320.0}, "failed": {"cell": short, "error": "exit 1"}}}
    results = tmp_path / "grid.json"
    results.write_text(json.dumps(stored))
    jobs = [Job(name, SMOKE, QUICK, cell) for name, cell in
            [("a", short), ("failed", short), ("d", short), ("e", short), ("f", short), ("g", long)]]
    plan = plan_grid(jobs, results, parallel=2, call_seconds=700.0)
    assert plan["done"] == 2 and [row["name"] for row in plan["todo"]] == ["d", "e", "f", "g"]
    assert [row["estimate_s"] for row in plan["todo"]] == [320.0, 320.0, 320.0, None]  # the median of 300, 320, 400
    assert plan["waves"] == [320.0, None] and plan["machine_s"] == 320.0 and plan["calls"] == 1
    retried = plan_grid(jobs, results, parallel=1, call_seconds=660.0, retry_errors=True)
    # waves of 320 s: two would end within 660 s, but a late one starts only with 1.1 x 320 s left
    assert retried["done"] == 1 and retried["waves"] == [320.0] * 4 + [None] and retried["calls"] == 4
    assert "g: no finished cell of its budget" in capsys.readouterr().out
    parser = argparse.ArgumentParser()
    add_grid_arguments(parser, results=str(results), workroot=str(tmp_path / "runs"), timeout=60)
    with pytest.raises(SystemExit) as exit_:
        run_grid_from_args(jobs, parser.parse_args(["--dry-run", "--jobs", "2"]))
    assert exit_.value.code == 0 and json.loads(results.read_text()) == stored
    assert not (tmp_path / "runs").exists()


def test_grid_refuses_to_resume_cells_run_with_other_settings(tmp_path):
    results = tmp_path / "grid.json"
    results.write_text(json.dumps({"card": {"device_kind": "cpu"}, "cells": {"dma": {"cell": {"steps": 10, "seed": 0}}}}))
    with pytest.raises(SystemExit, match="dma was run with other settings .steps 10 there, 5 now"):
        run_grid([Job("dma", SMOKE, QUICK, {"steps": 5, "seed": 0})], results, tmp_path / "runs")
    assert json.loads(results.read_text())["cells"]["dma"]["cell"]["steps"] == 10  # untouched


def test_grid_spreads_jobs_over_the_listed_gpus(tmp_path, monkeypatch):
    import threading

    import experiments.launch as launch

    seen, barrier = [], threading.Barrier(4)

    def fake_run_job(job, workroot, jobs, timeout_s, gpu=None):
        seen.append((job.name, jobs, gpu))
        barrier.wait(timeout=10)  # all four run at once, so each GPU must get two
        return {"cell": job.cell, "wall_s": 0.0, "eval": None}

    def after(workdir, env):  # runs where its cell trained, with the same memory share
        return {"after": (workdir.name, env["CUDA_VISIBLE_DEVICES"], env["XLA_PYTHON_CLIENT_PREALLOCATE"])}

    monkeypatch.setattr(launch, "run_job", fake_run_job)
    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
    jobs = [Job(f"cell{i}", SMOKE, QUICK, {}) for i in range(4)]
    results = run_grid(jobs, tmp_path / "grid.json", tmp_path / "runs", parallel=4, gpus=["3", "7"], after=after)
    assert sorted(gpu for _, _, gpu in seen) == ["3", "3", "7", "7"]
    assert all(cell["after"] == (name, cell["gpu"], "false") for name, cell in results["cells"].items())
    assert {jobs_per_gpu for _, jobs_per_gpu, _ in seen} == {2}
    assert sorted(cell["gpu"] for cell in results["cells"].values()) == ["3", "3", "7", "7"]
    assert results["calls"][0]["gpus"] == ["3", "7"]


def test_compare_prints_a_table_and_draws_the_curves(tmp_path, capsys):
    from experiments.compare import main

    out = tmp_path / "compare"
    # one attention: every attention takes the same path through compare.py (two took twice as long)
    code = main(["--attentions", "dma", "--out", str(out), "--eval-examples", "16", "steps=4",
                 "optim.warmup_steps=1", "eval_every=2", "log_every=2", "data.global_batch_size=8"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "| attention | query accuracy | beyond w = 16 |" in printed
    rows = [line for line in printed.splitlines() if line.startswith("| ")]
    assert len(rows) == 2 and rows[1].startswith("| dma") and rows[1].count("%") == 2  # overall and beyond the window
    stored = json.loads((out / "results.json").read_text())
    assert [r["step"] for r in stored["cells"]["dma"]["eval_curve"]] == [2, 4]
    assert stored["cells"]["dma"]["mqar"][0]["queries"] == 16 * 8  # --eval-examples 16 of 8 pairs
    assert (out / "compare.png").stat().st_size > 0 and (out / "distance.png").stat().st_size > 0
    # progress while each model trains: where its live metrics are, its steps and evaluations
    assert f"[dma] training; live metrics: {out / 'dma' / 'metrics.jsonl'}" in printed
    assert "[dma] step 4/4  loss" in printed and "tok/s" in printed
    assert "[dma] step 2: eval loss" in printed


def test_progress_lines_give_step_loss_speed_and_eta(tmp_path, capsys):
    import experiments.launch as launch

    progress = launch._Progress("dma", tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"steps": 100}))
    with (tmp_path / "metrics.jsonl").open("w") as f:
        f.write(json.dumps({"step": 10, "event": "train", "loss": 2.5, "tokens_per_s": 1234.0}) + "\n")
    progress.poll(force=True)
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": 20, "event": "train", "loss": 2.0, "tokens_per_s": 2000.0}) + "\n")
        f.write('{"step": 30, "event": "tr')  # half written: not read yet
    progress.poll(force=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[dma] step 10/100  loss 2.500  1,234 tok/s"
    assert lines[1].startswith("[dma] step 20/100  loss 2.000  2,000 tok/s  ETA ")


def test_throughput_plot_groups_models_by_size(tmp_path):
    from experiments.perplexity_scaling import plot_throughput

    def cell(attention, size, params, tokens_per_s):
        return {"cell": {"attention": attention, "size": size, "params": params},
                "throughput": {"training": {"tokens_per_s": tokens_per_s}}}

    results = {"card": {"device_kind": "cpu"}, "cells": {
        "dma_s3m": cell("dma", "s3m", 3, 3e6), "mha_s3m": cell("mha", "s3m", 3, 2e6),
        "mha_s10m": cell("mha", "s10m", 10, 1e6), "nsa_s10m": {"cell": {"attention": "nsa", "size": "s10m"},
                                                              "error": "timeout"}}}
    drawn = plot_throughput(results, tmp_path / "throughput.png")
    assert drawn == {"s3m": {"dma": 3.0, "mha": 2.0}, "s10m": {"mha": 1.0}}
    assert list(drawn) == ["s3m", "s10m"] and (tmp_path / "throughput.png").stat().st_size > 1000


def test_merge_keeps_finished_cells_and_every_call_once():
    from experiments.merge_results import merge

    call = {"started": "t0", "command": "first"}
    target = {"cells": {"a": {"eval": 1}, "b": {"error": "timeout"}}, "calls": [call]}
    other = {"cells": {"a": {"error": "late"}, "b": {"eval": 2}, "c": {"error": "oom"}},
             "calls": [call, {"started": "t1", "command": "second"}]}
    merge(target, other)
    assert target["cells"] == {"a": {"eval": 1}, "b": {"eval": 2}, "c": {"error": "oom"}}
    assert [c["command"] for c in target["calls"]] == ["first", "second"]


def test_plot_only_redraws_without_running_or_rewriting(tmp_path, monkeypatch):
    import sys

    from experiments import niah

    rows = [{"length": n, "depth": d, "accuracy": 0.0, "token_accuracy": 0.5, "examples": 2}
            for n in (64, 128) for d in (0.0, 1.0)]
    results = tmp_path / "niah.json"
    results.write_text(json.dumps({"card": {"device_kind": "cpu"}, "train_len": 64, "cells": {
        "dma": {"niah": rows}, "mha": {"niah": rows}}}))
    before = results.read_text()
    monkeypatch.setattr(sys, "argv", ["niah.py", "--plot-only", "--results", str(results), "--workroot",
                                      str(tmp_path / "none")])
    niah.main()
    assert results.read_text() == before
    assert (tmp_path / "niah.png").stat().st_size > 1000 and (tmp_path / "niah_tokens.png").stat().st_size > 1000
    assert not (tmp_path / "none").exists()
    monkeypatch.setattr(sys, "argv", ["niah.py", "--plot-only", "--results", str(tmp_path / "missing.json")])
    with pytest.raises(SystemExit, match="does not exist"):
        niah.main()


def test_tagged_cells_are_their_own_line(tmp_path, monkeypatch):
    import argparse

    import dma_jax.evaluation.plots as plots
    from experiments.perplexity_scaling import jobs, plot

    args = argparse.Namespace(batch=2, seq_len=64, seeds=[0, 1], sizes=["s1m"], tokens_per_param=0.001,
                              attentions=["dma"], window=16, tag="recency", overrides=["model.dma_recency=0.05"],
                              config="configs/lm_scaling.py")
    made = jobs(args, {"s1m": (32, 1, 2, 1)})
    assert [job.name for job in made] == ["dma+recency_s1m", "dma+recency_s1m_s1"]
    assert made[0].cell["variant"] == "recency" and made[0].overrides[-1] == "model.dma_recency=0.05"

    def cell(variant, loss):
        return {"cell": {"attention": "dma", "size": "s1m", "tokens": 10, **({"variant": variant} if variant else {})},
                "flops_per_token": 1.0, "eval": {"eval_loss": loss}}

    drawn, original = {}, plots.lines
    monkeypatch.setattr(plots, "lines", lambda series, *a, **k: drawn.update(series) or original(series, *a, **k))
    plot({"cells": {"a": cell(None, 5.0), "b": cell("recency", 4.0)}}, tmp_path / "p.png")
    assert set(drawn) == {"dma", "dma+recency"}
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_mqar_fixed_pairs_and_the_plot_of_accuracy_against_length(tmp_path, monkeypatch):
    import argparse

    import dma_jax.evaluation.plots as plots
    from experiments.mqar_grid import jobs, plot

    args = argparse.Namespace(seeds=[0], seq_lens=[512, 2048], d_models=[128], attentions=["dma"], window_ratio=8,
                              pairs_ratio=64, pairs=16, batch=64, max_batch_tokens=65536, steps=10, lr=1e-3, evals=2,
                              head_dim=64, overrides=[], config="configs/mqar.py", by_distance=False)
    made = jobs(args)
    assert [job.cell["num_kv_pairs"] for job in made] == [16, 16]  # --pairs wins over the ratio
    assert [job.cell["batch"] for job in made] == [64, 32]

    def cell(seq_len, seed, accuracy):
        return {"cell": {"attention": "dma", "seq_len": seq_len, "d_model": 128, "seed": seed},
                "eval": {"eval_accuracy": accuracy}}

    results = {"card": {"device_kind": "cpu"}, "window_ratio": 8, "pairs": 16, "cells": {
        "a": cell(512, 0, 0.2), "b": cell(512, 1, 0.6), "c": cell(2048, 0, 0.5),
        "d": {**cell(2048, 1, 0.0), "eval": None, "error": "exit timeout"}}}
    drawn, original = {}, plots.lines
    monkeypatch.setattr(plots, "lines", lambda series, *a, **k: drawn.update(series) or original(series, *a, **k))
    plot(results, tmp_path / "g.png", ["dma"], [512, 2048], [128])
    assert drawn["DMA"] == [(512, pytest.approx(0.4), 0.2, 0.6), (2048, 0.5, 0.5, 0.5)]  # the timed-out seed is left out
    assert (tmp_path / "g.png").stat().st_size > 1000 and (tmp_path / "g_lines.png").stat().st_size > 1000


def test_mqar_plot_draws_every_cell_of_the_file_not_only_this_calls():
    from experiments.mqar_grid import plotted_axes

    def cell(attention, seq_len, d_model):
        return {"cell": {"attention": attention, "seq_len": seq_len, "d_model": d_model, "seed": 0}}

    results = {"cells": {"a": cell("dma", 2048, 128), "b": cell("mha", 1024, 64), "c": {"error": "no cell record"}}}
    assert plotted_axes(results, ["swa"], [2048], [128]) == (["mha", "swa", "dma"], [1024, 2048], [64, 128])


@pytest.mark.slow  # 26 s: two trainings and their by-distance scoring
def test_mqar_by_distance_scores_each_cell_after_training(tmp_path):
    import subprocess
    import sys

    results = tmp_path / "m.json"
    command = [sys.executable, str(ROOT / "experiments" / "mqar_grid.py"), "--attentions", "swa", "--seq-lens", "64",
               "--d-models", "32", "--head-dim", "0", "--steps", "2", "--batch", "4", "--evals", "1", "--pairs", "4",
               "--by-distance", "--distance-examples", "8", "--results", str(results), "--workroot", str(tmp_path / "runs"),
               "model.vocab_size=128", "data.vocab_size=128", "model.num_heads=2", "eval_batches=1"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    [cell] = json.loads(results.read_text())["cells"].values()
    assert "error" not in cell, cell["error"]
    [row] = cell["mqar"]
    assert row["window"] == 8 and row["queries_inside"] + row["queries_beyond"] == row["queries"] == 32
    assert (tmp_path / "m_beyond.png").stat().st_size > 1000 and (tmp_path / "m_lines.png").stat().st_size > 1000
    assert (tmp_path / "m_distance.png").stat().st_size > 1000
