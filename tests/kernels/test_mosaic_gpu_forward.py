"""The Mosaic GPU forward kernel (pallas_kernels.mosaic_gpu) against the dense reference.

GPU tests need an sm_90 GPU (they are skipped elsewhere); the argument checks run on the CPU.
``python -m benchmarks.forward_backends`` times it beside the other backends.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from dma_jax.ops.pallas_gpu import _sequence_to_tiles as _to_tiles
from pallas_kernels.gpu.reference import interval_attention_reference
from pallas_kernels.mosaic_gpu import dma_forward_mosaic
from problems import causal_key_lists

BLOCK_K = 64


def _problem(seed, kv_len, q_len, bias_heads, kv_heads, per_bias, block_q, window, head_dim=128, dtype=jnp.bfloat16):
    """Inputs in the sequence layout (q: (B, T, H, D)), like test_gpu_kernels._problem."""
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.normal(size=(1, q_len, bias_heads * per_bias, head_dim)), dtype)
    k = jnp.asarray(rng.normal(size=(1, kv_heads, kv_len, head_dim)), dtype)
    v = jnp.asarray(rng.normal(size=(1, kv_heads, kv_len, head_dim)), dtype)
    bias = jnp.asarray(rng.integers(-2, 3, (1, bias_heads, kv_len)), jnp.float32)
    start, end, table = causal_key_lists(bias, q_len, block_q, window, multiple=BLOCK_K)
    return q, k, v, bias, start, end, table, kv_len - q_len


def _check(q, k, v, bias, start, end, table, q_offset, *, block_q, scale=0.3, own_keys=True, num_stages=2):
    bias_heads = bias.shape[1]
    out, lse = dma_forward_mosaic(
        q, k, v, bias, start, end, table, scale=scale, block_q=block_q, block_k=BLOCK_K, q_offset=q_offset,
        bias_heads=bias_heads, own_keys=own_keys, num_stages=num_stages,
    )
    assert out.shape == q.shape and out.dtype == q.dtype
    q_tiles = _to_tiles(q.astype(jnp.float32), bias_heads, block_q)
    ref_out, ref_lse = interval_attention_reference(
        q_tiles, k.astype(jnp.float32), v.astype(jnp.float32), bias, start, end, scale=scale, block_q=block_q,
        q_offset=q_offset,
    )
    assert lse.shape == ref_lse.shape
    got = _to_tiles(out.astype(jnp.float32), bias_heads, block_q)
    np.testing.assert_allclose(np.asarray(lse), np.asarray(ref_lse), atol=1e-2, rtol=1e-3)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref_out), atol=2e-2, rtol=1e-2)
    return out, lse


CASES = [
    pytest.param(dict(kv_len=320, q_len=256, bias_heads=2, kv_heads=1, per_bias=4, block_q=16, window=64), id="rows64-gqa-tq<tk"),
    pytest.param(dict(kv_len=384, q_len=384, bias_heads=2, kv_heads=2, per_bias=4, block_q=32, window=100), id="rows128"),
    pytest.param(dict(kv_len=256, q_len=256, bias_heads=1, kv_heads=1, per_bias=4, block_q=16, window=64, head_dim=64), id="d64"),
    pytest.param(dict(kv_len=256, q_len=256, bias_heads=2, kv_heads=1, per_bias=4, block_q=16, window=64, dtype=jnp.float16), id="fp16"),
]


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES)
def test_mosaic_forward_matches_reference(case):
    q, k, v, bias, start, end, table, q_offset = _problem(0, **case)
    _check(q, k, v, bias, start, end, table, q_offset, block_q=case["block_q"])


@pytest.mark.gpu
def test_mosaic_forward_three_stages():
    case = dict(kv_len=448, q_len=384, bias_heads=2, kv_heads=1, per_bias=4, block_q=16, window=150)
    q, k, v, bias, start, end, table, q_offset = _problem(1, **case)
    _check(q, k, v, bias, start, end, table, q_offset, block_q=16, num_stages=3)


@pytest.mark.gpu
def test_mosaic_forward_full_table_without_own_keys():
    """own_keys=False with a table listing every key (and some -1 / out-of-range entries)."""
    q, k, v, bias, start, end, _, q_offset = _problem(
        2, kv_len=192, q_len=128, bias_heads=2, kv_heads=2, per_bias=4, block_q=16, window=40
    )
    tiles = 128 // 16
    keys = np.arange(256, dtype=np.int32)
    keys = np.where(keys < 192, keys, np.where(keys % 2 == 0, -1, 1000))  # absent: -1 and >= Tk
    table = jnp.asarray(np.broadcast_to(keys, (1, 2, tiles, 256)).copy())
    _check(q, k, v, bias, start, end, table, q_offset, block_q=16, own_keys=False)


@pytest.mark.gpu
def test_mosaic_forward_rows_without_keys():
    """Rows that keep no key: out 0, lse +inf (head 0's keys all have empty live ranges)."""
    q, k, v, bias, start, end, table, q_offset = _problem(
        3, kv_len=256, q_len=256, bias_heads=2, kv_heads=1, per_bias=4, block_q=16, window=64
    )
    end = end.at[:, 0].set(start[:, 0])
    out, lse = _check(q, k, v, bias, start, end, table, q_offset, block_q=16)
    assert np.all(np.isinf(np.asarray(lse[:, 0])))
    assert np.all(np.asarray(out[:, :, :4].astype(jnp.float32)) == 0)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(block_k=32), "block_k"),
        (dict(dtype=jnp.float32), "bfloat16"),
        (dict(block_q=8), "rows"),
        (dict(bias_heads=None), "sequence layout"),
    ],
)
def test_mosaic_forward_rejects_unsupported_arguments(change, message):
    """Unsupported arguments raise a ValueError before anything GPU-specific is imported."""
    dtype = change.get("dtype", jnp.bfloat16)
    q = jnp.zeros((1, 64, 8, 128), dtype)
    k = v = jnp.zeros((1, 2, 64, 128), dtype)
    bias = jnp.zeros((1, 2, 64), jnp.float32)
    start = end = jnp.zeros((1, 2, 64), jnp.int32)
    table = jnp.full((1, 2, 4, 64), -1, jnp.int32)
    kwargs = dict(scale=1.0, block_q=16, block_k=64, q_offset=0, bias_heads=2)
    kwargs.update({key: value for key, value in change.items() if key != "dtype"})
    with pytest.raises(ValueError, match=message):
        dma_forward_mosaic(q, k, v, bias, start, end, table, **kwargs)


@pytest.mark.gpu
def test_mosaic_forward_reads_k_and_v_in_their_sequence_layout():
    """``kv_sequence=True``: k and v in (B, Tk, Hkv, D), their rows Hkv * D apart, give bitwise the
    results of the (B, Hkv, Tk, D) copy (the same sums; only the gathers' addresses change)."""
    q, k, v, bias, start, end, table, q_offset = _problem(
        3, kv_len=384, q_len=384, bias_heads=2, kv_heads=2, per_bias=4, block_q=32, window=100)
    kwargs = dict(scale=0.3, block_q=32, block_k=BLOCK_K, q_offset=q_offset, bias_heads=2)
    want = dma_forward_mosaic(q, k, v, bias, start, end, table, **kwargs)
    got = dma_forward_mosaic(q, k.swapaxes(1, 2), v.swapaxes(1, 2), bias, start, end, table, kv_sequence=True,
                             **kwargs)
    for name, g, w in zip(("out", "lse"), got, want):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w), err_msg=name)
