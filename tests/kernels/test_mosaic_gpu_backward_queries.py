"""The Mosaic GPU query-major backward kernel (pallas_kernels.mosaic_gpu.backward_queries) against
the gradients of the dense reference.

GPU tests need an sm_90 GPU (they are skipped elsewhere). On the CPU: the argument checks, and
the kernel lowers for CUDA (traced and lowered to Mosaic GPU's dialect, which catches most layout
and type errors).

Own-key gradients come from this tile's queries only, so the reference runs one tile at a time:
the vjp of ``interval_attention_reference`` for tile n's queries (over all keys, with k and v
repeated to the bias heads) gives dq of tile n and, at the tile's own key positions, dk_own,
dv_own and db_own.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from pallas_kernels.gpu.reference import interval_attention_reference
from pallas_kernels.mosaic_gpu.backward_queries import dma_backward_queries_mosaic
from problems import causal_key_lists

BLOCK_K = 64
SCALE = 0.3


def _problem(seed, kv_len, q_len, bias_heads, kv_heads, per_position, block_q, window, head_dim=128,
             dtype=jnp.bfloat16):
    """Tile-layout inputs: q_tiles and do_tiles (1, Hb, tiles, block_q * R, D), k, v, bias and the
    causal index inputs; q_offset = Tk - Tq."""
    rng = np.random.default_rng(seed)
    tiles, rows = q_len // block_q, block_q * per_position
    normal = lambda *shape: jnp.asarray(rng.normal(size=shape), dtype)
    q_tiles = normal(1, bias_heads, tiles, rows, head_dim)
    do_tiles = normal(1, bias_heads, tiles, rows, head_dim)
    k, v = normal(1, kv_heads, kv_len, head_dim), normal(1, kv_heads, kv_len, head_dim)
    bias = jnp.asarray(rng.integers(-2, 3, (1, bias_heads, kv_len)), jnp.float32)
    start, end, table = causal_key_lists(bias, q_len, block_q, window, multiple=BLOCK_K)
    return dict(q_tiles=q_tiles, do_tiles=do_tiles, k=k, v=v, bias=bias, start=start, end=end, table=table,
                q_offset=kv_len - q_len)


def _reference(q_tiles, do_tiles, k, v, bias, start, end, *, block_q, q_offset, scale=SCALE):
    """float32 (lse, delta, dq, dk_own, dv_own, db_own) from the dense reference, tile by tile."""
    f32 = lambda x: x.astype(jnp.float32)
    group = bias.shape[1] // k.shape[1]
    k_heads, v_heads = (jnp.repeat(f32(x), group, axis=1) for x in (k, v))  # per bias head gradients
    tiles = q_tiles.shape[2]

    def one_tile(q, do, offset):  # q, do: (B, Hb, 1, rows, D)
        forward = lambda q, k, v, b: interval_attention_reference(
            q, k, v, b, start, end, scale=scale, block_q=block_q, q_offset=offset
        )
        out, vjp, lse = jax.vjp(forward, q, k_heads, v_heads, bias, has_aux=True)
        dq, dk, dv, db = vjp(do)
        own = lambda x: jax.lax.dynamic_slice_in_dim(
            jnp.pad(x, ((0, 0), (0, 0), (0, block_q)) + ((0, 0),) * (x.ndim - 3)), offset, block_q, axis=2
        )
        return lse[:, :, 0], jnp.sum(do * out, axis=-1)[:, :, 0], dq[:, :, 0], own(dk), own(dv), own(db)

    per_tile = lambda x: jnp.moveaxis(f32(x), 2, 0)[:, :, :, None]
    offsets = q_offset + block_q * jnp.arange(tiles)
    results = jax.jit(jax.vmap(one_tile))(per_tile(q_tiles), per_tile(do_tiles), offsets)
    return tuple(jnp.moveaxis(x, 0, 2) for x in results)


def _assert_close(got, want, name, tol=2e-2):
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    np.testing.assert_allclose(got, want, atol=tol * max(np.abs(want).max(), 1e-6), rtol=tol, err_msg=name)


def _run(problem, *, block_q, own_keys=True, num_stages=2, table=None):
    p = problem
    lse, delta, *grads = _reference(
        p["q_tiles"], p["do_tiles"], p["k"], p["v"], p["bias"], p["start"], p["end"], block_q=block_q,
        q_offset=p["q_offset"],
    )
    outputs = dma_backward_queries_mosaic(
        p["q_tiles"], p["do_tiles"], lse, delta, p["k"], p["v"], p["bias"], p["start"], p["end"],
        p["table"] if table is None else table, scale=SCALE, block_q=block_q, block_k=BLOCK_K,
        q_offset=p["q_offset"], own_keys=own_keys, num_stages=num_stages,
    )
    return outputs, grads


def _check(problem, *, block_q, **kwargs):
    (dq, dk_own, dv_own, db_own), (dq_ref, dk_ref, dv_ref, db_ref) = _run(problem, block_q=block_q, **kwargs)
    assert dq.dtype == problem["q_tiles"].dtype and dq.shape == problem["q_tiles"].shape
    assert dk_own.dtype == dv_own.dtype == db_own.dtype == jnp.float32
    _assert_close(dq, dq_ref, "dq")
    _assert_close(dk_own, dk_ref, "dk_own")
    _assert_close(dv_own, dv_ref, "dv_own")
    _assert_close(db_own, db_ref, "db_own")
    return dq, dk_own, dv_own, db_own


CASES = [
    pytest.param(dict(kv_len=320, q_len=256, bias_heads=2, kv_heads=1, per_position=4, block_q=16, window=64),
                 id="rows64-gqa-tq<tk"),
    pytest.param(dict(kv_len=384, q_len=384, bias_heads=2, kv_heads=2, per_position=4, block_q=32, window=100),
                 id="rows128"),
    pytest.param(dict(kv_len=448, q_len=256, bias_heads=2, kv_heads=1, per_position=4, block_q=32, window=150),
                 id="rows128-gqa-tq<tk"),
    pytest.param(dict(kv_len=384, q_len=256, bias_heads=1, kv_heads=1, per_position=1, block_q=128, window=200),
                 id="block_q128-two-own-steps"),
    pytest.param(dict(kv_len=256, q_len=256, bias_heads=1, kv_heads=1, per_position=4, block_q=16, window=64,
                      head_dim=64), id="d64"),
    pytest.param(dict(kv_len=256, q_len=256, bias_heads=2, kv_heads=1, per_position=4, block_q=16, window=64,
                      dtype=jnp.float16), id="fp16"),
]


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES)
def test_mosaic_backward_queries_matches_reference(case):
    _check(_problem(0, **case), block_q=case["block_q"])


@pytest.mark.gpu
def test_mosaic_backward_queries_three_stages():
    case = dict(kv_len=448, q_len=384, bias_heads=2, kv_heads=1, per_position=4, block_q=16, window=150)
    _check(_problem(1, **case), block_q=16, num_stages=3)


@pytest.mark.gpu
def test_mosaic_backward_queries_full_table_without_own_keys():
    """own_keys=False with a table listing every key (and some -1 / out-of-range entries): dq
    matches the reference, the own outputs are zeros."""
    problem = _problem(2, kv_len=192, q_len=128, bias_heads=2, kv_heads=2, per_position=4, block_q=16, window=40)
    keys = np.arange(256, dtype=np.int32)
    keys = np.where(keys < 192, keys, np.where(keys % 2 == 0, -1, 1000))  # absent: -1 and >= Tk
    table = jnp.asarray(np.broadcast_to(keys, (1, 2, 128 // 16, 256)).copy())
    (dq, dk_own, dv_own, db_own), (dq_ref, *_) = _run(problem, block_q=16, own_keys=False, table=table)
    _assert_close(dq, dq_ref, "dq")
    assert dk_own.shape == dv_own.shape == (1, 2, 8, 16, 128) and db_own.shape == (1, 2, 8, 16)
    for x in (dk_own, dv_own, db_own):
        assert not np.any(np.asarray(x))


@pytest.mark.gpu
def test_mosaic_backward_queries_rows_without_keys():
    """Rows that keep no key (head 0's keys all have empty live ranges, lse +inf): zero gradients."""
    problem = _problem(3, kv_len=256, q_len=256, bias_heads=2, kv_heads=1, per_position=4, block_q=16, window=64)
    problem["end"] = problem["end"].at[:, 0].set(problem["start"][:, 0])
    dq, dk_own, dv_own, db_own = _check(problem, block_q=16)
    for x in (dq, dk_own, dv_own, db_own):
        assert not np.any(np.asarray(x[:, 0].astype(jnp.float32)))


@pytest.mark.gpu
def test_mosaic_backward_queries_is_bitwise_repeatable():
    case = dict(kv_len=320, q_len=256, bias_heads=2, kv_heads=1, per_position=4, block_q=32, window=100)
    problem = _problem(4, **case)
    first, _ = _run(problem, block_q=32)
    second, _ = _run(problem, block_q=32)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(np.asarray(a.astype(jnp.float32)), np.asarray(b.astype(jnp.float32)))


def _shapes(*, head_dim=128, rows=128, block_q=32, bias_heads=2, kv_heads=1, tiles=4, kv_len=320, width=128,
            dtype=jnp.bfloat16):
    s = jax.ShapeDtypeStruct
    tile, row, keys = (1, bias_heads, tiles), (1, bias_heads, tiles, rows), (1, bias_heads, kv_len)
    kv = s((1, kv_heads, kv_len, head_dim), dtype)
    return (s(tile + (rows, head_dim), dtype), s(tile + (rows, head_dim), dtype), s(row, jnp.float32),
            s(row, jnp.float32), kv, kv, s(keys, jnp.float32), s(keys, jnp.int32), s(keys, jnp.int32),
            s(tile + (width,), jnp.int32))


@pytest.mark.parametrize("own_keys", [True, False])
@pytest.mark.parametrize(
    "dims",
    [dict(head_dim=128, rows=128, block_q=32), dict(head_dim=64, rows=64, block_q=16),
     dict(head_dim=128, rows=128, block_q=128, tiles=2), dict(head_dim=64, rows=128, block_q=32, dtype=jnp.float16)],
    ids=["d128-rows128", "d64-rows64", "d128-block_q128", "d64-rows128-fp16"],
)
def test_mosaic_backward_queries_lowers_for_cuda(dims, own_keys):
    """The kernel is traced and lowered to Mosaic GPU for CUDA on the CPU: one Mosaic GPU call."""
    shapes = _shapes(**dims)
    tiles, block_q = shapes[0].shape[2], dims["block_q"]
    kv_len = shapes[4].shape[2]

    def backward(*args):
        return dma_backward_queries_mosaic(
            *args, scale=SCALE, block_q=block_q, block_k=BLOCK_K, q_offset=kv_len - tiles * block_q,
            own_keys=own_keys,
        )

    mosaic = export.DisabledSafetyCheck.custom_call("mosaic_gpu_v2")
    exported = export.export(jax.jit(backward), platforms=["cuda"], disabled_checks=[mosaic])(*shapes)
    assert exported.mlir_module().count("@mosaic_gpu_v2") == 1
    dq, dk_own, dv_own, db_own = exported.out_avals
    assert dq.shape == shapes[0].shape and dq.dtype == shapes[0].dtype
    assert dk_own.shape == dv_own.shape == (1, 2, tiles, block_q, dims["head_dim"])
    assert db_own.shape == (1, 2, tiles, block_q)


def _arguments(change):
    dims = dict(head_dim=128, rows=64, block_q=16, bias_heads=2, kv_heads=1, tiles=4, kv_len=64, width=64)
    dims.update({key: value for key, value in change.items() if key in dims or key == "dtype"})
    args = [jnp.zeros(s.shape, s.dtype) for s in _shapes(**dims)]
    kwargs = dict(scale=1.0, block_q=dims["block_q"], block_k=64, q_offset=0)
    kwargs.update({key: value for key, value in change.items() if key in ("block_k", "num_stages", "own_keys")})
    if "block_q_arg" in change:
        kwargs["block_q"] = change["block_q_arg"]
    return args, kwargs


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(block_k=32), "block_k"),
        (dict(dtype=jnp.float32), "bfloat16"),
        (dict(head_dim=96), "head dim"),
        (dict(rows=32, block_q=8), "rows"),
        (dict(block_q_arg=12), "block_q"),
        (dict(block_q_arg=4), "multiple of 8"),
        (dict(width=96), "multiple of 64"),
        (dict(num_stages=1), "num_stages"),
        (dict(width=64 * 300), "key steps"),
        (dict(width=64 * 250, num_stages=3), "shared memory"),
        (dict(kv_heads=3, bias_heads=2), "Hkv"),
    ],
)
def test_mosaic_backward_queries_rejects_unsupported_arguments(change, message):
    """Unsupported arguments raise a ValueError naming the limit, before anything GPU-specific."""
    args, kwargs = _arguments(change)
    with pytest.raises(ValueError, match=message):
        dma_backward_queries_mosaic(*args, **kwargs)


