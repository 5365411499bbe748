"""Tile key lists hold every key their queries keep, within the w + BM bound."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dma_jax import live_ranges, selection_mask
from dma_jax.selection.slots import ever_carried
from dma_jax.selection.tables import carried_keys, num_tiles, tile_key_lists

tile_lists = jax.jit(tile_key_lists, static_argnums=(1, 2, 3))
table = jax.jit(carried_keys, static_argnums=(1, 2, 3))


@pytest.mark.parametrize(
    "kv_len, q_len, block_q, window, segments",
    [
        (63, 63, 8, 5, False),
        (63, 63, 16, 1, False),
        (111, 111, 16, 20, True),
        (100, 37, 8, 9, False),  # decoding-style: queries are the last 37 positions
        (64, 1, 4, 6, False),
        (50, 50, 1, 3, True),
        (40, 40, 64, 7, False),  # one tile longer than the sequence
    ],
    ids=lambda p: str(p),
)
def test_lists_cover_every_kept_key(kv_len, q_len, block_q, window, segments):
    rng = np.random.default_rng(kv_len * 1000 + q_len)
    bias = rng.integers(-3, 3, (2, 3, kv_len)).astype(np.float32)
    seg = np.sort(rng.integers(0, 4, (2, kv_len)), axis=1).astype(np.int32) if segments else None
    if seg is not None:
        assert q_len == kv_len
    ends = live_ranges(jnp.asarray(bias), window, segment_ids=seg)
    lists = np.asarray(tile_lists(ends, q_len, block_q, window, segment_ids=seg))
    tiles = num_tiles(q_len, block_q)
    assert lists.shape == (2, 3, tiles, window + block_q)
    kept = np.asarray(selection_mask(jnp.asarray(bias), window, q_len, segment_ids=seg))
    for b in range(2):
        for h in range(3):
            for n in range(tiles):
                row = lists[b, h, n]
                carried = row[:window][row[:window] >= 0]
                assert len(set(carried.tolist())) == len(carried), "no key in two slots"
                first_query = kv_len - q_len + n * block_q
                assert (carried < first_query).all()
                listed = set(row[row >= 0].tolist())
                needed = set(np.nonzero(kept[b, h, n * block_q : (n + 1) * block_q].any(axis=0))[0].tolist())
                assert needed <= listed, f"tile {n} misses keys {sorted(needed - listed)}"
                own = row[window:]
                expected_own = np.arange(first_query, first_query + block_q)
                np.testing.assert_array_equal(own, np.where(expected_own < kv_len, expected_own, -1))


@pytest.mark.parametrize(
    "length, q_len, window, block_q, case",
    [
        (300, 300, 16, 32, "normal"),
        (300, 300, 16, 1, "ties"),
        (257, 100, 7, 8, "ties"),
        (200, 200, 9, 16, "segments"),
        (200, 200, 5, 4, "masked"),
        (257, 257, 2, 8, "increasing"),  # each key evicts the oldest: two chains of 128 keys
        (240, 240, 12, 16, "local"),  # the local-window variant: 4 latest keys and 2 sinks kept
    ],
    ids=lambda p: str(p),
)
def test_carried_keys_are_exactly_the_live_set(length, q_len, window, block_q, case):
    rng = np.random.default_rng(length + window)
    if case == "normal":
        bias = rng.normal(size=(2, 2, length))
    elif case == "increasing":
        bias = np.broadcast_to(np.arange(length, dtype=np.float64), (2, 2, length))
    else:
        bias = rng.integers(-2, 3, (2, 2, length)).astype(np.float64)
    seg = np.sort(rng.integers(0, 5, (2, length)), axis=1).astype(np.int32) if case in ("segments", "local") else None
    mask = rng.random((2, length)) < 0.7 if case == "masked" else None
    if case == "masked":
        bias[rng.random(bias.shape) < 0.1] = -np.inf
    bias = jnp.asarray(bias, jnp.float32)
    variant = dict(local_window=4, sink_keys=2) if case == "local" else {}
    ends_jax = live_ranges(bias, window, segment_ids=seg, key_mask=mask, **variant)
    slots = np.asarray(table(ends_jax, q_len, block_q, window, segment_ids=seg, key_mask=mask, bias=bias))
    ends = np.asarray(ends_jax)
    for b in range(2):
        for h in range(2):
            slot_of = {}
            for n in range(num_tiles(q_len, block_q)):
                start = length - q_len + n * block_q
                live = [j for j in range(start) if ends[b, h, j] > start]
                row = slots[b, h, n]
                assert sorted(row[row >= 0].tolist()) == live
                for s, key in enumerate(row):
                    if key >= 0:
                        assert slot_of.setdefault(int(key), s) == s, "a key keeps its slot"
    # ever_carried: the keys some tile lists, from the live ranges alone (what the Mosaic GPU
    # key-major pass wrote rows for), without a scatter over the tables
    listed = np.zeros(ends.shape, bool)
    for b, h, key in zip(*np.nonzero(slots >= 0)[:2], slots[slots >= 0]):
        listed[b, h, key] = True
    np.testing.assert_array_equal(np.asarray(ever_carried(ends_jax, q_len, block_q)), listed)


@pytest.mark.parametrize("length", [2**15, 2**15 + 100], ids=["int16_table", "int32_table"])
def test_carried_keys_at_the_int16_bound(length):
    """The table is built in int16 while every key index fits (length <= 2**15), else int32: both
    list exactly the live set, keys up to the last index included."""
    window, block_q = 3, 32
    bias = jnp.asarray(np.random.default_rng(length).normal(size=(1, 1, length)), jnp.float32)
    bias = bias.at[..., -2 * block_q - 1].set(100.0)  # a key near the end stays live to the last tile
    ends = np.asarray(live_ranges(bias, window))
    slots = np.asarray(table(jnp.asarray(ends), length, block_q, window))
    assert slots.dtype == np.int32
    for n in range(num_tiles(length, block_q)):
        start = n * block_q
        live = np.nonzero(ends[0, 0, :start] > start)[0]
        row = slots[0, 0, n]
        np.testing.assert_array_equal(np.sort(row[row >= 0]), live)
    assert length - 2 * block_q - 1 in slots[0, 0, -1]
