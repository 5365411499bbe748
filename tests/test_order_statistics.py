import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dma_jax.order_statistics import build_wavelet_matrix, range_kth_smallest


@pytest.mark.parametrize(
    "n, kind",
    [(1, "perm"), (2, "perm"), (5, "repeats"), (64, "perm"), (100, "repeats"), (1000, "perm")],
    ids=lambda p: str(p),
)
@pytest.mark.parametrize("method", ["levels", "sort"])
def test_range_kth_smallest_matches_sort(n, kind, method):
    rng = np.random.default_rng(n)
    values = rng.permutation(n) if kind == "perm" else rng.integers(0, n, n)
    lo, hi = np.sort(rng.integers(0, n + 1, (2, 500)), axis=0)
    hi = np.where(hi == lo, lo + 1, hi)
    lo = np.minimum(lo, n - 1)
    hi = np.minimum(hi, n)
    k = (rng.random(500) * (hi - lo)).astype(np.int32)
    expected = [np.sort(values[a:b])[c] for a, b, c in zip(lo, hi, k)]
    matrix = jax.jit(build_wavelet_matrix, static_argnums=(1, 2))(jnp.asarray(values, jnp.int32), n, method)
    got = jax.jit(range_kth_smallest)(matrix, jnp.asarray(lo), jnp.asarray(hi), jnp.asarray(k))
    np.testing.assert_array_equal(np.asarray(got), expected)


def test_wavelet_matrix_shape_is_log_n():
    matrix = build_wavelet_matrix(jnp.arange(1000, dtype=jnp.int32), 1000)
    assert matrix.shape == (10, 1001)


@pytest.mark.parametrize("n, bound", [(3, 3), (17, 40), (333, 333), (4097, 4097), (70_000, 70_000)])
def test_one_sort_build_equals_level_by_level(n, bound):
    # 70_000 needs more than 31 bits for (prefix, position): the two-key sort.
    values = jnp.asarray(np.random.default_rng(n).integers(0, bound, n), jnp.int32)
    by_levels = build_wavelet_matrix(values, bound, "levels")
    by_sort = build_wavelet_matrix(values, bound, "sort")
    np.testing.assert_array_equal(np.asarray(by_sort), np.asarray(by_levels))


def test_unknown_build_method_is_refused():
    with pytest.raises(ValueError, match="method"):
        build_wavelet_matrix(jnp.arange(4, dtype=jnp.int32), 4, "bitonic")
