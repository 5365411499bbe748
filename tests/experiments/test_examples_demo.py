"""The demo (python examples/demo.py) runs end to end at small sizes and reports pass/fail."""

import importlib.util
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("demo", ROOT / "examples" / "demo.py")
demo = importlib.util.module_from_spec(_spec)
sys.modules["demo"] = demo  # dataclasses look their module up while building DemoConfig
_spec.loader.exec_module(demo)

SMALL = [
    "--seq-len", "160", "--window", "8", "--batch", "1", "--heads", "4", "--kv-heads", "2",
    "--head-dim", "16", "--picture-seq-len", "24", "--picture-window", "4",
    "--timing-seq-len", "2048", "--timing-window", "64", "--timing-bias-heads", "2",
    "--timing-repeats", "2",
]


def test_defaults_and_flags():
    config = demo.parse_args([])
    assert (config.seq_len, config.window, config.heads, config.kv_heads) == (256, 32, 4, 2)
    assert config.out == "runs/demo"
    assert demo.parse_args(["--seq-len", "64", "--window", "8"]).seq_len == 64


@pytest.mark.slow  # 35 s on a fresh clone; what the demo checks, the op and plotting tests also do
def test_demo_main_passes_at_small_sizes(tmp_path, capsys):
    assert demo.main(["--out", str(tmp_path)] + SMALL) == 0
    printed = capsys.readouterr().out
    assert "backend" in printed and "[timing] live_ranges" in printed
    for name in ("out", "dq", "dk", "dv", "dbias"):
        assert any(line.split()[:1] == [name] and line.endswith("pass") for line in printed.splitlines())
    picture = pathlib.Path(tmp_path) / "selection.png"
    assert picture.stat().st_size > 0


@pytest.mark.slow  # 26 s; the demo's passing run stays in CI
def test_demo_main_reports_failure(tmp_path, capsys):
    # A negative tolerance cannot be met: the demo must say so and return non-zero.
    small = SMALL + ["--seq-len", "64", "--tolerance", "-1"]
    assert demo.main(["--out", str(tmp_path)] + small) == 1
    assert "FAIL" in capsys.readouterr().out
