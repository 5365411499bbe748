"""pallas_kernels/live_range_scan.py in interpret mode: the k-th beater of every rank position,
against the dense sort of ``kth_beater_reference``, outputs poisoned before the kernel writes."""

import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.common import KernelOptions
from pallas_kernels.live_range_scan import NOT_RANKED, kth_beater
from pallas_kernels.reference import kth_beater_reference

INTERPRET = KernelOptions(interpret=True, poison_outputs=True)


def _segmented_ranks(rng, rows, length, cuts):
    """Ranks of keys in contiguous segments: each segment's keys take a consecutive rank range."""
    bounds = [0, *cuts, length]
    rank = np.zeros((rows, length), np.int32)
    lo_by_key = np.zeros((rows, length), np.int32)
    for r in range(rows):
        for a, b in zip(bounds[:-1], bounds[1:]):
            rank[r, a:b] = a + rng.permutation(b - a)
            lo_by_key[r, a:b] = a
    return rank, lo_by_key, bounds


@pytest.mark.parametrize("length,block_keys,block_index,cuts,lazy", [
    (63, 16, 16, [], True), (111, 16, 32, [40], False), (200, 32, 64, [17, 90, 91], True)])
def test_kth_beater_matches_the_dense_sort(length, block_keys, block_index, cuts, lazy):
    rng = np.random.default_rng(length)
    rows = 2
    rank, lo_by_key, bounds = _segmented_ranks(rng, rows, length, cuts)
    positions = -(-length // block_keys) * block_keys
    index_len = -(-length // block_index) * block_index
    order = np.argsort(rank, axis=1)  # key at each rank position
    lo = np.zeros((rows, positions), np.int32)
    lo[:, :length] = np.take_along_axis(lo_by_key, order, 1)
    beaten = np.arange(positions)[None] - lo
    kth = np.where(np.arange(positions)[None] < length, rng.integers(0, np.maximum(beaten, 0) + 2), 0).astype(np.int32)
    forward = np.repeat(rng.integers(0, 2, (rows, positions // block_keys)), block_keys, 1).astype(np.int32)
    segment_of = np.searchsorted(np.asarray(bounds[1:]), order, side="right")  # segment of each rank position's key
    first = np.zeros((rows, positions), np.int32)
    stop = np.zeros((rows, positions), np.int32)
    first[:, :length] = np.asarray(bounds)[segment_of]
    stop[:, :length] = np.asarray(bounds[1:])[segment_of]
    rank_padded = np.full((rows, index_len), NOT_RANKED, np.int32)
    rank_padded[:, :length] = rank

    got = kth_beater(*map(jnp.asarray, (rank_padded, lo, kth, forward, first, stop)), block_keys=block_keys,
                     block_index=block_index, lazy=lazy, options=INTERPRET)
    want = kth_beater_reference(*map(jnp.asarray, (rank_padded, lo, kth, forward)))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert (np.asarray(want) >= 0).sum() > length  # most positions asked for a beater that exists
    assert ((np.asarray(want) < 0) & (kth > 0)).any()  # and some asked for one past the last
