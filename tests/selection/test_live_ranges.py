"""live_ranges and static_keep against the dense selection_mask and a step-by-step simulation."""

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dma_jax import live_ranges, selection_mask, static_keep
from dma_jax.selection import ranges
from dma_jax.selection.ranges import live_ranges_unchecked


def _random_case(rng, batch, heads, length, *, ties, neg_inf, segments, key_mask):
    if ties:
        bias = rng.integers(-2, 3, (batch, heads, length)).astype(np.float32)
    else:
        bias = rng.normal(size=(batch, heads, length)).astype(np.float32)
    if neg_inf:
        bias[rng.random(bias.shape) < 0.2] = -np.inf
    seg = None
    if segments == "contiguous":
        seg = np.sort(rng.integers(0, 3, (batch, length)), axis=1).astype(np.int32)
    elif segments == "interleaved":
        seg = rng.integers(0, 3, (batch, length)).astype(np.int32)
    mask = rng.random((batch, length)) < 0.75 if key_mask else None
    return bias, seg, mask


def _mask_from_ends(ends, seg):
    length = ends.shape[-1]
    query = np.arange(length)[:, None]
    key = np.arange(length)[None, :]
    kept = (key <= query) & (query < ends[:, :, None, :])
    if seg is not None:
        kept &= (seg[:, :, None] == seg[:, None, :])[:, None]
    return kept


CASES = {
    "plain": dict(ties=False, neg_inf=False, segments=None, key_mask=False),
    "ties": dict(ties=True, neg_inf=False, segments=None, key_mask=False),
    "neg_inf": dict(ties=True, neg_inf=True, segments=None, key_mask=False),
    "segments": dict(ties=True, neg_inf=False, segments="contiguous", key_mask=False),
    "interleaved_segments": dict(ties=True, neg_inf=False, segments="interleaved", key_mask=False),
    "key_mask": dict(ties=False, neg_inf=False, segments=None, key_mask=True),
    "everything": dict(ties=True, neg_inf=True, segments="contiguous", key_mask=True),
}


def _combination(case, window, length):
    # w = 200 keeps every visible key at these lengths as w = None does, and lengths 2 and 63 sit
    # between 1 and 111: those combinations are deselected by default (run with -m slow)
    slow = window == 200 or length in (2, 63)
    return pytest.param(case, window, length, id=f"{case}-w{window}-{length}",
                        marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("case,window,length", [
    _combination(case, window, length)
    for case in CASES for window in (1, 3, 17, 200, None) for length in (1, 2, 63, 111)])
def test_live_ranges_equal_selection_mask(case, window, length):
    rng = np.random.default_rng(zlib.crc32(repr((case, window, length)).encode()))  # the same inputs every run
    bias, seg, mask = _random_case(rng, 2, 3, length, **CASES[case])
    ends = np.asarray(live_ranges(jnp.asarray(bias), window, segment_ids=seg, key_mask=mask))
    expected = np.asarray(selection_mask(jnp.asarray(bias), window, length, segment_ids=seg, key_mask=mask))
    np.testing.assert_array_equal(_mask_from_ends(ends, seg), expected)
    assert ends.dtype == np.int32
    assert (ends >= np.arange(length)).all()


@pytest.mark.parametrize("case,variant", [
    pytest.param(case, variant, id=f"{name}-{case}",
                 # 10-24 s each on a fresh clone: CI keeps DMA's "everything" row
                 marks=[] if name == "dma" and case == "everything" else [pytest.mark.slow])
    for name, variant in (("dma", dict()), ("local8_sinks2", dict(local_window=8, sink_keys=2)))
    for case in ("everything", "interleaved_segments", "plain")])
def test_block_counts_and_wavelet_matrix_give_the_same_ranges(case, variant, monkeypatch):
    """Short rows take block counts by default and long ones the wavelet matrix
    (``ranges.ORDER_STATISTICS``); each forced everywhere gives the same ends."""
    rng = np.random.default_rng(7)
    bias, seg, mask = _random_case(rng, 2, 2, 300, **CASES[case])
    ends = {}
    for method in ("blocks", "wavelet"):
        monkeypatch.setattr(ranges, "ORDER_STATISTICS", method)
        jax.clear_caches()  # read at trace time
        ends[method] = np.asarray(live_ranges_unchecked(jnp.asarray(bias), 40, seg, mask, **variant))
    jax.clear_caches()
    np.testing.assert_array_equal(ends["blocks"], ends["wavelet"])
    assert (ends["blocks"] > np.arange(300)).any()


@pytest.mark.parametrize("length, method", [(8192, "blocks"), (8193, "wavelet")])
def test_auto_order_statistics_switch_at_the_length_bound(length, method):
    assert ranges.BLOCK_COUNTS_MAX_LENGTH == 8192
    assert ranges.order_statistics_method(length) == method


def test_unknown_order_statistics_are_refused(monkeypatch):
    monkeypatch.setattr(ranges, "ORDER_STATISTICS", "sorted")
    with pytest.raises(ValueError, match="ORDER_STATISTICS"):
        ranges.order_statistics_method(10)


def _simulated_ends(bias, window):
    """Walk the queries one by one, keep top-w of (previous kept set + new key)."""
    length = len(bias)
    kept, last_seen = [], {}
    for t in range(length):
        if np.isfinite(bias[t]):
            kept.append(t)
        kept = sorted(kept, key=lambda j: (bias[j], j), reverse=True)[:window]
        for j in kept:
            last_seen[j] = t
    return np.array([last_seen[j] + 1 if j in last_seen else j for j in range(length)])


@pytest.mark.parametrize("window", [1, 2, 5, 40])
def test_live_ranges_match_incremental_simulation(window):
    rng = np.random.default_rng(window)
    bias = rng.integers(-3, 4, (1, 4, 50)).astype(np.float32)
    bias[0, 3, ::7] = -np.inf
    ends = np.asarray(live_ranges(jnp.asarray(bias), window))
    for head in range(4):
        np.testing.assert_array_equal(ends[0, head], _simulated_ends(bias[0, head], window))


@pytest.mark.parametrize("window", [1, 4, 9])
def test_constant_bias_is_sliding_window(window):
    length = 37
    ends = live_ranges(jnp.zeros((2, 1, length)), window)
    expected = np.minimum(np.arange(length) + window, length)
    np.testing.assert_array_equal(np.asarray(ends), np.broadcast_to(expected, (2, 1, length)))


def test_negative_zero_ties_with_zero():
    bias = jnp.asarray([[[0.0, -0.0, 0.0, -0.0]]])
    np.testing.assert_array_equal(np.asarray(live_ranges(bias, 2)), [[[2, 3, 4, 4]]])


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=["bf16", "fp16"])
def test_low_precision_bias(dtype):
    rng = np.random.default_rng(0)
    bias = jnp.asarray(rng.normal(size=(1, 2, 90)), dtype)  # many ties after rounding
    ends = np.asarray(live_ranges(bias, 7))
    np.testing.assert_array_equal(_mask_from_ends(ends, None), np.asarray(selection_mask(bias, 7, 90)))


