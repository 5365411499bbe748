"""selection.chunk_counts: the w-th beater of every key from per-chunk counts, equal to the
sorted row's answer (block counts) for every chunk size, with padding, ties, segments and masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dma_jax.selection import ranges
from dma_jax.selection.chunk_counts import beater_arrivals, prefix_counts
from dma_jax.selection.ranges import row_inputs
from selection.test_live_ranges import CASES, _random_case


def _ends_from_arrivals(arrivals, valid):
    index = np.arange(arrivals.shape[-1])
    return np.where(valid, np.maximum(index, arrivals), index)


def _combination(case, window):
    # CI keeps one window of "everything" (segments, key mask, ties, -inf) and the cheap rows
    slow = case != "interleaved_segments" and (window, case) not in ((9, "everything"), (None, "neg_inf"))
    return pytest.param(case, window, id=f"{case}-w{window}", marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("case,window", [_combination(case, window) for case in ("everything", "interleaved_segments",
                                                                                    "neg_inf") for window in (1, 9, None)])
def test_every_chunk_size_gives_the_sorted_rows_ends(case, window, monkeypatch):
    rng = np.random.default_rng(len(case) * 31 + (window or 0))
    length = 75  # no chunk size below divides it: the last chunk is padded
    bias, seg, mask = _random_case(rng, 2, 2, length, **CASES[case])
    monkeypatch.setattr(ranges, "ORDER_STATISTICS", "blocks")
    expected = np.asarray(ranges.live_ranges_unchecked(jnp.asarray(bias), window, seg, mask))
    b, s, v = row_inputs(jnp.asarray(bias), None if seg is None else jnp.asarray(seg),
                         None if mask is None else jnp.asarray(mask))
    for chunk in (1, 2, 8, 32, 128, None):
        arrivals = jax.jit(beater_arrivals, static_argnums=(3, 4))(b, None if s is None else s[:, None, :], v, window, chunk)
        np.testing.assert_array_equal(_ends_from_arrivals(np.asarray(arrivals), np.asarray(v)), expected,
                                      err_msg=f"chunk {chunk}")


def test_prefix_counts_count_the_sorted_prefix():
    rng = np.random.default_rng(0)
    sorted_chunks = np.sort(rng.integers(0, 20, (3, 16)), axis=1).astype(np.int32)
    queries = np.arange(-1, 22, dtype=np.int32)
    first = (np.arange(3)[None, :] * 16 + np.zeros((len(queries), 1), np.int32))[None]  # (1, queries, chunks)
    counts = prefix_counts((jnp.asarray(sorted_chunks.reshape(-1)),), 16, jnp.asarray(first),
                           lambda f: f[0] < jnp.asarray(queries)[None, :, None, None])
    expected = (sorted_chunks[None, :, :] < queries[:, None, None]).sum(-1)
    np.testing.assert_array_equal(np.asarray(counts)[0], expected)


def test_chunks_must_be_powers_of_two():
    with pytest.raises(ValueError, match="power of two"):
        beater_arrivals(jnp.zeros((1, 8)), None, jnp.ones((1, 8), bool), 2, chunk=3)
