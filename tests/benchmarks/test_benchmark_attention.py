"""benchmarks.common.tile_config: the --configs strings; benchmarks.plot_attention: its plot."""

import pytest

from benchmarks.common import tile_config
from benchmarks.plot_attention import _line_name, plot_results
from dma_jax import PallasConfig


def test_tile_config_reads_forward_and_backward_fields():
    config = tile_config("32,64,8,2:16,32,64,4,3")
    assert (config.block_q, config.block_k, config.options.num_warps, config.options.num_stages) == (32, 64, 8, 2)
    assert (config.block_q_bwd, config.block_k_bwd, config.block_slots) == (16, 32, 64)
    assert (config.options_bwd.num_warps, config.options_bwd.num_stages) == (4, 3)
    assert config.sequence_layout == PallasConfig().sequence_layout
    assert config.slot_sums_transposed == PallasConfig().slot_sums_transposed


def test_tile_config_reads_the_flags():
    assert tile_config("32,32,4,2:32,32,32,4,2:seq").sequence_layout
    assert not tile_config("32,32,4,2:32,32,32,4,2:tiles").sequence_layout
    assert not tile_config("32,32,4,2:32,32,32,4,2:plainslots").slot_sums_transposed
    config = tile_config("32,32,4,2:32,32,32,4,2:tiles,tslots,slots=8/1")
    assert config.slot_sums_transposed and not config.sequence_layout
    assert (config.options_slots.num_warps, config.options_slots.num_stages) == (8, 1)
    assert tile_config("32,32,4,2:32,32,32,4,2").options_slots is None


@pytest.mark.parametrize("text", ["32,32,4,2", "32,32,4:32,32,32,4,2", "32,32,4,2:32,32,32,4,2,64", "a:b",
                                  "32,32,4,2:32,32,32,4,2:rows", "32,32,4,2:32,32,32,4,2:seq:seq",
                                  "32,32,4,2:32,32,32,4,2:slots=8"])
def test_tile_config_rejects_malformed_strings(text):
    with pytest.raises(SystemExit, match="bad tile config"):
        tile_config(text)


def test_plot_draws_one_line_per_config_where_a_run_compares_several(tmp_path):
    rows = [dict(kind="cudnn", T=t, window=None, fwd_ms=t / 1e3, fwd_bwd_ms=t / 3e2) for t in (4096, 8192)]
    rows += [dict(kind="dma_pallas", T=t, window=1024, fwd_ms=t / 2e3, config=c) for t in (4096, 8192) for c in ("a", "b")]
    rows.append(dict(kind="dma_pallas", T=16384, window=1024, config="a", error="out of memory"))
    assert _line_name(rows[2], several_configs=True) == "DMA w=1024 [a]"
    assert _line_name(rows[2], several_configs=False) == "DMA w=1024"
    out = tmp_path / "attention.png"
    plot_results([dict(card="test card", jax="0", rows=rows)], str(out))
    assert out.stat().st_size > 10_000
