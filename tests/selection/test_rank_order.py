"""selection.ranges.rank_order: one row's keys by (segment, valid first, bias descending, index
descending), -0.0 tied with 0.0, with infinite, NaN and masked biases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dma_jax.selection.ranges import rank_order


def _expected_order(bias, segment, valid):
    index = np.arange(bias.shape[0])
    score = np.where(valid & (bias != 0), bias, 0.0)  # -0.0 ties with 0.0
    # np.lexsort sorts by its last key first
    return np.lexsort((-index, -score, ~valid, segment if segment is not None else np.zeros_like(index)))


@pytest.mark.parametrize("segments", [False, True])
@pytest.mark.parametrize("length", [1, 7, 300])
def test_rank_order_matches_lexicographic_sort(length, segments):
    rng = np.random.default_rng(length)
    bias = np.round(rng.normal(size=length) * 2) / 2  # many ties
    bias[rng.random(length) < 0.1] = -0.0
    bias[rng.random(length) < 0.05] = np.inf
    bias[rng.random(length) < 0.05] = -np.inf
    bias[rng.random(length) < 0.05] = np.nan
    valid = ~np.isnan(bias) & (bias != -np.inf) & (rng.random(length) < 0.9)
    segment = np.sort(rng.integers(0, 3, length)).astype(np.int32) if segments else None
    got = jax.jit(rank_order)(jnp.asarray(bias, jnp.float32), None if segment is None else jnp.asarray(segment),
                              jnp.asarray(valid))
    expected = _expected_order(bias, segment, valid)
    np.testing.assert_array_equal(np.asarray(got.order), expected)
    np.testing.assert_array_equal(np.asarray(got.rank)[expected], np.arange(length))
