"""The Triton forward kernel of pallas_kernels.jax_triton: in Triton's CPU interpreter against the
dense reference, compiled for sm_90 on the CPU, its argument checks, and (GPU) inside dma_attention."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dma_jax import PallasConfig, dma_attention
from pallas_kernels.jax_triton.forward_kernel import dma_forward_kernel, launch_constants

ROOT = Path(__file__).resolve().parents[2]
SHAPES = dict(q_shape=(1, 256, 8, 64), kv_shape=(1, 2, 256, 64), table_shape=(1, 2, 8, 64))


def test_kernel_matches_reference_in_triton_interpreter():
    """Output and log-sum-exp of three cases (GQA, Tq < Tk with padded rows that keep no key,
    w > T with two KV heads) against the float32 reference; outputs start as NaN."""
    pytest.importorskip("torch")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-m", "tests.kernels.jax_triton_interpreted"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for name, errors in json.loads(done.stdout.strip().splitlines()[-1]).items():
        assert errors["out_err"] < 1e-5 and errors["lse_err"] < 1e-5, (name, errors)
        assert errors["empty_rows_match"], name
    assert errors["empty_rows"] > 0  # the last case has rows that keep no key


def test_kernel_compiles_for_hopper_with_wgmma_and_async_gathers():
    """Triton compiles the kernel for sm_90 here (no GPU needed): both products on wgmma, the key
    gathers as cp.async copies (the pipelined loop)."""
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    constants = launch_constants(**SHAPES, scale=0.125, block_q=32, block_k=32, q_offset=0, bias_heads=2,
                                 own_keys=True, num_stages=3)
    constants.pop("qk_scale")
    inputs = dict(zip(["Q", "K", "V", "Bias", "Start", "End", "Table", "qk_scale"],
                      ["*bf16"] * 3 + ["*fp32"] + ["*i32"] * 3 + ["fp32"]))
    signature = {**inputs, "Out": "*bf16", "Lse": "*fp32", **{name: "constexpr" for name in constants}}
    kernel = triton.compile(ASTSource(dma_forward_kernel, signature, constexprs=constants),
                            target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4, num_stages=3))
    ptx = kernel.asm["ptx"]
    assert "wgmma.mma_async" in ptx and "cp.async" in ptx


@pytest.mark.parametrize("change, message", [
    (dict(block_k=24), "powers of two"),
    (dict(table_shape=(1, 2, 8, 48)), "multiples of block_k"),
    (dict(q_shape=(1, 256, 6, 64)), "powers of two"),  # R = 3
])
def test_launch_constants_reject_what_the_kernel_cannot_take(change, message):
    args = dict(SHAPES, scale=0.125, block_q=32, block_k=32, q_offset=0, bias_heads=2, own_keys=True, num_stages=2)
    with pytest.raises(ValueError, match=message):
        launch_constants(**{**args, **change})


def test_config_names_its_backend():
    with pytest.raises(ValueError, match="forward_backend must be one of"):
        PallasConfig(forward_backend="cutlass")
    with pytest.raises(ValueError, match="needs the sequence layout"):
        PallasConfig(forward_backend="jax_triton").resolve(head_dim=80, per_bias=4, dtype=jnp.bfloat16)


@pytest.mark.gpu
@pytest.mark.parametrize("length, window", [(2048, 256), (1000, 100)])
def test_jax_triton_forward_equals_pallas_forward_on_gpu(length, window):
    """Same output and gradients as the Pallas forward (the backward is shared and reads the lse)."""
    from benchmarks.common import inputs

    q, k, v, bias = inputs(length, seed=4)
    cotangent = jax.random.normal(jax.random.key(2), q.shape, q.dtype)

    def run(backend):
        fn = lambda *a: dma_attention(*a, window, implementation=PallasConfig(forward_backend=backend))  # noqa: E731
        out, vjp = jax.vjp(fn, q, k, v, bias)
        return (out,) + vjp(cotangent)

    got, want = jax.jit(lambda: run("jax_triton"))(), jax.jit(lambda: run("pallas_triton"))()
    for name, g, w in zip(("out", "dq", "dk", "dv", "dbias"), got, want):
        g, w = np.asarray(g, np.float32), np.asarray(w, np.float32)
        assert np.abs(g - w).max() <= 2e-2 * max(1.0, np.abs(w).max()), name
