"""dma_jax.selection.segments: the bounds of each position's segment."""

import jax.numpy as jnp
import numpy as np

from dma_jax.selection.segments import segment_bounds


def test_segment_bounds():
    first, end = segment_bounds(jnp.asarray([[4, 4, 4, 7, 9, 9], [1, 1, 1, 1, 1, 1]]))
    np.testing.assert_array_equal(first, [[0, 0, 0, 3, 4, 4], [0] * 6])
    np.testing.assert_array_equal(end, [[3, 3, 3, 4, 6, 6], [6] * 6])


def test_segment_bounds_of_one_row():
    first, end = segment_bounds(jnp.asarray([2, 5, 5, 5, 2]))
    np.testing.assert_array_equal(first, [0, 1, 1, 1, 4])
    np.testing.assert_array_equal(end, [1, 4, 4, 4, 5])