@pytest.mark.gpu
def test_mosaic_backward_queries_reads_k_and_v_in_their_sequence_layout():
    """``kv_sequence=True`` (k and v in (B, Tk, Hkv, D), Hkv = 2) gives bitwise the results of the
    (B, Hkv, Tk, D) copy."""
    p = _problem(4, kv_len=384, q_len=384, bias_heads=2, kv_heads=2, per_position=4, block_q=32, window=100)
    lse, delta, *_ = _reference(p["q_tiles"], p["do_tiles"], p["k"], p["v"], p["bias"], p["start"], p["end"],
                                block_q=32, q_offset=p["q_offset"])
    run = lambda k, v, **kw: dma_backward_queries_mosaic(
        p["q_tiles"], p["do_tiles"], lse, delta, k, v, p["bias"], p["start"], p["end"], p["table"], scale=SCALE,
        block_q=32, block_k=BLOCK_K, q_offset=p["q_offset"], **kw)
    want = run(p["k"], p["v"])
    got = run(p["k"].swapaxes(1, 2), p["v"].swapaxes(1, 2), kv_sequence=True)
    for name, g, w in zip(("dq", "dk_own", "dv_own", "db_own"), got, want):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w), err_msg=name)


@pytest.mark.gpu
def test_mosaic_backward_queries_reads_q_and_do_in_their_sequence_layout():
    """``q_sequence=True`` (one query head per bias head: q, dO and dq in (B, T, Hb, D), a tile's
    rows Hb * D apart) gives bitwise the tile layout's results."""
    p = _problem(6, kv_len=384, q_len=384, bias_heads=2, kv_heads=2, per_position=1, block_q=128, window=200)
    lse, delta, *_ = _reference(p["q_tiles"], p["do_tiles"], p["k"], p["v"], p["bias"], p["start"], p["end"],
                                block_q=128, q_offset=p["q_offset"])
    as_sequence = lambda x: jnp.moveaxis(x.reshape(x.shape[:2] + (-1, x.shape[-1])), 1, 2)  # (B, T, Hb, D)
    run = lambda q, do, **kw: dma_backward_queries_mosaic(
        q, do, lse, delta, p["k"], p["v"], p["bias"], p["start"], p["end"], p["table"], scale=SCALE, block_q=128,
        block_k=BLOCK_K, q_offset=p["q_offset"], **kw)
    want = run(p["q_tiles"], p["do_tiles"])
    got = run(as_sequence(p["q_tiles"]), as_sequence(p["do_tiles"]), q_sequence=True)
    np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(as_sequence(want[0])), err_msg="dq")
    for name, g, w in zip(("dk_own", "dv_own", "db_own"), got[1:], want[1:]):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w), err_msg=name)
