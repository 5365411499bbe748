"""The Mosaic GPU key-major backward kernel (pallas_kernels.mosaic_gpu.backward_slots).

GPU tests need an sm_90 GPU (skipped elsewhere): against the gradients of the dense reference,
against the Triton kernel on slot tables that churn, and bitwise repeatability. On the CPU: the
argument checks, and the kernel lowers for CUDA.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from pallas_kernels.gpu.backward import dma_backward_slots
from pallas_kernels.gpu.reference import interval_attention_reference
from pallas_kernels.mosaic_gpu.backward_slots import check_arguments, dma_backward_slots_mosaic
from problems import causal_key_lists

SCALE = 0.3


def _problem(seed, *, kv_len, q_len, bias_heads, kv_heads, block_q, window, head_dim=128, dtype=jnp.bfloat16,
             rows=64):
    """Tile-layout inputs with ``rows`` rows a tile (R = rows / block_q)."""
    rng = np.random.default_rng(seed)
    tiles = q_len // block_q
    normal = lambda *shape: jnp.asarray(rng.normal(size=shape), dtype)
    q, do = normal(1, bias_heads, tiles, rows, head_dim), normal(1, bias_heads, tiles, rows, head_dim)
    k, v = normal(1, kv_heads, kv_len, head_dim), normal(1, kv_heads, kv_len, head_dim)
    bias = jnp.asarray(rng.integers(-2, 3, (1, bias_heads, kv_len)), jnp.float32)
    start, end, table = causal_key_lists(bias, q_len, block_q, window, multiple=64)
    return dict(q=q, do=do, k=k, v=v, bias=bias, start=start, end=end, table=table, q_offset=kv_len - q_len,
                block_q=block_q)


def _reference(p, start=None, end=None):
    """Float32 reference: lse, delta and the four gradients for cotangent dO."""
    f32 = lambda x: x.astype(jnp.float32)
    start = p["start"] if start is None else start
    end = p["end"] if end is None else end
    fn = lambda q, k, v, b: interval_attention_reference(q, k, v, b, start, end, scale=SCALE, block_q=p["block_q"],
                                                         q_offset=p["q_offset"])
    (out, lse), vjp = jax.vjp(fn, f32(p["q"]), f32(p["k"]), f32(p["v"]), p["bias"])
    grads = vjp((f32(p["do"]), jnp.zeros_like(lse)))
    return lse, jnp.sum(f32(p["do"]) * out, axis=-1), grads


def _mosaic(p, lse, delta, table=None, start=None, end=None):
    return dma_backward_slots_mosaic(
        p["q"], p["do"], lse, delta, p["k"], p["v"], p["bias"], p["start"] if start is None else start,
        p["end"] if end is None else end, p["table"] if table is None else table, scale=SCALE,
        block_q=p["block_q"], q_offset=p["q_offset"],
    )


def _per_kv(x, kv_heads):
    return x.reshape((x.shape[0], kv_heads, -1) + x.shape[2:]).sum(axis=2)


@pytest.mark.gpu
@pytest.mark.parametrize("head_dim,dtype", [(128, jnp.bfloat16), (64, jnp.float16)])
def test_every_key_in_its_own_slot_matches_the_reference_gradients(head_dim, dtype):
    """A table listing key j in slot j at every tile: one run per key, so the kernel's sums are the
    whole gradients (live ranges from the causal selection, GQA, Tq < Tk; -1 and out-of-range
    entries in the padding)."""
    p = _problem(0, kv_len=320, q_len=256, bias_heads=2, kv_heads=1, block_q=16, window=64, head_dim=head_dim,
                 dtype=dtype)
    keys = np.arange(384, dtype=np.int32)
    keys = np.where(keys < 320, keys, np.where(keys % 2 == 0, -1, 1000))
    table = jnp.asarray(np.broadcast_to(keys, (1, 2, 256 // 16, 384)).copy())
    lse, delta, (_, dk_ref, dv_ref, db_ref) = _reference(p)
    dk, dv, db = _mosaic(p, lse, delta, table=table)
    assert dk.shape == (1, 2, 321, head_dim) and db.shape == (1, 2, 321)
    scale = lambda x: float(jnp.abs(x).max())
    np.testing.assert_allclose(_per_kv(dk[:, :, :320], 1), dk_ref, atol=2e-2 * scale(dk_ref))
    np.testing.assert_allclose(_per_kv(dv[:, :, :320], 1), dv_ref, atol=2e-2 * scale(dv_ref))
    np.testing.assert_allclose(db[:, :, :320], db_ref, atol=2e-2 * scale(db_ref))


@pytest.mark.gpu
@pytest.mark.parametrize("block_q,rows", [(16, 64), (32, 128)])
def test_churning_slots_match_the_triton_kernel_and_repeat_bitwise(block_q, rows):
    """Causal slot tables (keys enter and leave slots): equal to the Triton key-major pass within
    bf16 rounding, keys never carried are zero, and a second call is bitwise identical. 128-row
    tiles are taken in two halves of 64."""
    p = _problem(1, kv_len=1024, q_len=1024, bias_heads=2, kv_heads=2, block_q=block_q, window=100, rows=rows)
    lse, delta, _ = _reference(p)
    args = (p["q"], p["do"], lse, delta, p["k"], p["v"], p["bias"], p["start"], p["end"], p["table"])
    expected = dma_backward_slots(*args, scale=SCALE, block_q=block_q, block_slots=64, q_offset=p["q_offset"],
                                  transposed=True)
    got = _mosaic(p, lse, delta)
    again = _mosaic(p, lse, delta)
    for name, e, g, a in zip(("dk", "dv", "db"), expected, got, again):
        np.testing.assert_allclose(g, e, atol=2e-2 * float(jnp.abs(e).max()), err_msg=name)
        assert np.array_equal(np.asarray(g), np.asarray(a)), name
    carried = np.zeros(1025, bool)
    carried[np.asarray(p["table"]).ravel()[np.asarray(p["table"]).ravel() >= 0]] = True
    assert np.all(np.asarray(got[0])[0, :, ~carried] == 0)


@pytest.mark.parametrize(
    "change, message",
    [(dict(rows=32), "rows"), (dict(dtype=jnp.float32), "bfloat16"), (dict(head_dim=80), "head dim"),
     (dict(width=96), "multiple of 64")],
)
def test_rejects_unsupported_arguments(change, message):
    rows, dtype, head_dim, width = (change.get(k, d) for k, d in
                                    (("rows", 64), ("dtype", jnp.bfloat16), ("head_dim", 128), ("width", 128)))
    q = jnp.zeros((1, 2, 4, rows, head_dim), dtype)
    kv = jnp.zeros((1, 1, 64, head_dim), dtype)
    rows_f32 = jnp.zeros((1, 2, 4, rows), jnp.float32)
    per_key = jnp.zeros((1, 2, 64), jnp.int32)
    with pytest.raises(ValueError, match=message):
        dma_backward_slots_mosaic(q, q, rows_f32, rows_f32, kv, kv, per_key.astype(jnp.float32), per_key, per_key,
                                  jnp.full((1, 2, 4, width), -1, jnp.int32), scale=1.0, block_q=16, q_offset=0)


def test_takes_any_block_q_that_divides_the_rows():
    """Unlike the query-major pass, the key-major one needs no multiple of 8 (4 positions x R = 16)."""
    q = jax.ShapeDtypeStruct((1, 2, 4, 64, 128), jnp.bfloat16)
    kv = jax.ShapeDtypeStruct((1, 1, 64, 128), jnp.bfloat16)
    rows = jax.ShapeDtypeStruct((1, 2, 4, 64), jnp.float32)
    per_key = jax.ShapeDtypeStruct((1, 2, 64), jnp.int32)
    table = jax.ShapeDtypeStruct((1, 2, 4, 64), jnp.int32)
    assert check_arguments(q, q, rows, rows, kv, kv, per_key, per_key, per_key, table, block_q=4)["rows"] == 64
    with pytest.raises(ValueError, match="must divide"):
        check_arguments(q, q, rows, rows, kv, kv, per_key, per_key, per_key, table, block_q=24)


@pytest.mark.parametrize("head_dim,dtype,rows", [(128, jnp.bfloat16, 128), (64, jnp.float16, 64)])
def test_lowers_for_cuda(head_dim, dtype, rows):
    """Traced and lowered to Mosaic GPU on the CPU: one Mosaic GPU call."""
    s = jax.ShapeDtypeStruct
    tiles, kv_len = 16, 256
    args = ((s((1, 2, tiles, rows, head_dim), dtype),) * 2 + (s((1, 2, tiles, rows), jnp.float32),) * 2
            + (s((1, 1, kv_len, head_dim), dtype),) * 2
            + (s((1, 2, kv_len), jnp.float32), s((1, 2, kv_len), jnp.int32), s((1, 2, kv_len), jnp.int32),
               s((1, 2, tiles, 128), jnp.int32)))
    fn = lambda *a: dma_backward_slots_mosaic(*a, scale=0.1, block_q=16, q_offset=0)
    mosaic = export.DisabledSafetyCheck.custom_call("mosaic_gpu_v2")
    text = export.export(jax.jit(fn), platforms=["cuda"], disabled_checks=[mosaic])(*args).mlir_module()
    assert text.count("@mosaic_gpu_v2") == 1


@pytest.mark.gpu
def test_mosaic_backward_slots_reads_k_and_v_in_their_sequence_layout():
    """``kv_sequence=True`` (k and v in (B, Tk, Hkv, D), Hkv = 2) gives bitwise the results of the
    (B, Hkv, Tk, D) copy."""
    p = _problem(5, kv_len=320, q_len=256, bias_heads=2, kv_heads=2, block_q=16, window=64)
    lse, delta, _ = _reference(p)
    want = _mosaic(p, lse, delta)
    got = dma_backward_slots_mosaic(
        p["q"], p["do"], lse, delta, p["k"].swapaxes(1, 2), p["v"].swapaxes(1, 2), p["bias"], p["start"], p["end"],
        p["table"], scale=SCALE, block_q=p["block_q"], q_offset=p["q_offset"], kv_sequence=True)
    for name, g, w in zip(("dk", "dv", "dbias"), got, want):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w), err_msg=name)


@pytest.mark.gpu
def test_mosaic_backward_slots_reads_q_and_do_in_their_sequence_layout():
    """``q_sequence=True`` (one query head per bias head: q and dO in (B, T, Hb, D)) gives bitwise
    the tile layout's results."""
    p = _problem(7, kv_len=320, q_len=256, bias_heads=2, kv_heads=2, block_q=64, window=64)
    lse, delta, _ = _reference(p)
    as_sequence = lambda x: jnp.moveaxis(x.reshape(x.shape[:2] + (-1, x.shape[-1])), 1, 2)  # (B, T, Hb, D)
    want = _mosaic(p, lse, delta)
    got = dma_backward_slots_mosaic(
        as_sequence(p["q"]), as_sequence(p["do"]), lse, delta, p["k"], p["v"], p["bias"], p["start"], p["end"],
        p["table"], scale=SCALE, block_q=p["block_q"], q_offset=p["q_offset"], q_sequence=True)
    for name, g, w in zip(("dk", "dv", "dbias"), got, want):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w), err_msg=name)
