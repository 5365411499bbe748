"""A model written outside the package (examples/custom_model.py) trains and generates through the
documented interface: its cached logits equal its full forward pass; a model without the
interface is refused naming what it lacks."""

import importlib.util
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dma_jax import generate
from dma_jax.decoding import CachedLM, teacher_forced_logits
from dma_jax.nn import CachedAttention, DynamicMaskAttention, MultiHeadAttention

_path = Path(__file__).resolve().parents[2] / "examples" / "custom_model.py"
_spec = importlib.util.spec_from_file_location("custom_model", _path)
custom_model = importlib.util.module_from_spec(_spec)
sys.modules["custom_model"] = custom_model
_spec.loader.exec_module(custom_model)


@pytest.fixture(scope="module")
def trained():
    model = custom_model.TinyLM(rngs=nnx.Rngs(0))
    losses = custom_model.train(model, steps=40)
    assert losses[-1] < losses[0] - 0.5
    return model


@pytest.mark.parametrize("chunk", [None, 5])
def test_cached_logits_equal_the_full_forward(trained, chunk):
    tokens = jnp.asarray(np.random.default_rng(2).integers(0, 64, (2, 30)), jnp.int32)
    lengths = jnp.array([12, 9])
    prompts, continuation = tokens[:, :12], tokens[:, 12:]
    cached = teacher_forced_logits(trained, prompts, continuation, prompt_lengths=lengths, prefill_chunk=chunk)
    for b, length in enumerate(np.asarray(lengths)):
        row = jnp.concatenate([prompts[b, :length], continuation[b]])[None]
        full = trained(row)[0, length: length + continuation.shape[1]]
        np.testing.assert_allclose(np.asarray(cached[b]), np.asarray(full), atol=2e-4, rtol=2e-4)


def test_it_generates_and_satisfies_the_protocols(trained):
    assert isinstance(trained, CachedLM) and isinstance(trained.attn, CachedAttention)
    assert isinstance(MultiHeadAttention(16, 2, 1, 8, rngs=nnx.Rngs(0)), CachedAttention)
    out = generate(trained, jnp.zeros((2, 6), jnp.int32), 5, prompt_lengths=[6, 3])
    assert out.shape == (2, 5) and out.dtype == jnp.int32


class NoDecode(nnx.Module):
    def __init__(self):
        self.attn = DynamicMaskAttention(16, 2, 1, 8, window=4, rngs=nnx.Rngs(0))

    def __call__(self, x):
        return self.attn(x)


def test_a_model_without_the_interface_is_refused_naming_what_it_lacks():
    with pytest.raises(TypeError, match="NoDecode cannot generate: it has no prefill and no decode method"):
        generate(NoDecode(), jnp.zeros((1, 4), jnp.int32), 2)
