"""dma_jax/selection_scan.py: live ranges through the selection kernel (interpret mode) equal the
wavelet matrix's exactly: ties, -inf and NaN bias, key masks, contiguous and scattered segments,
every window from 1 to past T."""

import jax.numpy as jnp
import numpy as np
import pytest

from dma_jax.selection import live_ranges_unchecked
from dma_jax.selection_scan import live_ranges_scan
from pallas_kernels.common import KernelOptions

INTERPRET = KernelOptions(interpret=True, poison_outputs=True)


def _bias(rng, shape, ties, holes):
    bias = rng.normal(size=shape).astype(np.float32)
    if ties:
        bias = np.round(bias * 2) / 2
    if holes:
        bias[rng.random(shape) < 0.1] = -np.inf
        bias[rng.random(shape) < 0.05] = np.nan
    return bias


@pytest.mark.parametrize("length,ties,holes,segments,masked", [
    (63, True, False, None, False),
    (111, False, True, "runs", False),
    (200, True, True, "scattered", True),
    (257, False, False, "runs", True),
])
def test_kernel_live_ranges_equal_the_wavelet_matrix(length, ties, holes, segments, masked):
    rng = np.random.default_rng(length)
    bias = jnp.asarray(_bias(rng, (2, 3, length), ties, holes))
    segment_ids = None
    if segments == "runs":
        segment_ids = jnp.asarray(np.cumsum(rng.random((2, length)) < 0.03, axis=1), jnp.int32)
    elif segments == "scattered":
        segment_ids = jnp.asarray(rng.integers(0, 3, (2, length)), jnp.int32)
    key_mask = jnp.asarray(rng.random((2, length)) > 0.1) if masked else None
    for window in (1, 5, 40, length - 1, length, None):
        want = live_ranges_unchecked(bias, window, segment_ids, key_mask)
        for lazy in (True, False):
            got = live_ranges_scan(bias, window, segment_ids, key_mask, options=INTERPRET, block_keys=16,
                                   block_index=32, lazy=lazy)
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=f"window {window} lazy {lazy}")


def test_both_walk_directions_are_used():
    """Blocks of keys beaten by fewer than 2w keys walk from the end, the others from the start:
    this row has both kinds, and the answers are exact either way."""
    rng = np.random.default_rng(0)
    bias = jnp.asarray(rng.normal(size=(1, 1, 300)), jnp.float32)
    beaten = np.sort(np.arange(300))  # a key of rank r is beaten by r keys
    assert ((beaten >= 30) & (beaten < 59)).sum() >= 16 and (beaten >= 59).sum() >= 64
    want = live_ranges_unchecked(bias, 30)
    for block_keys in (16, 64):
        got = live_ranges_scan(bias, 30, options=INTERPRET, block_keys=block_keys, block_index=32)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_pallas_attention_with_the_selection_kernel_matches_the_wavelet_selection():
    """``PallasConfig(selection="kernel")`` changes how live ranges are found, not the result:
    output and all four gradients equal those of the default (wavelet) selection."""
    import jax

    from dma_jax.pallas_attention import PallasConfig, dma_attention_pallas

    rng = np.random.default_rng(3)
    q = jnp.asarray(rng.normal(size=(1, 70, 4, 16)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(1, 70, 2, 16)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(1, 70, 2, 16)), jnp.float32)
    bias = jnp.asarray(rng.normal(size=(1, 2, 70)), jnp.float32)
    segment_ids = jnp.asarray((np.arange(70) >= 30)[None], jnp.int32)

    def out_and_grads(selection):
        config = PallasConfig(selection=selection).interpreted(poison_outputs=True)
        fn = lambda *a: jnp.sum(dma_attention_pallas(*a, 12, causal=True, scale=None, segment_ids=segment_ids,
                                                     key_mask=None, config=config) ** 2)
        return jax.value_and_grad(fn, argnums=(0, 1, 2, 3))(q, k, v, bias)

    (want, want_grads), (got, got_grads) = out_and_grads("wavelet"), out_and_grads("kernel")
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
