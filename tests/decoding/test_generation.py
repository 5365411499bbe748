"""Cached decoding equals a full forward pass, for every attention kind; the DMA cache stays at w."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dma_jax.decoding import generate, teacher_forced_logits
from dma_jax.models import DecoderLM, ModelConfig


VARIANTS = {"dma_recency": dict(dma_recency=0.3), "dma_local_sinks": dict(dma_local_window=2, dma_sink_keys=1)}


def _model(kind, window=6):
    """``kind``: an attention, or a DMA variant of ``VARIANTS`` (a position term in the key score;
    the local-window variant with local keys, sinks or both)."""
    options = VARIANTS.get(kind, {})
    kind = "dma" if kind in VARIANTS else kind
    model = DecoderLM(ModelConfig.preset("tiny", attention=kind, window=window, **options), rngs=nnx.Rngs(0))
    if kind == "dma":  # a bias that changes from key to key, so the selection is not a sliding window
        for block in model.blocks:
            block.attn.A[...] = jnp.array([1.5, -1.0])
            block.attn.dt_proj.kernel[...] = block.attn.dt_proj.kernel[...] * 20
    return model


def _full_logits(model, prompts, lengths, continuation):
    """Row b: the full forward's logits of prompt b's first lengths[b] tokens then continuation b, from one
    batched call (rows right-padded with zeros, which a causal model never lets earlier tokens see)."""
    rows = [np.concatenate([np.asarray(prompts[b, :length]), np.asarray(continuation[b])]) for b, length in enumerate(lengths)]
    width = max(len(r) for r in rows)
    batch = np.stack([np.pad(r, (0, width - len(r))) for r in rows])
    logits = np.asarray(nnx.jit(lambda model, tokens: model(tokens))(model, jnp.asarray(batch, jnp.int32)))
    return [logits[b, :len(r)] for b, r in enumerate(rows)]


@pytest.mark.parametrize("kind", ["dma", "dma_recency", "dma_local_sinks", "mha", "swa", "mla", "nsa"])
def test_cached_decoding_equals_full_forward(kind):
    model = _model(kind)
    rng = np.random.default_rng(0)
    prompts = jnp.asarray(rng.integers(0, 256, (3, 12)), jnp.int32)
    lengths = np.array([12, 5, 1])
    continuation = jnp.asarray(rng.integers(0, 256, (3, 20)), jnp.int32)
    cached = np.asarray(teacher_forced_logits(model, prompts, continuation, prompt_lengths=lengths))
    for b, (length, full) in enumerate(zip(lengths, _full_logits(model, prompts, lengths, continuation))):
        np.testing.assert_allclose(cached[b], full[length:length + 20], atol=2e-4)


def test_dma_cache_stays_at_window_entries():
    window = 4
    model = _model("dma", window=window)
    prompts = jnp.zeros((1, 3), jnp.int32)
    _, caches = model.prefill(prompts, jnp.array([3]), 3 + 10 * window)
    sizes = {c.keys.shape for c in caches}
    positions = jnp.array([3])
    step = nnx.jit(lambda m, t, p, c: m.decode(t, p, c))
    for i in range(10 * window):
        _, caches = step(model, jnp.array([i % 256], jnp.int32), positions + i, caches)
        assert {c.keys.shape for c in caches} == sizes
    assert sizes == {(1, 2, window, 16)}
    assert all(int((c.position >= 0).sum()) == 2 * window for c in caches), "full, never more"


@pytest.mark.slow  # 32 s on a fresh clone; cached decoding equals the full forward in the tests above
def test_greedy_generation_is_consistent_with_the_model():
    model = _model("dma")
    prompts = jnp.asarray(np.random.default_rng(1).integers(0, 256, (2, 7)), jnp.int32)
    tokens = np.asarray(generate(model, prompts, 9, prompt_lengths=[7, 3]))
    assert tokens.shape == (2, 9) and tokens.dtype == np.int32
    for b, length in enumerate([7, 3]):
        sequence = np.concatenate([np.asarray(prompts[b, :length]), tokens[b]])
        predicted = np.argmax(np.asarray(model(jnp.asarray(sequence)[None]))[0], axis=-1)
        np.testing.assert_array_equal(predicted[length - 1 : length - 1 + 9], tokens[b])


def test_sampling_needs_a_key_and_is_reproducible():
    model = _model("swa")
    prompts = jnp.zeros((2, 4), jnp.int32)
    with pytest.raises(ValueError, match="key"):
        generate(model, prompts, 3, temperature=1.0)
    a = generate(model, prompts, 5, temperature=1.0, key=jax.random.key(3))
    b = generate(model, prompts, 5, temperature=1.0, key=jax.random.key(3))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow  # 14-50 s a kind on a fresh clone; each kind's cache also has the decoding test above
@pytest.mark.parametrize("kind", ["dma", "dma_local_sinks", "mha", "swa", "mla", "nsa"])
def test_chunked_prefill_equals_full_forward(kind):
    """Prompts run 5 tokens at a time (lengths 13, 7, 2: three chunks, the window of 6 filled in
    the second), then decoding: the full forward's logits."""
    model = _model(kind)
    rng = np.random.default_rng(1)
    prompts = jnp.asarray(rng.integers(0, 256, (3, 13)), jnp.int32)
    lengths = np.array([13, 7, 2])
    continuation = jnp.asarray(rng.integers(0, 256, (3, 6)), jnp.int32)
    prompt_logits, _ = nnx.jit(lambda m, t, l: m.prefill(t, l, 19, 5))(model, prompts, jnp.asarray(lengths))
    cached = np.asarray(teacher_forced_logits(model, prompts, continuation, prompt_lengths=lengths, prefill_chunk=5))
    for b, (length, full) in enumerate(zip(lengths, _full_logits(model, prompts, lengths, continuation))):
        np.testing.assert_allclose(np.asarray(prompt_logits)[b, :length], full[:length], atol=2e-4)
        np.testing.assert_allclose(cached[b], full[length:], atol=2e-4)


def test_swa_cache_is_a_ring_of_window_slots():
    model = _model("swa", window=6)
    _, caches = nnx.jit(lambda m, t, l: m.prefill(t, l, 60))(model, jnp.zeros((2, 20), jnp.int32), jnp.array([20, 7]))
    assert {c.keys.shape[1] for c in caches} == {6}
    _, chunked = nnx.jit(lambda m, t, l: m.prefill(t, l, 60, 5))(model, jnp.zeros((2, 20), jnp.int32),
                                                                   jnp.array([20, 7]))
    assert {c.keys.shape[1] for c in chunked} == {6 + 5 - 1}
