"""The Triton forward kernel of pallas_kernels.jax_triton: in Triton's CPU interpreter against the
dense reference, compiled for sm_90 on the CPU, and its argument checks (inside dma_attention on
the GPU: tests/ops/test_forward_backends.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="the Triton package (the `ptx` or `cuda` extra) compiles and interprets the kernel")
from pallas_kernels.jax_triton.forward_kernel import dma_forward_kernel, launch_constants  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SHAPES = dict(q_shape=(1, 256, 8, 64), kv_shape=(1, 2, 256, 64), table_shape=(1, 2, 8, 64))


@pytest.mark.slow  # 26 s in Triton's interpreter; the jax-triton forward is not a default backend
def test_kernel_matches_reference_in_triton_interpreter():
    """Output and log-sum-exp of two cases (Tq < Tk with padded rows that keep no key; two bias
    heads sharing one KV head, w > T) against the float32 reference; outputs start as NaN."""
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
    import triton
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
