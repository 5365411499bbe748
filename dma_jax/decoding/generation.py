"""Generation with per-layer caches: prefill the prompts (whole or in chunks), then one jitted
scan over new tokens.

A DMA layer's cache holds only its w live keys per (sequence, bias head) (``decoding.dma_cache``);
MHA keeps every key and SWA a ring of w (``decoding.kv_cache``). Prompts may differ in length:
pass them right-padded with ``prompt_lengths``.

Any NNX model generates that has the two methods of ``CachedLM`` (``DecoderLM`` has them; a model
of one's own builds them from its attention layers' ``prefill``/``extend``/``decode``, the
``CachedAttention`` methods every layer of ``dma_jax.nn`` has: ``examples/custom_model.py``).
"""

from __future__ import annotations

import functools
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
from flax import nnx


@runtime_checkable
class CachedLM(Protocol):
    """What ``generate`` and ``teacher_forced_logits`` need of a model (an ``nnx.Module``).

    ``prefill(tokens, lengths, max_len, chunk)``: right-padded prompts, tokens int (B, T) of
    ``lengths`` (B,) -> (logits float (B, T, vocab), caches). ``max_len`` is the longest total
    length decoding will reach (dense caches are sized by it); ``chunk`` (None or an int) asks for
    the prompt ``chunk`` tokens at a time. ``caches`` is any pytree (one cache per layer).

    ``decode(tokens, positions, caches)``: one token per sequence, tokens and positions int (B,)
    -> (logits float (B, vocab), caches).
    """

    def prefill(self, tokens: jax.Array, lengths: jax.Array, max_len: int, chunk: int | None = None) -> tuple[jax.Array, Any]:
        ...

    def decode(self, tokens: jax.Array, positions: jax.Array, caches: Any) -> tuple[jax.Array, Any]:
        ...


def check_cached_lm(model) -> None:
    """Raise TypeError naming what ``model`` lacks of ``CachedLM``."""
    missing = [name for name in ("prefill", "decode") if not callable(getattr(model, name, None))]
    if missing:
        raise TypeError(
            f"{type(model).__name__} cannot generate: it has no {' and no '.join(missing)} method. A model "
            "generates when it defines prefill(tokens, lengths, max_len, chunk) -> (logits, caches) and "
            "decode(tokens, positions, caches) -> (logits, caches) (dma_jax.decoding.CachedLM; "
            "examples/custom_model.py builds both from its layers' prefill/extend/decode)"
        )


def _lengths(prompt_tokens, prompt_lengths):
    batch, prompt_len = prompt_tokens.shape
    if prompt_lengths is None:
        return jnp.full((batch,), prompt_len, jnp.int32)
    lengths = jnp.asarray(prompt_lengths, jnp.int32)
    if lengths.shape != (batch,):
        raise ValueError(f"prompt_lengths must have shape (B,)={(batch,)}, got {lengths.shape}")
    return lengths


@functools.partial(jax.jit, static_argnums=(0, 5))
def _teacher_forced(graphdef, state, prompt_tokens, lengths, continuation, chunk):
    model = nnx.merge(graphdef, state)
    max_len = prompt_tokens.shape[1] + continuation.shape[1]
    _, caches = model.prefill(prompt_tokens, lengths, max_len, chunk)

    def step(carry, token):
        position, caches = carry
        logits, caches = model.decode(token, position, caches)
        return (position + 1, caches), logits

    _, logits = jax.lax.scan(step, (lengths, caches), continuation.T)
    return jnp.swapaxes(logits, 0, 1)


def teacher_forced_logits(model, prompt_tokens, continuation, *, prompt_lengths=None, prefill_chunk=None):
    """Logits from cached decoding while feeding ``continuation`` (B, N) after the prompts.

    Returns float32 (B, N, vocab): entry i is what the model predicts after reading
    ``continuation[:, i]`` at position ``prompt_lengths + i``; a full forward pass over the
    concatenated tokens gives the same numbers (used to test the caches). ``model``: a ``CachedLM``.
    """
    check_cached_lm(model)
    graphdef, state = nnx.split(model)
    lengths = _lengths(prompt_tokens, prompt_lengths)
    return _teacher_forced(graphdef, state, prompt_tokens, lengths, continuation, prefill_chunk)


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 7))
def _generate(graphdef, state, prompt_tokens, lengths, steps, temperature, key, chunk):
    model = nnx.merge(graphdef, state)
    batch = prompt_tokens.shape[0]
    logits, caches = model.prefill(prompt_tokens, lengths, prompt_tokens.shape[1] + steps, chunk)
    keys = jax.random.split(key, steps)

    def pick(logits, key):
        if temperature == 0.0:
            return jnp.argmax(logits, axis=-1).astype(jnp.int32)
        return jax.random.categorical(key, logits / temperature).astype(jnp.int32)

    first = pick(logits[jnp.arange(batch), lengths - 1], keys[0])

    def step(carry, key):
        token, position, caches = carry
        logits, caches = model.decode(token, position, caches)
        following = pick(logits, key)
        return (following, position + 1, caches), following

    _, rest = jax.lax.scan(step, (first, lengths, caches), keys[1:])
    return jnp.concatenate([first[:, None], rest.T], axis=1)


def generate(
    model, prompt_tokens, max_new_tokens: int, *, prompt_lengths=None, temperature: float = 0.0, key=None,
    prefill_chunk: int | None = None,
):
    """Continue right-padded prompts (B, P) by ``max_new_tokens`` tokens -> int32 (B, max_new_tokens).

    ``model``: any ``CachedLM`` (e.g. ``DecoderLM``). ``prompt_lengths`` (B,): real prompt lengths
    (default P). ``temperature`` 0 is greedy; above 0 samples and needs ``key``. The prompt runs in
    one prefill pass, or ``prefill_chunk`` tokens at a time for long prompts; then decoding is one
    ``lax.scan`` under ``jit``.
    """
    check_cached_lm(model)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature > 0 and key is None:
        raise ValueError("sampling with temperature > 0 needs a key")
    key = jax.random.key(0) if key is None else key
    graphdef, state = nnx.split(model)
    return _generate(graphdef, state, prompt_tokens, _lengths(prompt_tokens, prompt_lengths), max_new_tokens,
                     float(temperature), key, prefill_chunk)
