"""The Pallas TPU path (``implementation="pallas_tpu"``) against the dense reference, on the CPU.

The kernels run in TPU interpret mode (``pltpu.InterpretParams``: DMAs and semaphores are
simulated, uninitialised VMEM is NaN, so a read of a row no copy has landed in fails) with
blocked outputs filled with NaN at the start of every program (``poison_outputs``), so an
element a kernel never writes fails. Tiles are small (8 positions, 8-key chunks) to keep the
interpreter fast; one case runs the TPU-shaped tiles (128-key chunks, 128 slots).
Nothing here runs on a TPU: see docs/tpu.md.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dma_jax
from dma_jax import PallasConfig, PallasTpuConfig, XlaConfig
from dma_jax.ops import attention
from pallas_kernels.tpu.common import TpuKernelOptions
from test_attention import FP32_REL_TOL, Case, make_inputs, max_err, out_and_grads
from case_tables import case_params

NAMES = ["out", "dq", "dk", "dv", "dbias"]
POISONED = PallasTpuConfig().interpreted(poison_outputs=True)
# TPU-legal shapes: 128-key chunks and slot blocks (lane dims), 16-row backward tiles; copies run
# as soon as they start, so a prefetch into the buffer being computed on would show.
TPU_SHAPED = PallasTpuConfig(
    32, 128, 16, 128, 128, TpuKernelOptions(interpret=True, poison_outputs=True, dma_execution_mode="eager")
)
EAGER = dataclasses.replace(POISONED, options=TPU_SHAPED.options)


def _tpu_fn(window, kwargs, config=POISONED):
    return lambda *a: dma_jax.dma_attention(*a, window, implementation=config, **kwargs)


CASES = {
    "T79_w8_keymask_ties_gqa_hb_hkv_D64": (Case(
        seed=61, q_len=79, kv_len=79, window=8, key_mask=True, int_bias=True, head_dim=64), POISONED),
    "T63_w5_segments_hb_h_D80": (Case(
        seed=62, q_len=63, kv_len=63, window=5, segments=True, bias_heads=4, head_dim=80, batch=1),
        POISONED),
    "Tq30_Tk79_w9_neginf_hb_h": (Case(
        seed=63, q_len=30, kv_len=79, window=9, neg_inf_frac=0.2, bias_heads=4), EAGER),
    "T63_wNone_mqa_scale": (Case(
        seed=64, q_len=63, kv_len=63, window=None, kv_heads=1, bias_heads=1, scale=0.3, batch=1), POISONED),
    "noncausal_T63_w4_many_segments_keymask": (Case(
        seed=69, q_len=63, kv_len=63, window=4, causal=False, segments=True, pieces=12, key_mask=True), POISONED),
    "tpu_tiles_T111_w20_segments_keymask": (Case(
        seed=66, q_len=111, kv_len=111, window=20, segments=True, key_mask=True, batch=1), TPU_SHAPED),
}


# The longest interpret runs (128-key chunks, D = 80: 54 s on a fresh clone), and three whose features
# the TPU forward kernel's own tests also cover (Tq < Tk, window None, non-causal:
# tests/kernels/test_tpu_kernels.py). CI keeps the public op's test below.
SLOW_CASES = {"tpu_tiles_T111_w20_segments_keymask", "Tq30_Tk79_w9_neginf_hb_h", "T63_wNone_mqa_scale", "T63_w5_segments_hb_h_D80",
              "noncausal_T63_w4_many_segments_keymask", "T79_w8_keymask_ties_gqa_hb_hkv_D64"}


@pytest.mark.parametrize("case,config", case_params(CASES, SLOW_CASES, unpack=True))
def test_matches_reference_fp32(case: Case, config):
    q, k, v, bias, ct, kwargs = make_inputs(case)
    got_out, got_grads = out_and_grads(_tpu_fn(case.window, kwargs, config), q, k, v, bias, ct)
    ref_out, ref_grads = out_and_grads(
        lambda *a: dma_jax.dma_attention_reference(*a, case.window, **kwargs), q, k, v, bias, ct
    )
    got, want = dict(zip(NAMES, (got_out, *got_grads))), dict(zip(NAMES, (ref_out, *ref_grads)))
    assert {n: (x.shape, x.dtype) for n, x in got.items()} == {n: (x.shape, x.dtype) for n, x in want.items()}
    unwritten = [n for n, x in got.items() if not np.all(np.isfinite(np.asarray(x)))]
    assert not unwritten, f"non-finite (unwritten?) elements in {unwritten}"
    bound = {n: FP32_REL_TOL * max(float(np.max(np.abs(np.asarray(x)))), 1e-2) for n, x in want.items()}
    errors = {n: max_err(got[n], want[n]) for n in NAMES}
    print({n: f"{errors[n]:.3g} (bound {bound[n]:.3g})" for n in NAMES})
    assert all(errors[n] <= bound[n] for n in NAMES), errors


@pytest.mark.slow
def test_bf16_error_within_twice_reference_bf16_error_and_deterministic():
    """bf16 in, fp32 accumulate: error vs float64 <= 2x the bf16 reference's; gradients bitwise
    reproducible (no atomics)."""
    case = Case(seed=67, q_len=111, kv_len=111, window=8, key_mask=True, head_dim=64)
    q, k, v, bias, ct, kwargs = make_inputs(case, dtype=jnp.bfloat16)
    fn = _tpu_fn(case.window, kwargs)
    got_out, got_grads = out_and_grads(fn, q, k, v, bias, ct)
    again_out, again_grads = out_and_grads(fn, q, k, v, bias, ct)
    for got, again in zip((got_out, *got_grads), (again_out, *again_grads)):
        np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(again, np.float32))
    low_out, low_grads = out_and_grads(
        lambda *a: dma_jax.dma_attention_reference(*a, case.window, **kwargs), q, k, v, bias, ct
    )
    assert got_out.dtype == jnp.bfloat16
    assert [g.dtype for g in got_grads] == [jnp.bfloat16] * 3 + [jnp.float32]
    with jax.enable_x64(True):
        as64 = lambda x: jnp.asarray(np.asarray(x, np.float64))
        hi_out, hi_grads = out_and_grads(
            lambda *a: dma_jax.dma_attention_reference(*a, case.window, **kwargs), *(as64(x) for x in (q, k, v, bias, ct))
        )
        hi = [np.asarray(x) for x in (hi_out, *hi_grads)]
    for name, got, low, want in zip(NAMES, (got_out, *got_grads), (low_out, *low_grads), hi):
        scale = float(np.max(np.abs(want)))
        err, ref_err = max_err(got, want), max_err(low, want)
        print(f"{name}: kernel error {err:.3g}, bf16 reference {ref_err:.3g}, scale {scale:.3g}")
        assert err <= 2 * ref_err + 1e-3 * scale, f"{name}: kernel error {err:.3g}, bf16 reference {ref_err:.3g}"


def test_public_op_runs_pallas_tpu():
    """``dma_attention(implementation="pallas_tpu")`` off a TPU runs the interpreted kernels."""
    case = Case(seed=68, q_len=40, kv_len=40, window=4, batch=1)
    q, k, v, bias, _, kwargs = make_inputs(case)
    out = dma_jax.dma_attention(q, k, v, bias, 4, implementation="pallas_tpu", **kwargs)
    ref = dma_jax.dma_attention_reference(q, k, v, bias, 4, **kwargs)
    assert max_err(out, ref) <= FP32_REL_TOL * float(np.max(np.abs(np.asarray(ref))))


@pytest.mark.parametrize("backend,want", [("tpu", PallasTpuConfig()), ("gpu", PallasConfig()), ("cpu", XlaConfig())])
def test_default_implementation_per_backend(monkeypatch, backend, want):
    monkeypatch.setattr(attention.jax, "default_backend", lambda: backend)
    assert attention.resolve_implementation(None) == want
