"""benchmarks.model_throughput runs end to end at toy sizes on the CPU: each asked-for attention
 and length gets train, prefill and decode tokens/s, and the JSON and plot are written."""

import json

import pytest

from benchmarks import model_throughput


@pytest.mark.slow  # 41 s on a fresh clone
def test_toy_run_writes_rows_json_and_plot(tmp_path, capsys):
    result = model_throughput.main([
        "--lengths", "32", "--attentions", "dma", "--d-model", "32", "--layers", "1", "--heads", "2", "--kv-heads", "1",
        "--head-dim", "16", "--vocab-size", "64", "--window", "8", "--tokens-per-batch", "128",
        "--decode-tokens", "3", "--logits-piece", "8", "--repeats", "2", "--dtype", "float32", "--out-dir", str(tmp_path),
        "--remat-saves", "attention",
    ])
    rows = result["rows"]
    assert [(r["attention"], r["T"], r["remat_saves"]) for r in rows] == [("dma", 32, "attention")]
    assert all("error" not in r for r in rows), [r.get("error") for r in rows]
    assert {r["window"] for r in rows} == {8}  # min(8, T / 4)
    for r in rows:
        assert r["train"]["tokens_per_s"] > 0 and r["train"]["tokens_per_s_amortised"] > 0
        assert r["train"]["compile_s"] > 0
        assert r["train"]["flops_per_token"] > 0 and r["train"]["mfu"] is None  # no peak known for a CPU
        assert r["inference"]["prefill_tokens_per_s"] > 0 and r["inference"]["decode_tokens_per_s"] > 0
    stored = json.loads((tmp_path / "model_throughput.json").read_text())
    assert "python -m benchmarks.model_throughput" in stored["command"] and stored["card"]["jax"]
    assert (tmp_path / "model_throughput.png").stat().st_size > 10_000
    assert "amortised" in capsys.readouterr().out
