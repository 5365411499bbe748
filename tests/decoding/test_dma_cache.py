"""The bounded DMA cache gives exactly the outputs of full attention, at constant size."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dma_jax import dma_attention_reference
from dma_jax.decoding.dma_cache import cache_append, cache_from_prefill, cached_attention


@pytest.mark.parametrize(
    "bias_heads, ties, window",
    [(2, False, 5), (2, True, 5), (4, True, 3), (2, False, 1), (2, True, 40)],
    ids=["hb_hkv", "ties", "hb_h_ties", "w1", "w_gt_T"],
)
def test_prefill_then_decode_matches_full_attention(bias_heads, ties, window):
    rng = np.random.default_rng(bias_heads * 10 + window + ties)
    batch, length, heads, kv_heads, dim = 3, 30, 4, 2, 8
    q = jnp.asarray(rng.normal(size=(batch, length, heads, dim)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(batch, length, kv_heads, dim)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(batch, length, kv_heads, dim)), jnp.float32)
    raw = rng.integers(-2, 3, (batch, bias_heads, length)) if ties else rng.normal(size=(batch, bias_heads, length))
    bias = jnp.asarray(raw, jnp.float32)
    lengths = jnp.asarray([4, 11, 1])  # prompts of different lengths, right-padded
    full = [np.asarray(dma_attention_reference(q[b:b + 1], k[b:b + 1], v[b:b + 1], bias[b:b + 1], window))[0]
            for b in range(batch)]

    cache = cache_from_prefill(k, v, bias, window, lengths)
    assert cache.keys.shape == (batch, bias_heads, window, dim)
    position = lengths
    append = jax.jit(cache_append)
    attend = jax.jit(cached_attention)
    for _ in range(length - int(lengths.max())):
        idx = position[:, None, None, None]
        take = lambda x: jnp.take_along_axis(x, jnp.broadcast_to(idx, (batch, 1) + x.shape[2:]), axis=1)[:, 0]
        cache = append(cache, take(k), take(v), jnp.take_along_axis(bias, position[:, None, None], axis=2)[..., 0],
                       position)
        out = np.asarray(attend(take(q), cache))
        assert cache.keys.shape == (batch, bias_heads, window, dim), "the cache never grows"
        for b in range(batch):
            np.testing.assert_allclose(out[b], full[b][int(position[b])], atol=1e-5)
        position = position + 1
