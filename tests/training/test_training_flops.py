"""dma_jax.training.flops: kept keys per kind, FLOPs per token, peak lookup."""

import pytest
from flax import nnx

from dma_jax.models import DecoderLM, ModelConfig
from dma_jax.training.flops import count_matmul_params, mean_kept_keys, peak_flops, training_flops_per_token


@pytest.mark.parametrize(
    "attention, window, expected",
    [("mha", 4, 5.5), ("dma", 4, (1 + 2 + 3 + 4 * 7) / 10), ("swa", 100, 5.5), ("dma", None, 5.5), ("mla", 2, 5.5)],
    ids=["mha", "dma-w4", "swa-wide", "dma-none", "mla-ignores-window"],
)
def test_mean_kept_keys(attention, window, expected):
    config = ModelConfig.preset("tiny", attention=attention, window=window)
    assert mean_kept_keys(config, 10) == pytest.approx(expected)


def test_flops_per_token_counts_matmuls_head_and_attention():
    config = ModelConfig.preset("tiny", attention="mha")  # d=64, 2 layers, 4 heads of 16, kv 2, mlp 256
    _, params = nnx.split(DecoderLM(config, rngs=nnx.Rngs(0)))
    per_layer = 64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 256
    assert count_matmul_params(params) == 2 * per_layer
    expected = 6 * (2 * per_layer + 256 * 64) + 12 * 2 * 4 * 16 * 5.5
    assert training_flops_per_token(config, 2 * per_layer, 10) == pytest.approx(expected)


def test_peak_flops_lookup():
    assert peak_flops("NVIDIA H200") == 989e12
    assert peak_flops("TPU v5p") == 459e12
    assert peak_flops("cpu") is None
