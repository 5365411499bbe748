"""plot_selection writes a readable PNG; the worked example in docs/semantics.md is current."""

import importlib.util
import pathlib

import numpy as np
import pytest

from dma_jax.plotting import plot_selection

ROOT = pathlib.Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _ties(length, seed=0):
    rng = np.random.default_rng(seed)
    return (np.round(rng.normal(size=length) * 2) / 2).astype(np.float32)


@pytest.mark.parametrize(
    "length, window, packed",
    [(20, 4, False), (33, 5, True), (12, None, False)],
    ids=["T20-w4", "T33-w5-segments-keymask", "T12-no-window"],
)
def test_plot_selection_writes_png(tmp_path, length, window, packed):
    bias = _ties(length)
    kwargs = {}
    if packed:
        bias[3] = -np.inf
        kwargs["segment_ids_row"] = (np.arange(length) >= length // 2).astype(np.int32)
        key_mask = np.ones(length, bool)
        key_mask[[1, length - 1]] = False
        kwargs["key_mask_row"] = key_mask
    path = tmp_path / "sub" / "selection.png"
    returned = plot_selection(bias, window, path=path, **kwargs)
    assert returned == str(path)
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5_000


def test_plot_selection_rejects_2d_bias(tmp_path):
    with pytest.raises(ValueError, match=r"shape \(T,\)"):
        plot_selection(np.zeros((2, 8), np.float32), 2, path=tmp_path / "x.png")


def test_semantics_doc_shows_what_the_code_prints():
    script = ROOT / "docs" / "make_semantics_figures.py"
    spec = importlib.util.spec_from_file_location("make_semantics_figures", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = module.worked_example_text()
    doc = (ROOT / "docs" / "semantics.md").read_text()
    assert text in doc, "docs/semantics.md is stale: rerun docs/make_semantics_figures.py and paste its output"
