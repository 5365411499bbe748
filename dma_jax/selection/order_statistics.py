"""Range order statistics: the k-th smallest value of ``values[lo:hi]`` for many ranges at once.

A wavelet matrix answers each query in ``ceil(log2(n))`` rounds of gathers after an
``O(n log n)`` build, with static shapes and no Python loop over elements, so it runs
under ``jit`` and ``vmap`` on any backend. ``live_ranges`` uses it to find, for every key,
the index at which the w-th key that beats it arrives.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _bit_count(n: int) -> int:
    """Number of bits needed to write every value in [0, n)."""
    return max(1, (n - 1).bit_length())


def build_wavelet_matrix(values: jax.Array, value_bound: int) -> jax.Array:
    """Prefix counts of zero bits, one row per bit level (most significant first).

    Built level after level: a cumulative sum and a scatter each.

    Args:
      values: int32 (n,), each in [0, value_bound).
      value_bound: static exclusive upper bound of the values.

    Returns:
      int32 (levels, n + 1): row ``l`` holds, for each prefix length ``i``, how many of the
      first ``i`` elements at level ``l`` have a zero at that level's bit. Level ``l + 1``
      is level ``l`` stably partitioned by that bit (zeros first).
    """
    n = values.shape[0]
    positions = jnp.arange(n, dtype=jnp.int32)
    rows = []
    current = values.astype(jnp.int32)
    for bit in reversed(range(_bit_count(value_bound))):
        ones = (current >> bit) & 1
        zero_prefix = jnp.pad(jnp.cumsum(1 - ones, dtype=jnp.int32), (1, 0))
        rows.append(zero_prefix)
        total_zeros = zero_prefix[-1]
        destination = jnp.where(
            ones == 0, zero_prefix[:-1], total_zeros + positions - zero_prefix[:-1]
        )
        current = jnp.zeros_like(current).at[destination].set(current, unique_indices=True)
    return jnp.stack(rows)


def range_kth_smallest(
    matrix: jax.Array, lo: jax.Array, hi: jax.Array, k: jax.Array
) -> jax.Array:
    """k-th smallest (0-based) of ``values[lo:hi]`` for every query, from the wavelet matrix.

    Args:
      matrix: output of ``build_wavelet_matrix`` (levels, n + 1).
      lo, hi, k: int32 arrays of one shape; each query needs ``0 <= k < hi - lo``.

    Returns:
      int32 array of the queries' shape. Queries with ``k >= hi - lo`` return garbage:
      mask them out.
    """
    levels = matrix.shape[0]
    lo, hi, k = (x.astype(jnp.int32) for x in (lo, hi, k))
    result = jnp.zeros_like(k)
    for level in range(levels):
        bit = levels - 1 - level
        zero_prefix = matrix[level]
        total_zeros = zero_prefix[-1]
        zeros_lo, zeros_hi = zero_prefix[lo], zero_prefix[hi]
        zeros_in_range = zeros_hi - zeros_lo
        go_left = k < zeros_in_range
        lo = jnp.where(go_left, zeros_lo, total_zeros + lo - zeros_lo)
        hi = jnp.where(go_left, zeros_hi, total_zeros + hi - zeros_hi)
        k = jnp.where(go_left, k, k - zeros_in_range)
        result = result | jnp.where(go_left, 0, 1 << bit)
    return result