@pytest.mark.parametrize("window", [1, 5, None], ids=lambda w: f"w{w}")
@pytest.mark.parametrize("case", ["ties", "everything", "interleaved_segments"])
def test_static_keep_equals_noncausal_selection(case, window):
    rng = np.random.default_rng(7)
    bias, seg, mask = _random_case(rng, 2, 2, 41, **CASES[case])
    keep = np.asarray(static_keep(jnp.asarray(bias), window, segment_ids=seg, key_mask=mask))
    dense = np.asarray(selection_mask(jnp.asarray(bias), window, 41, causal=False, segment_ids=seg, key_mask=mask))
    # Every query keeps the kept keys of its own segment, and nothing else.
    rows = np.broadcast_to(keep[:, :, None, :], dense.shape)
    if seg is not None:
        rows = rows & (seg[:, :, None] == seg[:, None, :])[:, None]
    np.testing.assert_array_equal(rows, dense)


def test_live_ranges_under_jit_and_vmap():
    rng = np.random.default_rng(3)
    bias = jnp.asarray(rng.integers(0, 4, (3, 2, 2, 30)).astype(np.float32))
    batched = jax.jit(jax.vmap(lambda b: live_ranges(b, 4)))(bias)
    for i in range(3):
        np.testing.assert_array_equal(np.asarray(batched[i]), np.asarray(live_ranges(bias[i], 4)))


@pytest.mark.parametrize("length", [32768, 131072], ids=["32K", "128K"])
def test_long_sequences_without_quadratic_memory(length):
    window = 1024
    bias = jax.random.normal(jax.random.key(0), (1, 1, length))
    compiled = jax.jit(live_ranges_unchecked, static_argnames="window").lower(bias, window).compile()
    memory = compiled.memory_analysis()
    if memory is not None:  # a T x T bool array alone would be length**2 bytes
        assert memory.temp_size_in_bytes < 64 * length * 20, memory.temp_size_in_bytes
    ends = np.asarray(compiled(bias))[0, 0]
    # Every query keeps exactly min(window, t + 1) keys: count live ranges covering each t.
    events = np.zeros(length + 1, np.int64)
    np.add.at(events, np.arange(length), 1)
    np.add.at(events, ends, -1)
    kept_per_query = np.cumsum(events)[:length]
    np.testing.assert_array_equal(kept_per_query, np.minimum(np.arange(length) + 1, window))
    assert (ends >= np.arange(length)).all() and (ends <= length).all()
