"""experiments/cell_cost.py: what it asks of the throughput timers (no timing here)."""

from pathlib import Path

import dma_jax.evaluation.throughput as throughput
from experiments.cell_cost import cell_cost
from experiments.cells import Cell

ROOT = Path(__file__).resolve().parents[2]


def test_decoding_is_a_median_of_at_least_three_calls(monkeypatch):
    # decode time = median(generate with new tokens) - median(generate with one): with two calls a
    # single slow one moves the median by half its delay, with three it drops out
    asked = {}
    monkeypatch.setattr(throughput, "training_throughput", lambda config, **kw: asked.setdefault("train", kw))
    monkeypatch.setattr(throughput, "inference_throughput", lambda model, **kw: asked.setdefault("inference", kw))
    cost = cell_cost(str(ROOT / "configs" / "smoke.py"), Cell("mha"), ["model.d_model=32", "model.num_layers=1"],
                     seq_len=16, batch=2, decode_tokens=3, repeats=2)
    assert asked["train"]["repeats"] == 2
    assert asked["inference"]["repeats"] >= 3 and asked["inference"]["new_tokens"] == 3
    assert cost["inference"] is asked["inference"]


def test_add_costs_skips_timed_cells_unless_asked_again(tmp_path, monkeypatch):
    import experiments.cell_cost as cell_cost_module

    timed = []
    monkeypatch.setattr(cell_cost_module, "cell_cost", lambda config, cell, *a, **kw: timed.append(cell.spec) or {})
    results = {"cost": {"mha": {"train": {}}, "swa:8": {"train": {}}, "dma:8": {"error": "out of memory"}}}
    kwargs = dict(seq_len=16, batch=2, decode_tokens=3, repeats=2)
    cells = [Cell("mha"), Cell("swa", 8), Cell("dma", 8)]
    cell_cost_module.add_costs(results, tmp_path / "r.json", cells, "configs/smoke.py", [], **kwargs)
    assert timed == ["dma:8"]  # only the failed one
    cell_cost_module.add_costs(results, tmp_path / "r.json", cells, "configs/smoke.py", [], redo=("swa:8",),
                               command="again", **kwargs)
    assert timed == ["dma:8", "swa:8"]
    assert results["cost"]["swa:8"]["command"] == "again"  # each cell names the command that timed it
    assert results["cost"]["dma:8"]["command"] == "" and "command" not in results["cost"]["mha"]
