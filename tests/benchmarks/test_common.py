"""benchmarks/common.py: what every benchmark JSON records."""

from benchmarks.common import result_header


def test_result_header_names_the_kernel_environment_in_the_command(monkeypatch):
    monkeypatch.delenv("DMA_FORWARD_BACKEND", raising=False)
    monkeypatch.delenv("DMA_BACKWARD_BACKEND", raising=False)
    monkeypatch.setenv("DMA_KV_SEQUENCE_LAYOUT", "1")
    header = result_header("x", "benchmarks.x", ["--lengths", "64"])
    assert header["command"] == "DMA_KV_SEQUENCE_LAYOUT=1 python -m benchmarks.x --lengths 64"
    monkeypatch.delenv("DMA_KV_SEQUENCE_LAYOUT")
    assert result_header("x", "benchmarks.x", [])["command"] == "python -m benchmarks.x"
