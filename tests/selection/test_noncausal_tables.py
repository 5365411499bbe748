"""dma_jax.selection.noncausal: the key tables of non-causal attention list, per query tile, exactly
the keys some query of the tile keeps, once each, and every key in one column across its tiles
(what the key-major backward needs)."""

import jax.numpy as jnp
import numpy as np
import pytest

from dma_jax import selection_mask
from dma_jax.selection.noncausal import noncausal_table, table_width
from dma_jax.selection.tables import key_intervals


def _segments(rng, length, pieces):
    cuts = np.sort(rng.choice(np.arange(1, length), size=pieces - 1, replace=False))
    return 5 + np.searchsorted(cuts, np.arange(length), side="right")


@pytest.mark.parametrize("length,window,tile_q,pieces,masked", [
    pytest.param(111, 5, 16, 4, False, marks=pytest.mark.slow),  # slow: 16-23 s each
    pytest.param(111, 7, 8, 30, True, marks=pytest.mark.slow),
    pytest.param(64, None, 16, 5, False, marks=pytest.mark.slow), (50, 3, 16, 1, True),
    pytest.param(97, 40, 16, 12, False, marks=pytest.mark.slow)])
def test_table_lists_each_kept_key_once_in_one_column(length, window, tile_q, pieces, masked):
    rng = np.random.default_rng(length + pieces)
    batch, heads = 2, 3
    bias = jnp.asarray(rng.standard_normal((batch, heads, length)), jnp.float32)
    segment_ids = jnp.asarray(np.stack([_segments(rng, length, pieces) for _ in range(batch)]), jnp.int32)
    key_mask = jnp.asarray(rng.random((batch, length)) > 0.3) if masked else None
    tiles = -(-length // tile_q) + 1  # one tile past the queries lists nothing
    table = np.asarray(noncausal_table(bias, window, tiles, tile_q, segment_ids, key_mask))
    wide = length if window is None else min(window, length)
    assert table.shape == (batch, heads, tiles, 2 * wide + tile_q)
    assert table.shape[-1] == table_width(window, length, tile_q, segments=True)
    keeps = np.asarray(selection_mask(bias, window, length, causal=False, segment_ids=segment_ids, key_mask=key_mask))
    start, end = (np.asarray(x) for x in key_intervals(bias, window, length, causal=False, segment_ids=segment_ids,
                                                            key_mask=key_mask))
    for b in range(batch):
        for h in range(heads):
            columns = {}
            for n in range(tiles):
                queries = range(n * tile_q, min((n + 1) * tile_q, length))
                want = {j for t in queries for j in np.flatnonzero(keeps[b, h, t])}
                row = table[b, h, n]
                listed = row[row >= 0]
                assert len(listed) == len(set(listed)), (b, h, n)  # once each
                assert set(listed) == want, (b, h, n)
                for column in np.flatnonzero(row >= 0):
                    j = row[column]
                    assert columns.setdefault(j, column) == column, f"key {j} moved columns"
                    assert start[b, h, j] < queries.stop and end[b, h, j] > queries.start  # live in the tile
            tiles_of = {}
            for n in range(tiles):
                for j in table[b, h, n][table[b, h, n] >= 0]:
                    tiles_of.setdefault(j, []).append(n)
            for j, seen in tiles_of.items():  # one unbroken run of tiles
                assert seen == list(range(seen[0], seen[-1] + 1)), j


def test_intervals_of_kept_keys_are_their_segments():
    bias = jnp.asarray([[[0.0, 1.0, 2.0, -1.0, 3.0, 0.5]]])
    segment_ids = jnp.asarray([[1, 1, 1, 2, 2, 2]])
    start, end = key_intervals(bias, 2, 6, causal=False, segment_ids=segment_ids, key_mask=None)
    np.testing.assert_array_equal(start, [[[0, 0, 0, 0, 3, 3]]])  # keys 1, 2 of the first; 4, 5 of the second
    np.testing.assert_array_equal(end, [[[0, 3, 3, 0, 6, 6]]])
