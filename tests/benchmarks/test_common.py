"""benchmarks/common.py: what every benchmark JSON records."""

from benchmarks.common import result_header


def test_result_header_names_the_kernel_environment_and_xla_flags_in_the_command(monkeypatch):
    for name in ("DMA_FORWARD_BACKEND", "DMA_BACKWARD_BACKEND", "XLA_FLAGS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DMA_KV_SEQUENCE_LAYOUT", "1")
    header = result_header("x", "benchmarks.x", ["--lengths", "64"])
    assert header["command"] == "DMA_KV_SEQUENCE_LAYOUT=1 python -m benchmarks.x --lengths 64"
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_deterministic_ops=true --xla_gpu_autotune_level=0")
    assert result_header("x", "benchmarks.x", [])["command"] == (
        "DMA_KV_SEQUENCE_LAYOUT=1 XLA_FLAGS='--xla_gpu_deterministic_ops=true --xla_gpu_autotune_level=0' "
        "python -m benchmarks.x")
    monkeypatch.delenv("DMA_KV_SEQUENCE_LAYOUT")
    monkeypatch.delenv("XLA_FLAGS")
    assert result_header("x", "benchmarks.x", [])["command"] == "python -m benchmarks.x"


def test_plot_only_redraws_beside_the_stored_results(tmp_path):
    import argparse
    import json

    from benchmarks.common import add_output_arguments, png_beside, replot

    p = argparse.ArgumentParser()
    add_output_arguments(p, "default.json")
    assert p.parse_args([]).out == "default.json" and not p.parse_args([]).plot_only
    out = tmp_path / "results.json"
    out.write_text(json.dumps({"rows": [1, 2]}))
    drawn = []
    result = replot(p.parse_args(["--out", str(out), "--plot-only"]), lambda r, png: drawn.append((r, png)))
    assert result == {"rows": [1, 2]} and drawn == [(result, png_beside(out))] and png_beside(out).endswith("results.png")
