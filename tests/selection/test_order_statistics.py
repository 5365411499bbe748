"""selection.order_statistics: the wavelet matrix answers range k-th smallest queries exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dma_jax.selection.order_statistics import (
    DIGIT_BITS,
    _kth_set_bit,
    _pack_bits,
    block_kth_smallest,
    build_block_counts,
    build_wavelet_matrix,
    count_block,
    level_count,
    range_kth_smallest,
)


def _queries(n, rng):
    lo, hi = np.sort(rng.integers(0, n + 1, (2, 500)), axis=0)
    hi = np.where(hi == lo, lo + 1, hi)
    lo = np.minimum(lo, n - 1)
    hi = np.minimum(hi, n)
    return lo, hi, (rng.random(500) * (hi - lo)).astype(np.int32)


@pytest.mark.parametrize("digit_bits", [1, 3, DIGIT_BITS])
@pytest.mark.parametrize(
    "n, kind",
    [(1, "perm"), (2, "perm"), (5, "repeats"), (64, "perm"), (100, "repeats"), (1000, "perm")],
    ids=lambda p: str(p),
)
def test_range_kth_smallest_matches_sort(n, kind, digit_bits):
    rng = np.random.default_rng(n)
    values = rng.permutation(n) if kind == "perm" else rng.integers(0, n, n)
    lo, hi, k = _queries(n, rng)
    expected = [np.sort(values[a:b])[c] for a, b, c in zip(lo, hi, k)]
    matrix = jax.jit(build_wavelet_matrix, static_argnums=(1, 2))(jnp.asarray(values, jnp.int32), n, digit_bits)
    got = jax.jit(range_kth_smallest)(matrix, jnp.asarray(lo), jnp.asarray(hi), jnp.asarray(k))
    np.testing.assert_array_equal(np.asarray(got), expected)


@pytest.mark.parametrize("n", [1, 2, 3, 17, 64, 65, 1000, 4096])
@pytest.mark.parametrize("given_inverse", [False, True], ids=["scattered", "given"])
def test_block_counts_match_sort(n, given_inverse):
    """Block counts answer the same queries as sorting each range, for permutations whose length is
    and is not a multiple of the block, with the inverse built or passed in."""
    rng = np.random.default_rng(n)
    values = rng.permutation(n)
    lo, hi, k = _queries(n, rng)
    expected = [np.sort(values[a:b])[c] for a, b, c in zip(lo, hi, k)]
    inverse = jnp.asarray(np.argsort(values), jnp.int32) if given_inverse else None
    counts, inverse = jax.jit(build_block_counts)(jnp.asarray(values, jnp.int32), inverse)
    assert counts.shape == (n + 1, -(-n // count_block(n)))
    np.testing.assert_array_equal(np.asarray(inverse), np.argsort(values))
    got = jax.jit(block_kth_smallest)(counts, inverse, jnp.asarray(lo), jnp.asarray(hi), jnp.asarray(k))
    np.testing.assert_array_equal(np.asarray(got), expected)


@pytest.mark.parametrize("n, block", [(1, 2), (4, 2), (5, 4), (4096, 64), (4097, 128), (32768, 256)])
def test_count_block_is_a_power_of_two_near_sqrt_n(n, block):
    assert count_block(n) == block


@pytest.mark.parametrize("digit_bits, levels", [(1, 10), (2, 5), (4, 3), (10, 1)])
def test_levels_are_bits_over_digit_bits(digit_bits, levels):
    matrix = build_wavelet_matrix(jnp.arange(1000, dtype=jnp.int32), 1000, digit_bits)
    assert matrix.shape == (levels, 1001, 2**digit_bits) and level_count(1000, digit_bits) == levels


def test_zero_digit_bits_is_refused():
    with pytest.raises(ValueError, match="digit_bits"):
        build_wavelet_matrix(jnp.arange(8, dtype=jnp.int32), 8, 0)


def test_tables_and_query_levels_are_written_out_one_level_at_a_time():
    """Each level's prefix table and each query level's state pass an optimisation barrier: on a
    GPU, XLA otherwise fused the tables' cumulative sums and every earlier level into each gather
    (compiled for an H100 at B = 32, T = 2048, Hb = 8: one loop fusion with 12 gathers and 2
    reduce-windows per query digit)."""
    values = jnp.asarray(np.random.default_rng(0).permutation(300), jnp.int32)

    def query(v):
        matrix = build_wavelet_matrix(v, 300, digit_bits=4)
        return range_kth_smallest(matrix, jnp.zeros_like(v), jnp.full_like(v, 300), v)

    jaxpr = jax.make_jaxpr(query)(values)
    barriers = [e for e in jaxpr.eqns if e.primitive.name == "optimization_barrier"]
    assert len(barriers) == 2 * level_count(300, 4)  # 3 table levels, 3 query levels
    np.testing.assert_array_equal(query(values), values)  # the v-th smallest of 0..299 is v


@pytest.mark.parametrize("n, dtype", [(4096, jnp.uint16), (2**16 - 1, jnp.uint16), (2**16, jnp.int32)])
def test_block_counts_are_uint16_below_2_to_16_values(n, dtype):
    counts, _ = jax.eval_shape(build_block_counts, jax.ShapeDtypeStruct((n,), jnp.int32))
    assert counts.dtype == dtype


def test_block_counts_at_the_uint16_limit():
    """The largest uint16 table: counts up to 2**16 - 1, exact."""
    n = 2**16 - 1
    rng = np.random.default_rng(0)
    values = rng.permutation(n)
    lo, hi, k = np.array([0, 0, 5, 1000, 7]), np.array([n, 1, n, 60000, n]), np.array([n - 1, 0, n // 2, 123, 0])
    expected = [np.sort(values[a:b])[c] for a, b, c in zip(lo, hi, k)]
    values, lo, hi, k = (jnp.asarray(x, jnp.int32) for x in (values, lo, hi, k))
    counts, inverse = jax.jit(build_block_counts)(values)
    assert int(counts[-1, -1]) == n
    got = jax.jit(block_kth_smallest)(counts, inverse, lo, hi, k)
    np.testing.assert_array_equal(np.asarray(got), expected)


@pytest.mark.parametrize("width", [1, 5, 32, 64, 100])
def test_kth_set_bit_of_packed_bits(width):
    """The block's last step: bits packed into 32-bit words, and the index of the k-th set bit,
    for every k, against numpy."""
    rng = np.random.default_rng(width)
    bits = rng.random((200, width)) < rng.random((200, 1))
    bits[0], bits[1] = True, False
    bits[1, -1] = True  # only the last bit set
    rows, k = [], []
    for row, b in enumerate(bits):
        for j in range(b.sum()):
            rows.append(row)
            k.append(j)
    words = _pack_bits(jnp.asarray(bits))
    assert words.shape == (200, -(-width // 32)) and words.dtype == jnp.uint32
    got = jax.jit(_kth_set_bit)(words[np.array(rows)], jnp.asarray(k, jnp.int32))
    expected = [np.flatnonzero(bits[r])[j] for r, j in zip(rows, k)]
    np.testing.assert_array_equal(np.asarray(got), expected)
