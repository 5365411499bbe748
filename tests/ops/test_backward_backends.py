"""PallasConfig.backward_backend: the choice is checked, "auto" decides per call and pass, and
(GPU) the Mosaic GPU passes give the Triton passes' gradients, bitwise repeatably."""

import dataclasses
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dma_jax import PallasConfig, dma_attention
from dma_jax.ops.pallas_gpu import BACKWARD_BACKENDS, mosaic_backward_applies
from problems import op_output_and_grads


def test_config_names_its_backward_backend(monkeypatch):
    with pytest.raises(ValueError, match="backward_backend must be one of"):
        PallasConfig(backward_backend="cutlass")
    assert PallasConfig().backward_backend == "auto"
    monkeypatch.setenv("DMA_BACKWARD_BACKEND", "pallas_triton")
    assert PallasConfig().backward_backend == "pallas_triton"
    assert PallasConfig().interpreted().backward_backend == "pallas_triton"
    monkeypatch.setenv("DMA_BACKWARD_BACKEND", "mosaic")
    with pytest.raises(ValueError, match="DMA_BACKWARD_BACKEND"):
        PallasConfig()


def test_tables_fit_the_mosaic_key_major_pass_where_it_may_run():
    resolve = lambda backend: PallasConfig(forward_backend="pallas_triton", backward_backend=backend).resolve(  # noqa: E731
        head_dim=128, per_bias=4, dtype=jnp.bfloat16)
    assert [resolve(b).table_multiple for b in BACKWARD_BACKENDS] == [32, 64, 64]


def _slots_call(rows=128, dtype=jnp.bfloat16, head_dim=128, width=128):
    q = jnp.zeros((1, 2, 8, rows, head_dim), dtype)
    rows_f32 = jnp.zeros((1, 2, 8, rows), jnp.float32)
    k = jnp.zeros((1, 1, 256, head_dim), dtype)
    per_key = jnp.zeros((1, 2, 256), jnp.int32)
    table = jnp.full((1, 2, 8, width), -1, jnp.int32)
    return (q, q, rows_f32, rows_f32, k, k, per_key.astype(jnp.float32), per_key, per_key, table)


@pytest.mark.parametrize("change, applies", [
    (dict(), (True, True)),
    (dict(rows=64), (True, True)),
    (dict(device=SimpleNamespace(platform="gpu", compute_capability="8.0")), (False, False)),
    (dict(device=SimpleNamespace(platform="cpu")), (False, False)),
    (dict(interpret=True), (False, False)),
    (dict(dtype=jnp.float32), (False, False)),
    (dict(head_dim=256), (False, False)),
    (dict(rows=32), (False, False)),
    (dict(width=96), (False, False)),
    (dict(width=64 * 257), (False, True)),  # past the query-major kernel's 256 key steps
])
def test_auto_takes_the_mosaic_key_major_pass_only_where_it_applies(change, applies):
    args = _slots_call(**{k: v for k, v in change.items() if k in ("rows", "dtype", "head_dim", "width")})
    kwargs = dict(block_q=32, interpret=change.get("interpret", False),
                  device=change.get("device", SimpleNamespace(platform="gpu", compute_capability="9.0")))
    assert mosaic_backward_applies(*args, **kwargs) == applies


@pytest.mark.slow  # 28 s in interpret mode; the Pallas cases of tests/ops/test_attention.py run the same kernels
def test_auto_runs_the_triton_kernels_in_interpret_mode():
    """Forward and backward "auto" in interpret mode (no Hopper GPU): the Triton-lowered kernels'
    output and gradients."""
    q, k, v, bias = (jax.random.normal(jax.random.key(i), s) for i, s in
                     enumerate([(1, 40, 4, 16), (1, 40, 2, 16), (1, 40, 2, 16), (1, 2, 40)]))
    config = PallasConfig().interpreted()
    auto = dataclasses.replace(config, forward_backend="auto", backward_backend="auto")

    def run(c):
        out, vjp = jax.vjp(lambda *a: dma_attention(*a, 8, implementation=c), q, k, v, bias)
        return (out,) + vjp(jnp.ones_like(out))

    for got, want in zip(run(auto), run(config)):
        np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["mosaic_gpu", "auto"])
@pytest.mark.parametrize("length, window", [(2048, 256), (1000, 100)])
def test_backward_backend_equals_the_triton_backward_on_gpu(backend, length, window):
    call = op_output_and_grads(length, window, PallasConfig(backward_backend=backend))
    got, again = call()[1:], call()[1:]
    want = op_output_and_grads(length, window, PallasConfig(backward_backend="pallas_triton"))()[1:]
    for name, g, a, w in zip(("dq", "dk", "dv", "dbias"), got, again, want):
        assert np.array_equal(np.asarray(g), np.asarray(a)), name
        g, w = np.asarray(g, np.float32), np.asarray(w, np.float32)
        assert np.abs(g - w).max() <= 2e-2 * max(1.0, np.abs(w).max()), name
