"""benchmarks.embedding_grad at toy size on the CPU: three lookups times two token sets, each row's
gradient close to the float32 one, and the JSON carries the card and the command."""

import json

from benchmarks import embedding_grad


def test_toy_run_times_every_lookup_on_both_token_sets(tmp_path, capsys):
    out = tmp_path / "embedding.json"
    result = embedding_grad.main(["--config", "configs/smoke.py", "--calls", "2", "--repeats", "1", "--out", str(out),
                                  "data.global_batch_size=4"])
    rows = result["rows"]
    assert [(r["lookup"], r["tokens"]) for r in rows] == [
        (lookup, tokens) for lookup in embedding_grad.LOOKUPS for tokens in ("random", "data")]
    assert all(r["ms_amortised"] > 0 and r["ms_single_call"] > 0 for r in rows)
    errors = {r["lookup"]: r["relative_error"] for r in rows}
    assert max(errors.values()) < 2e-2  # rounding to the compute dtype at most
    data_repeats = [r["commonest_token_repeats"] for r in rows if r["tokens"] == "data"]
    assert data_repeats[0] > 1 and len(set(data_repeats)) == 1  # the same batch for every lookup
    stored = json.loads(out.read_text())
    assert "python -m benchmarks.embedding_grad" in stored["command"] and stored["card"]["jax"]
    assert stored["rows"] == rows and "one-hot matmul" in capsys.readouterr().out
