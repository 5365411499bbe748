"""PallasConfig.forward_backend: the choice is checked, and (GPU) each backend's forward gives the
Pallas forward's output and, through the shared backward, its gradients."""

from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np
import pytest

from dma_jax import PallasConfig
from dma_jax.ops.pallas_gpu import FORWARD_BACKENDS, mosaic_forward_applies
from problems import op_output_and_grads


def test_config_names_its_backend():
    with pytest.raises(ValueError, match="forward_backend must be one of"):
        PallasConfig(forward_backend="cutlass")
    with pytest.raises(ValueError, match="needs the sequence layout"):
        PallasConfig(forward_backend="jax_triton").resolve(head_dim=80, per_bias=4, dtype=jnp.bfloat16)


def test_tables_fit_the_mosaic_kernel_where_it_may_run():
    """Triton kernels step at most block_q keys; the Mosaic GPU kernel 64, so its tables (and those
    of "auto") are padded to a multiple of 64."""
    resolve = lambda backend: PallasConfig(forward_backend=backend, backward_backend="pallas_triton").resolve(  # noqa: E731
        head_dim=128, per_bias=4, dtype=jnp.bfloat16)
    assert [resolve(b).block_k for b in FORWARD_BACKENDS] == [32, 32, 32, 32]
    assert [resolve(b).table_multiple for b in FORWARD_BACKENDS] == [32, 32, 64, 64]


def test_default_backend_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("DMA_FORWARD_BACKEND", "pallas_triton")
    assert PallasConfig().forward_backend == "pallas_triton"
    assert PallasConfig().interpreted().forward_backend == "pallas_triton"
    monkeypatch.setenv("DMA_FORWARD_BACKEND", "mosaic")
    with pytest.raises(ValueError, match="DMA_FORWARD_BACKEND"):
        PallasConfig()
    monkeypatch.delenv("DMA_FORWARD_BACKEND")
    assert PallasConfig().forward_backend == "auto"


def _mosaic_call(length=256, dtype=jnp.bfloat16, head_dim=128, width=128):
    q = jnp.zeros((1, length, 8, head_dim), dtype)
    k = v = jnp.zeros((1, 2, length, head_dim), dtype)
    bias, start, end = jnp.zeros((1, 2, length)), jnp.zeros((1, 2, length), jnp.int32), jnp.zeros((1, 2, length), jnp.int32)
    table = jnp.zeros((1, 2, length // 32, width), jnp.int32)
    return (q, k, v, bias, start, end, table), dict(block_q=32, bias_heads=2, own_keys=True, num_stages=2)


@pytest.mark.parametrize("change, applies", [
    (dict(), True),
    (dict(device=SimpleNamespace(platform="gpu", compute_capability="8.0")), False),  # no wgmma before Hopper
    (dict(device=SimpleNamespace(platform="cpu")), False),
    (dict(interpret=True), False),
    (dict(bias_heads=None), False),  # the tile layout
    (dict(dtype=jnp.float32), False),
    (dict(head_dim=256), False),
    (dict(length=64, width=16448), False),  # more than 256 key steps
])
def test_auto_takes_mosaic_only_where_it_applies(change, applies):
    args, kwargs = _mosaic_call(**{k: v for k, v in change.items() if k in ("dtype", "head_dim", "length", "width")})
    kwargs.update({k: v for k, v in change.items() if k in ("interpret", "bias_heads", "device")})
    kwargs.setdefault("device", SimpleNamespace(platform="gpu", compute_capability="9.0"))
    assert mosaic_forward_applies(*args, **kwargs) is applies


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["jax_triton", "mosaic_gpu", "auto"])
@pytest.mark.parametrize("length, window", [(2048, 256), (1000, 100)])
def test_forward_backend_equals_pallas_forward_on_gpu(backend, length, window):
    run = lambda name: op_output_and_grads(length, window, PallasConfig(forward_backend=name))()  # noqa: E731
    got, want = run(backend), run("pallas_triton")
    for name, g, w in zip(("out", "dq", "dk", "dv", "dbias"), got, want):
        g, w = np.asarray(g, np.float32), np.asarray(w, np.float32)
        assert np.abs(g - w).max() <= 2e-2 * max(1.0, np.abs(w).max()), name
