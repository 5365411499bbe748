"""The local-window variant (``local_window`` l, ``sink_keys`` s): each query keeps its segment's
first s valid keys, its last l other valid keys, and the top w - l - s of the rest.

Its live ranges (``selection.ranges``) against the loop-by-loop oracle (``naive.py``) and the dense
reference, on random cases with ties, -inf, segments and key masks; every implementation (XLA,
Pallas GPU and TPU kernels in interpret mode) against the dense reference, forward and gradients;
argument checks. Cached decoding of the variant is in tests/decoding/test_generation.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dma_jax
from naive import kept_sets_to_mask, naive_kept_sets


def _mask_from_ends(ends, segment_ids):
    positions = np.arange(ends.shape[-1])
    mask = (positions[:, None] >= positions[None, :]) & (positions[:, None] < ends[:, :, None, :])
    if segment_ids is not None:
        mask = mask & (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]
    return mask


def _random_case(rng, length):
    window = int(rng.integers(1, 10))
    local = int(rng.integers(0, window + 1))
    sinks = int(rng.integers(0, window - local + 1))
    bias = rng.integers(-2, 3, (2, 2, length)).astype(np.float64)  # many ties, +0.0 and -0.0
    bias = np.where((bias == 0) & (rng.random(bias.shape) < 0.5), -0.0, bias)
    bias[rng.random(bias.shape) < 0.15] = -np.inf
    segments = np.sort(rng.integers(0, 3, (2, length)), axis=1).astype(np.int32) if rng.random() < 0.5 else None
    key_mask = rng.random((2, length)) < 0.8 if rng.random() < 0.5 else None
    return window, local, sinks, bias, segments, key_mask


def test_live_ranges_match_the_loop_oracle():
    rng = np.random.default_rng(0)
    for _ in range(10):
        length = int(rng.integers(3, 16))
        window, local, sinks, bias, segments, key_mask = _random_case(rng, length)
        ends = dma_jax.live_ranges(jnp.asarray(bias, jnp.float32), window, segment_ids=segments, key_mask=key_mask,
                                   local_window=local, sink_keys=sinks)
        kept = naive_kept_sets(bias, window, length, segment_ids=segments, key_mask=key_mask, local_window=local,
                               sink_keys=sinks)
        np.testing.assert_array_equal(_mask_from_ends(np.asarray(ends), segments), kept_sets_to_mask(kept, length),
                                      err_msg=f"w={window} l={local} s={sinks}")


@pytest.mark.slow  # 30 s; the loop oracle's test above covers the same rules
def test_live_ranges_match_the_dense_reference_on_longer_rows():
    rng = np.random.default_rng(1)
    for _ in range(8):
        length = int(rng.integers(16, 40))
        window, local, sinks, bias, segments, key_mask = _random_case(rng, length)
        bias = jnp.asarray(bias, jnp.float32)
        kwargs = dict(segment_ids=segments, key_mask=key_mask, local_window=local, sink_keys=sinks)
        ends = np.asarray(dma_jax.live_ranges(bias, window, **kwargs))
        dense = np.asarray(dma_jax.selection_mask(bias, window, length, **kwargs))
        np.testing.assert_array_equal(_mask_from_ends(ends, segments), dense)
        assert dense.sum(-1).max() <= window


def test_no_local_window_and_no_sinks_is_dma():
    bias = jnp.asarray(np.random.default_rng(2).standard_normal((2, 3, 50)), jnp.float32)
    np.testing.assert_array_equal(dma_jax.live_ranges(bias, 7, local_window=0, sink_keys=0), dma_jax.live_ranges(bias, 7))


def test_a_local_window_as_wide_as_the_window_is_a_sliding_window():
    bias = jnp.asarray(np.random.default_rng(3).standard_normal((1, 1, 40)), jnp.float32)
    ends = np.asarray(dma_jax.live_ranges(bias, 5, local_window=5))[0, 0]
    np.testing.assert_array_equal(ends, np.minimum(np.arange(40) + 5, 40))


CASES = [
    dict(window=12, local_window=4, sink_keys=2, segments=True, key_mask=True, bias_heads=2),
    dict(window=9, local_window=3, sink_keys=0, segments=False, key_mask=True, bias_heads=4),
    dict(window=6, local_window=0, sink_keys=3, segments=True, key_mask=False, bias_heads=2),
]


@pytest.mark.parametrize("case,implementation", [
    pytest.param(CASES[0], "xla", id="xla-l4_s2_segments_mask"),
    pytest.param(CASES[1], "xla", id="xla-l3_hb_h_mask", marks=pytest.mark.slow),  # 15 s; the row above has l and more
    pytest.param(CASES[2], "xla", id="xla-sinks_only_segments", marks=pytest.mark.slow),  # 25 s
    # 18 s and 81 s in interpret mode on a fresh clone: run with -m slow
    pytest.param(CASES[0], "pallas", id="pallas-l4_s2_segments_mask", marks=pytest.mark.slow),
    pytest.param(CASES[1], "pallas_tpu", id="pallas_tpu-l3_hb_h_mask", marks=pytest.mark.slow)])
def test_every_implementation_matches_the_reference(case, implementation):
    rng = np.random.default_rng(4)
    # one row for the TPU kernel: its interpret mode is the slowest, and a second row adds no case
    batch, length, heads, kv_heads, dim = 1 if implementation == "pallas_tpu" else 2, 48, 4, 2, 16
    q = jnp.asarray(rng.standard_normal((batch, length, heads, dim)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((batch, length, kv_heads, dim)), jnp.float32)
    v = jnp.asarray(rng.standard_normal((batch, length, kv_heads, dim)), jnp.float32)
    bias = rng.integers(-3, 4, (batch, case["bias_heads"], length)).astype(np.float32)
    bias[rng.random(bias.shape) < 0.1] = -np.inf
    bias = jnp.asarray(bias)
    kwargs = dict(local_window=case["local_window"], sink_keys=case["sink_keys"])
    if case["segments"]:
        kwargs["segment_ids"] = jnp.asarray(np.sort(rng.integers(0, 3, (batch, length)), axis=1).astype(np.int32))
    if case["key_mask"]:
        kwargs["key_mask"] = jnp.asarray(rng.random((batch, length)) < 0.85)
    cotangent = jnp.asarray(rng.standard_normal(q.shape), jnp.float32)

    def run(fn):
        out, vjp = jax.vjp(lambda *a: fn(*a, case["window"], **kwargs), q, k, v, bias)
        return (out, *vjp(cotangent))

    got = run(lambda *a, **kw: dma_jax.dma_attention(*a, implementation=implementation, **kw))
    want = run(dma_jax.dma_attention_reference)
    for name, g, w in zip(("out", "dq", "dk", "dv", "dbias"), got, want):
        assert float(jnp.abs(g - w).max()) <= 1e-4 * max(1.0, float(jnp.abs(w).max())), name


@pytest.mark.parametrize("kwargs,message", [
    (dict(local_window=5, sink_keys=4), "exceed window=8"), (dict(local_window=-1), "local_window must be an int >= 0"),
    (dict(sink_keys=1.5), "sink_keys must be an int >= 0"), (dict(local_window=2, causal=False), "need causal"),
])
def test_argument_errors(kwargs, message):
    q = jnp.zeros((1, 16, 2, 8))
    bias = jnp.zeros((1, 1, 16))
    with pytest.raises(ValueError, match=message):
        dma_jax.dma_attention(q, q[:, :, :1], q[:, :, :1], bias, 8, **kwargs)
