"""benchmarks/attention.py: the --configs strings."""

import pytest

from benchmarks.attention import tile_config
from dma_jax.pallas_attention import PallasConfig


def test_tile_config_reads_forward_and_backward_fields():
    config = tile_config("32,64,8,2:16,32,64,4,3")
    assert (config.block_q, config.block_k, config.options.num_warps, config.options.num_stages) == (32, 64, 8, 2)
    assert (config.block_q_bwd, config.block_k_bwd, config.block_slots) == (16, 32, 64)
    assert (config.options_bwd.num_warps, config.options_bwd.num_stages) == (4, 3)
    assert config.slot_chunk_tiles == PallasConfig().slot_chunk_tiles
    assert not config.sequence_layout


def test_tile_config_reads_the_flags():
    assert tile_config("32,32,4,2:32,32,32,4,2:seq").sequence_layout
    assert tile_config("32,32,4,2:32,32,32,4,2,64:seq").slot_chunk_tiles == 64
    config = tile_config("32,32,4,2:32,32,32,4,2:tslots,slots=8/1")
    assert config.slot_sums_transposed and not config.sequence_layout
    assert (config.options_slots.num_warps, config.options_slots.num_stages) == (8, 1)
    assert tile_config("32,32,4,2:32,32,32,4,2").options_slots is None


@pytest.mark.parametrize("field,expected", [("64", 64), ("0", None)])
def test_tile_config_reads_the_optional_chunk_field(field, expected):
    assert tile_config(f"32,32,4,2:32,32,32,4,2,{field}").slot_chunk_tiles == expected


@pytest.mark.parametrize("text", ["32,32,4,2", "32,32,4:32,32,32,4,2", "32,32,4,2:32,32,32,4,2,1,1", "a:b",
                                  "32,32,4,2:32,32,32,4,2:tiles", "32,32,4,2:32,32,32,4,2:seq:seq",
                                  "32,32,4,2:32,32,32,4,2:slots=8"])
def test_tile_config_rejects_malformed_strings(text):
    with pytest.raises(SystemExit, match="bad tile config"):
        tile_config(text)
