"""PallasConfig.forward_backend: the choice is checked, and (GPU) each backend's forward gives the
Pallas forward's output and, through the shared backward, its gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dma_jax import PallasConfig, dma_attention


def test_config_names_its_backend():
    with pytest.raises(ValueError, match="forward_backend must be one of"):
        PallasConfig(forward_backend="cutlass")
    with pytest.raises(ValueError, match="needs the sequence layout"):
        PallasConfig(forward_backend="jax_triton").resolve(head_dim=80, per_bias=4, dtype=jnp.bfloat16)


def test_block_k_per_backend():
    """The Triton kernels step at most block_q keys at a time; the Mosaic GPU kernel 64."""
    resolve = lambda backend: PallasConfig(forward_backend=backend).resolve(  # noqa: E731
        head_dim=128, per_bias=4, dtype=jnp.bfloat16)
    assert [resolve(b).block_k for b in ("pallas_triton", "jax_triton", "mosaic_gpu")] == [32, 32, 64]
    assert resolve("mosaic_gpu").table_multiple == 64


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["jax_triton", "mosaic_gpu"])
@pytest.mark.parametrize("length, window", [(2048, 256), (1000, 100)])
def test_forward_backend_equals_pallas_forward_on_gpu(backend, length, window):
    from benchmarks.common import inputs

    q, k, v, bias = inputs(length, seed=4)
    cotangent = jax.random.normal(jax.random.key(2), q.shape, q.dtype)

    def run(name):
        fn = lambda *a: dma_attention(*a, window, implementation=PallasConfig(forward_backend=name))  # noqa: E731
        out, vjp = jax.vjp(fn, q, k, v, bias)
        return (out,) + vjp(cotangent)

    got, want = jax.jit(lambda: run(backend))(), jax.jit(lambda: run("pallas_triton"))()
    for name, g, w in zip(("out", "dq", "dk", "dv", "dbias"), got, want):
        g, w = np.asarray(g, np.float32), np.asarray(w, np.float32)
        assert np.abs(g - w).max() <= 2e-2 * max(1.0, np.abs(w).max()), name
