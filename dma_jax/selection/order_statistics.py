"""Range order statistics: the k-th smallest value of ``values[lo:hi]`` for many ranges at once.

Two structures answer the same queries:

- the wavelet matrix (below): O(n log n) memory, ``levels`` rounds of gathers per query;
- block counts (``build_block_counts``, ``block_kth_smallest``), for a permutation of [0, n):
  with the values cut into blocks of about sqrt(n), a table of how many of the first i values fall
  below each block's end. A query finds its value's block from two rows of the table, then counts
  through that block's values. O(n sqrt(n)) memory and work, but one build and one query step, so
  far fewer GPU launches at short lengths, where the wavelet matrix's rounds are launch-bound.

A wavelet matrix answers each query in ``ceil(bits / digit_bits)`` rounds of gathers after a
build of as many levels, with static shapes and no Python loop over elements, so it runs under
``jit`` and ``vmap`` on any backend. ``live_ranges`` uses it to find, for every key, the index at
which the w-th key that beats it arrives.

Each level reads one digit of ``digit_bits`` bits (most significant first) and stores, for every
prefix of that level's sequence, how many elements carry each of the ``2 ** digit_bits`` digits;
the next level is the sequence stably sorted by that digit. ``digit_bits = 1`` is the classic
binary wavelet matrix (one level per bit); ``DIGIT_BITS = 4`` cuts the levels, and with them the
small kernels a GPU launches one after another, by four, for 2 ** 4 / 4 = 4x the memory
(``levels * (n + 1) * 2 ** digit_bits`` int32 per row).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

DIGIT_BITS = 4


def _bit_count(n: int) -> int:
    """Number of bits needed to write every value in [0, n)."""
    return max(1, (n - 1).bit_length())


def level_count(value_bound: int, digit_bits: int) -> int:
    """Levels of a matrix over values in [0, value_bound): ceil(bits / digit_bits)."""
    return -(-_bit_count(value_bound) // digit_bits)


def _digit_offsets(prefix: jax.Array) -> jax.Array:
    """int32 (radix,): elements of the level with a smaller digit (where each digit's run starts
    in the next level)."""
    totals = prefix[-1]
    return jnp.cumsum(totals) - totals


def build_wavelet_matrix(values: jax.Array, value_bound: int, digit_bits: int | None = None) -> jax.Array:
    """Prefix counts of every digit, one table per level (most significant digit first).

    Built level after level: a cumulative sum over the digits' one-hot columns and a scatter each.

    Args:
      values: int32 (n,), each in [0, value_bound).
      value_bound: static exclusive upper bound of the values.
      digit_bits: bits per level (static, >= 1); None: ``DIGIT_BITS`` (read at trace time).

    Returns:
      int32 (levels, n + 1, 2 ** digit_bits): ``[l, i, d]`` is how many of the first ``i``
      elements of level ``l`` have digit ``d`` at that level. Level ``l + 1`` is level ``l``
      stably sorted by that digit.
    """
    digit_bits = DIGIT_BITS if digit_bits is None else digit_bits
    if digit_bits < 1:
        raise ValueError(f"digit_bits must be >= 1, got {digit_bits}")
    radix = 1 << digit_bits
    levels = level_count(value_bound, digit_bits)
    tables = []
    current = values.astype(jnp.int32)
    for level in range(levels):
        digit = (current >> ((levels - 1 - level) * digit_bits)) & (radix - 1)
        onehot = (digit[:, None] == jnp.arange(radix, dtype=jnp.int32)).astype(jnp.int32)
        prefix = jnp.pad(jnp.cumsum(onehot, axis=0, dtype=jnp.int32), ((1, 0), (0, 0)))
        # Written out once: left alone, XLA's GPU fusion recomputes the cumulative sum (a
        # reduce-window) inside every gather that reads the table, for every query.
        prefix = lax.optimization_barrier(prefix)
        tables.append(prefix)
        if level + 1 < levels:
            seen = jnp.take_along_axis(prefix[:-1], digit[:, None], axis=1)[:, 0]  # same digit before it
            destination = _digit_offsets(prefix)[digit] + seen
            current = jnp.zeros_like(current).at[destination].set(current, unique_indices=True)
    return jnp.stack(tables)


def range_kth_smallest(matrix: jax.Array, lo: jax.Array, hi: jax.Array, k: jax.Array) -> jax.Array:
    """k-th smallest (0-based) of ``values[lo:hi]`` for every query, from the wavelet matrix.

    Args:
      matrix: output of ``build_wavelet_matrix`` (levels, n + 1, radix).
      lo, hi, k: int32 arrays of one shape; each query needs ``0 <= k < hi - lo``.

    Returns:
      int32 array of the queries' shape. Queries with ``k >= hi - lo`` return garbage:
      mask them out.
    """
    levels, _, radix = matrix.shape
    digit_bits = radix.bit_length() - 1
    lo, hi, k = (x.astype(jnp.int32) for x in (lo, hi, k))
    result = jnp.zeros_like(k)
    pick = lambda table, digit: jnp.take_along_axis(table, digit[..., None], axis=-1)[..., 0]
    for level in range(levels):
        prefix = matrix[level]
        at_lo, at_hi = prefix[lo], prefix[hi]  # (..., radix) digit counts before lo and before hi
        through = jnp.cumsum(at_hi - at_lo, axis=-1)  # elements of the range with digit <= d
        digit = jnp.minimum(jnp.sum(through <= k[..., None], axis=-1), radix - 1)
        digit_lo, digit_hi = pick(at_lo, digit), pick(at_hi, digit)  # that digit before lo and before hi
        k = k - (pick(through, digit) - (digit_hi - digit_lo))
        offset = _digit_offsets(prefix)[digit]
        lo, hi = offset + digit_lo, offset + digit_hi
        result = (result << digit_bits) | digit
        # One level at a time: fused across levels, XLA's GPU loop fusion recomputes every earlier
        # level's gathers once per digit of the next level's rows.
        lo, hi, k, result = lax.optimization_barrier((lo, hi, k, result))
    return result


def count_block(n: int) -> int:
    """Values per block of ``build_block_counts``: the power of two nearest above sqrt(n)."""
    return 1 << -(-max(1, n - 1).bit_length() // 2)


def build_block_counts(values: jax.Array, inverse: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Prefix counts per value block, for ``block_kth_smallest``.

    Args:
      values: int32 (n,), a permutation of [0, n).
      inverse: optional int32 (n,), the inverse permutation (position of each value), when the
        caller has it; else built with one scatter.

    Returns:
      counts: (n + 1, blocks), ``[i, b]`` = how many of the first ``i`` values are below
      ``(b + 1) * count_block(n)``, uint16 below 2**16 values (half the bytes of the largest array
      the 4K selection writes), else int32; and the inverse permutation (int32).
    """
    n = values.shape[0]
    block = count_block(n)
    blocks = -(-n // block)
    values = values.astype(jnp.int32)
    if inverse is None:
        inverse = jnp.zeros_like(values).at[values].set(jnp.arange(n, dtype=jnp.int32), unique_indices=True)
    dtype = jnp.uint16 if n < 2**16 else jnp.int32
    below = (values[:, None] // block <= jnp.arange(blocks, dtype=jnp.int32)).astype(dtype)
    counts = jnp.pad(jnp.cumsum(below, axis=0, dtype=dtype), ((1, 0), (0, 0)))
    return lax.optimization_barrier(counts), inverse.astype(jnp.int32)


def block_kth_smallest(counts: jax.Array, inverse: jax.Array, lo: jax.Array, hi: jax.Array, k: jax.Array) -> jax.Array:
    """k-th smallest (0-based) of ``values[lo:hi]`` for every query, from ``build_block_counts``.

    Args:
      counts, inverse: output of ``build_block_counts``.
      lo, hi, k: int32 arrays of one shape; each query needs ``0 <= k < hi - lo``.

    Returns:
      int32 array of the queries' shape. Queries with ``k >= hi - lo`` return garbage: mask them
      out.
    """
    n = inverse.shape[0]
    blocks, block = counts.shape[1], count_block(n)
    lo, hi, k = (x.astype(jnp.int32) for x in (lo, hi, k))
    # (..., blocks): values of the range below each block's end
    in_range = counts[hi].astype(jnp.int32) - counts[lo].astype(jnp.int32)
    found, before = _bucket_of_kth(in_range, k)  # the answer's block; values of the range in earlier blocks
    # (..., block): the position of each value of the answer's block (n, in no range, past the end)
    by_block = jnp.pad(inverse, (0, blocks * block - n), constant_values=n).reshape(blocks, block)
    position = by_block[found]
    inside = (position >= lo[..., None]) & (position < hi[..., None])
    # The answer is the block's (k - before)-th value inside the range: the (k - before)-th set bit
    # of ``inside`` packed into 32-bit words. Packing is a reduction that the GPU compiler fuses with
    # the row gather above; a cumulative sum over ``inside``, and positions gathered one value at a
    # time and read twice, had it write the (..., block) positions out first (128 MiB at the 2K
    # layer's shape, 256 rows of 2048 keys).
    return found * block + _kth_set_bit(_pack_bits(inside), k - before)


def _bucket_of_kth(through: jax.Array, k: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The bucket holding the k-th (0-based) element and the elements in the buckets before it, from
    ``through`` (..., buckets), the elements up to each bucket's end. int32 (...) each; a k past the
    last element gives the last bucket."""
    index = jnp.minimum(jnp.sum(through <= k[..., None], axis=-1), through.shape[-1] - 1)
    before = jnp.take_along_axis(through, jnp.maximum(index - 1, 0)[..., None], axis=-1)[..., 0]
    return index, jnp.where(index > 0, before, 0)


def _pack_bits(bits: jax.Array) -> jax.Array:
    """uint32 (..., ceil(n / 32)) from bool (..., n): bit i of word w is ``bits[..., 32 w + i]``."""
    n = bits.shape[-1]
    words = -(-n // 32)
    bits = jnp.pad(bits, [(0, 0)] * (bits.ndim - 1) + [(0, words * 32 - n)]).reshape(*bits.shape[:-1], words, 32)
    return jnp.sum(bits.astype(jnp.uint32) << jnp.arange(32, dtype=jnp.uint32), axis=-1, dtype=jnp.uint32)


def _kth_set_bit(words: jax.Array, k: jax.Array) -> jax.Array:
    """int32 (...): the index of the k-th (0-based) set bit of uint32 words (..., W), bit i of word w
    counting as index 32 w + i. Needs k < the number of set bits."""
    through = jnp.cumsum(lax.population_count(words).astype(jnp.int32), axis=-1)  # set bits up to each word's end
    word_index, before = _bucket_of_kth(through, k)
    k = k - before
    word = jnp.take_along_axis(words, word_index[..., None], axis=-1)[..., 0]
    bit = jnp.zeros_like(k)  # the largest b with at most k set bits below it, by binary search
    for step in (16, 8, 4, 2, 1):
        below = lax.population_count(word & ((jnp.uint32(1) << (bit + step).astype(jnp.uint32)) - 1))
        bit = jnp.where(below.astype(jnp.int32) <= k, bit + step, bit)
    return word_index * 32 + bit
