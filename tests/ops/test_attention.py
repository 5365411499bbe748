"""The public ``dma_jax.dma_attention`` against ``dma_jax.dma_attention_reference``.

Forward outputs and gradients of q, k, v and bias, under ``jax.jit`` and ``jax.vjp``, on odd
sizes that exercise both the sparse tiled path (``window + 64 < Tk``) and the dense path; then
bfloat16 accuracy against a float64 reference, argument errors, and NaN bias handling.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dma_jax
from problems import random_qkv
from case_tables import case_params

FP32_REL_TOL = 1e-4  # max abs error <= FP32_REL_TOL * max |reference|


@dataclasses.dataclass(frozen=True)
class Case:
    seed: int
    q_len: int
    kv_len: int
    window: int | None
    batch: int = 2
    heads: int = 4
    kv_heads: int = 2
    bias_heads: int = 2
    head_dim: int = 16
    causal: bool = True
    scale: float | None = None
    segments: bool = False
    pieces: int = 4  # segments per row
    key_mask: bool = False
    neg_inf_frac: float = 0.0
    int_bias: bool = False  # integer-valued bias (many ties, +0.0 and -0.0 among them)
    implementation: str | None = None


CASES = {
    # Sparse tiled path (8 + 64 < 111), two query tiles, key mask with an all-masked prefix.
    "T111_w8_keymask_ties_hb_hkv": Case(seed=1, q_len=111, kv_len=111, window=8, key_mask=True, int_bias=True),
    "T111_w1_segments_hb_h_xla": Case(
        seed=2, q_len=111, kv_len=111, window=1, bias_heads=4, segments=True, implementation="xla"
    ),
    # Bottom-right causal, two query tiles (the second padded).
    "Tq77_Tk111_w20_keymask": Case(seed=3, q_len=77, kv_len=111, window=20, key_mask=True, implementation="xla"),
    "Tq1_Tk111_w8_hb_h": Case(seed=4, q_len=1, kv_len=111, window=8, bias_heads=4, neg_inf_frac=0.2),
    "T111_w40_neginf_hb_h": Case(seed=5, q_len=111, kv_len=111, window=40, bias_heads=4, neg_inf_frac=0.3),
    # Causal with a window but the dense path (50 + 64 >= 111).
    "T111_w50_segments_keymask_ties": Case(
        seed=6, q_len=111, kv_len=111, window=50, segments=True, key_mask=True, int_bias=True
    ),
    "T63_wNone_D80_segments_hb_h": Case(
        seed=7, q_len=63, kv_len=63, window=None, head_dim=80, bias_heads=4, segments=True
    ),
    "T63_w200_keymask_mqa_scale": Case(
        seed=8, q_len=63, kv_len=63, window=200, kv_heads=1, bias_heads=1, key_mask=True, scale=0.3
    ),
    "noncausal_Tq63_Tk111_w10_keymask": Case(
        seed=9, q_len=63, kv_len=111, window=10, causal=False, key_mask=True, implementation="xla"
    ),
    "noncausal_T111_w5_segments_hb_h": Case(
        seed=10, q_len=111, kv_len=111, window=5, causal=False, segments=True, bias_heads=4
    ),
    # The Pallas kernels (interpret mode on the CPU).
    "pallas_T111_w8_keymask_ties": Case(
        seed=11, q_len=111, kv_len=111, window=8, key_mask=True, int_bias=True, implementation="pallas"
    ),
    "pallas_T111_w20_segments_hb_h_D80": Case(
        seed=12, q_len=111, kv_len=111, window=20, segments=True, bias_heads=4, head_dim=80, implementation="pallas"
    ),
    "pallas_Tq30_Tk111_w9_neginf": Case(
        seed=13, q_len=30, kv_len=111, window=9, neg_inf_frac=0.2, implementation="pallas"
    ),
    "pallas_T63_wNone_mqa_scale": Case(
        seed=14, q_len=63, kv_len=63, window=None, kv_heads=1, bias_heads=1, scale=0.3, implementation="pallas"
    ),
    "pallas_T63_w2": Case(seed=15, q_len=63, kv_len=63, window=2, implementation="pallas"),
    "pallas_noncausal_Tq40_Tk63_w6_keymask": Case(
        seed=16, q_len=40, kv_len=63, window=6, causal=False, key_mask=True, implementation="pallas"
    ),
    # Non-causal with packed segments: long ones span tiles, short ones sit inside one tile.
    "pallas_noncausal_T111_w5_segments_hb_h": Case(
        seed=17, q_len=111, kv_len=111, window=5, causal=False, segments=True, bias_heads=4, implementation="pallas"
    ),
    "pallas_noncausal_T111_w7_many_segments_keymask": Case(
        seed=18, q_len=111, kv_len=111, window=7, causal=False, segments=True, pieces=20, key_mask=True,
        implementation="pallas"
    ),
    "pallas_noncausal_T63_wNone_segments_mqa": Case(
        seed=19, q_len=63, kv_len=63, window=None, causal=False, segments=True, kv_heads=1, bias_heads=1,
        implementation="pallas"
    ),
}


def random_segments(rng, batch, length, pieces):
    """Contiguous runs with increasing (not zero-based) ids, different per batch row."""
    rows = []
    for b in range(batch):
        cuts = np.sort(rng.choice(np.arange(1, length), size=pieces - 1, replace=False))
        rows.append(10 * b + 3 + np.searchsorted(cuts, np.arange(length), side="right"))
    return np.stack(rows).astype(np.int32)


def make_inputs(case: Case, dtype=jnp.float32):
    rng = np.random.default_rng(case.seed)
    b, tk, hb = case.batch, case.kv_len, case.bias_heads
    q, k, v = random_qkv(rng, case)
    if case.int_bias:
        bias = rng.integers(-3, 4, size=(b, hb, tk)).astype(np.float64)
        bias = np.where((bias == 0) & (rng.random(bias.shape) < 0.5), -0.0, bias)
    else:
        bias = 2.0 * rng.standard_normal((b, hb, tk))
    if case.neg_inf_frac:
        bias = np.where(rng.random(bias.shape) < case.neg_inf_frac, -np.inf, bias)
    kwargs = dict(causal=case.causal, scale=case.scale)
    if case.segments:
        kwargs["segment_ids"] = jnp.asarray(random_segments(rng, b, tk, pieces=case.pieces))
    if case.key_mask:
        key_mask = rng.random((b, tk)) >= 0.25
        key_mask[-1, :20] = False  # causal queries before 20 keep nothing in the last row
        kwargs["key_mask"] = jnp.asarray(key_mask)
    cotangent = rng.standard_normal(q.shape)
    arrays = [jnp.asarray(x, dtype) for x in (q, k, v, cotangent)]
    return arrays[0], arrays[1], arrays[2], jnp.asarray(bias, jnp.float32), arrays[3], kwargs


def out_and_grads(fn, q, k, v, bias, cotangent):
    """jit(vjp(fn)) at (q, k, v, bias): the output and the gradients of all four inputs."""

    @jax.jit
    def run(q_, k_, v_, b_, ct):
        out, vjp = jax.vjp(fn, q_, k_, v_, b_)
        return out, vjp(ct)

    return run(q, k, v, bias, cotangent)


def max_err(got, want):
    return float(np.max(np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))))


def empty_queries(bias, window, q_len, heads, kwargs):
    """bool (B, Tq, H): query rows that keep no key (from the reference selection)."""
    sel = dma_jax.selection_mask(
        bias, window, q_len, causal=kwargs["causal"], segment_ids=kwargs.get("segment_ids"),
        key_mask=kwargs.get("key_mask"),
    )
    any_kept = np.asarray(sel).any(-1)  # (B, Hb, Tq or 1)
    any_kept = np.broadcast_to(any_kept, any_kept.shape[:2] + (q_len,))
    per_head = np.repeat(any_kept, heads // bias.shape[1], axis=1)  # (B, H, Tq)
    return ~np.transpose(per_head, (0, 2, 1))


# Cases whose features other cases also have (a small window, non-causal segments, w = None with one
# kv head, key masks and ties, non-causal Tq < Tk, w = 1 with segments, which the reference's own
# table checks against the naive loops): deselected by default, run with -m slow.
SLOW_CASES = {"pallas_T63_w2", "pallas_noncausal_T111_w5_segments_hb_h", "pallas_noncausal_T63_wNone_segments_mqa",
              "T111_w1_segments_hb_h_xla", "pallas_T63_wNone_mqa_scale",
              "pallas_T111_w8_keymask_ties", "pallas_noncausal_Tq40_Tk63_w6_keymask"}


@pytest.mark.parametrize("case", case_params(CASES, SLOW_CASES))
def test_matches_reference_fp32(case: Case):
    q, k, v, bias, ct, kwargs = make_inputs(case)
    window, impl = case.window, case.implementation

    got_out, got_grads = out_and_grads(
        lambda *a: dma_jax.dma_attention(*a, window, implementation=impl, **kwargs), q, k, v, bias, ct
    )
    ref_out, ref_grads = out_and_grads(
        lambda *a: dma_jax.dma_attention_reference(*a, window, **kwargs), q, k, v, bias, ct
    )
    assert got_out.shape == q.shape and got_out.dtype == jnp.float32
    for name, got, want in zip(
        ["out", "dq", "dk", "dv", "dbias"], (got_out, *got_grads), (ref_out, *ref_grads)
    ):
        assert got.shape == want.shape and got.dtype == want.dtype, name
        assert np.all(np.isfinite(np.asarray(got))), f"{name}: non-finite"
        # (With window 1, dq and dk are exactly 0: one kept key gets probability 1.)
        scale = max(float(np.max(np.abs(np.asarray(want)))), 1e-2)
        err = max_err(got, want)
        print(f"{name}: max error {err:.3g} vs scale {scale:.3g}")
        assert err <= FP32_REL_TOL * scale, f"{name}: max error {err:.3g} vs scale {scale:.3g}"

    # Queries that keep nothing: exact zeros and zero dq.
    empty = empty_queries(bias, window, case.q_len, case.heads, kwargs)
    if case.key_mask and case.causal and case.q_len == case.kv_len:
        assert empty.any(), "the case was meant to have queries that keep no key"
    assert np.all(np.asarray(got_out)[empty] == 0.0)
    assert np.all(np.asarray(got_grads[0])[empty] == 0.0)
    # -inf keys get no bias gradient.
    dbias = np.asarray(got_grads[3])
    assert np.all(dbias[np.isneginf(np.asarray(bias))] == 0.0)


def test_default_and_xla_agree_eagerly():
    """Outside jit both implementation names give the same numbers (and match the reference)."""
    case = Case(seed=20, q_len=111, kv_len=111, window=8, key_mask=True)
    q, k, v, bias, _, kwargs = make_inputs(case)
    default = dma_jax.dma_attention(q, k, v, bias, 8, **kwargs)
    xla = dma_jax.dma_attention(q, k, v, bias, 8, implementation="xla", **kwargs)
    np.testing.assert_array_equal(np.asarray(default), np.asarray(xla))
    ref = dma_jax.dma_attention_reference(q, k, v, bias, 8, **kwargs)
    assert max_err(default, ref) <= FP32_REL_TOL * float(np.max(np.abs(np.asarray(ref))))


def test_constant_bias_is_sliding_window():
    """All-equal bias: ties go to the larger index, so each query keeps its last w keys."""
    rng = np.random.default_rng(21)
    b, t, h, d, w = 1, 111, 2, 16, 8
    q = rng.standard_normal((b, t, h, d)).astype(np.float32)
    k = rng.standard_normal((b, t, 1, d)).astype(np.float32)
    v = rng.standard_normal((b, t, 1, d)).astype(np.float32)
    bias = np.full((b, 1, t), 0.5, np.float32)
    out = np.asarray(dma_jax.dma_attention(q, k, v, bias, w))

    logits = np.einsum("bthd,bshd->bhts", q.astype(np.float64), np.repeat(k, h, 2).astype(np.float64)) * d**-0.5
    i, j = np.arange(t)[:, None], np.arange(t)[None, :]
    logits = np.where((j <= i) & (j > i - w), logits, -np.inf)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    want = np.einsum("bhts,bshd->bthd", probs, np.repeat(v, h, 2).astype(np.float64))
    assert max_err(out, want) <= 1e-5


BF16_CASES = {
    "bf16_T111_w8_bias_f32": Case(seed=30, q_len=111, kv_len=111, window=8, key_mask=True),
    "bf16_noncausal_T63_w16_hb_h": Case(seed=31, q_len=63, kv_len=63, window=16, causal=False, bias_heads=4),
    "bf16_pallas_T111_w8": Case(seed=32, q_len=111, kv_len=111, window=8, key_mask=True, implementation="pallas"),
}


@pytest.mark.parametrize("case", list(BF16_CASES.values()), ids=list(BF16_CASES))
def test_bf16_error_within_twice_reference_bf16_error(case: Case):
    """Kernel error vs a float64 reference <= 2x the error of the reference run in bf16."""
    q, k, v, bias, ct, kwargs = make_inputs(case, dtype=jnp.bfloat16)
    window = case.window
    got_out, got_grads = out_and_grads(
        lambda *a: dma_jax.dma_attention(*a, window, implementation=case.implementation, **kwargs), q, k, v, bias, ct
    )
    low_out, low_grads = out_and_grads(
        lambda *a: dma_jax.dma_attention_reference(*a, window, **kwargs), q, k, v, bias, ct
    )
    assert got_out.dtype == jnp.bfloat16
    assert [g.dtype for g in got_grads] == [jnp.bfloat16] * 3 + [jnp.float32]
    with jax.enable_x64(True):
        as64 = lambda x: jnp.asarray(np.asarray(x, np.float64))
        hi_out, hi_grads = out_and_grads(
            lambda *a: dma_jax.dma_attention_reference(*a, window, **kwargs),
            *(as64(x) for x in (q, k, v, bias, ct)),
        )
        hi_out, hi_grads = np.asarray(hi_out), [np.asarray(g) for g in hi_grads]
    for name, got, low, hi in zip(
        ["out", "dq", "dk", "dv", "dbias"], (got_out, *got_grads), (low_out, *low_grads), (hi_out, *hi_grads)
    ):
        scale = float(np.max(np.abs(hi)))
        err, ref_err = max_err(got, hi), max_err(low, hi)
        assert np.all(np.isfinite(np.asarray(got, np.float32))), name
        print(f"{name}: kernel error {err:.3g}, bf16 reference {ref_err:.3g}, scale {scale:.3g}")
        assert err <= 2 * ref_err + 1e-3 * scale, f"{name}: kernel error {err:.3g}, bf16 reference {ref_err:.3g}"


def test_nan_bias_under_jit_is_never_kept():
    """Under jit a NaN bias key is treated exactly like -inf (and differs from a kept key)."""
    rng = np.random.default_rng(40)
    case = Case(seed=40, q_len=111, kv_len=111, window=8)
    q, k, v, bias, ct, kwargs = make_inputs(case)
    bias = np.asarray(bias).copy()
    spots = rng.random(bias.shape) < 0.1
    bias[spots] = 10.0  # large: these keys would be kept by every later query
    big = jnp.asarray(bias)
    bias[spots] = np.nan
    with_nan = jnp.asarray(bias)
    bias[spots] = -np.inf
    with_inf = jnp.asarray(bias)

    fn = lambda *a: dma_jax.dma_attention(*a, 8, **kwargs)
    nan_out, nan_grads = out_and_grads(fn, q, k, v, with_nan, ct)
    inf_out, inf_grads = out_and_grads(fn, q, k, v, with_inf, ct)
    big_out = jax.jit(fn)(q, k, v, big)
    np.testing.assert_allclose(np.asarray(nan_out), np.asarray(inf_out), rtol=0, atol=1e-6)
    assert max_err(nan_out, big_out) > 0.1, "NaN spots should matter: a large bias would be kept"
    for name, g_nan, g_inf in zip(["dq", "dk", "dv", "dbias"], nan_grads, inf_grads):
        assert np.all(np.isfinite(np.asarray(g_nan))), name
        np.testing.assert_allclose(np.asarray(g_nan), np.asarray(g_inf), rtol=0, atol=1e-5, err_msg=name)
    assert np.all(np.asarray(nan_grads[3])[spots] == 0.0)
    # The reference agrees under jit.
    ref_out = jax.jit(lambda *a: dma_jax.dma_attention_reference(*a, 8, **kwargs))(q, k, v, with_nan)
    assert max_err(ref_out, inf_out) <= FP32_REL_TOL * float(np.max(np.abs(np.asarray(inf_out))))


# --------------------------------------------------------------------------------------------
# Argument errors. A small valid call: q (1, 8, 4, 8); k, v (1, 8, 2, 8); bias (1, 2, 8).


def _valid_args():
    rng = np.random.default_rng(50)
    return dict(
        q=jnp.asarray(rng.standard_normal((1, 8, 4, 8)), jnp.float32),
        k=jnp.asarray(rng.standard_normal((1, 8, 2, 8)), jnp.float32),
        v=jnp.asarray(rng.standard_normal((1, 8, 2, 8)), jnp.float32),
        bias=jnp.asarray(rng.standard_normal((1, 2, 8)), jnp.float32),
        window=3,
    )


def _f32(*shape):
    return jnp.zeros(shape, jnp.float32)


def _f64(*shape):
    """A float64 zeros array, made when called (under ``jax.enable_x64``)."""
    return lambda: jnp.zeros(shape, jnp.float64)


def _bias_with(value):
    """A valid-shaped bias (1, 2, 8) of zeros with ``value`` at key 3 of head 1."""
    bias = np.zeros((1, 2, 8), np.float32)
    bias[0, 1, 3] = value
    return jnp.asarray(bias)


ERROR_CASES = {
    "q_rank": (dict(q=_f32(8, 4, 8)), ValueError, r"\bq must have rank 4"),
    "k_rank": (dict(k=_f32(1, 1, 8, 2, 8)), ValueError, r"\bk must have rank 4"),
    "v_rank": (dict(v=_f32(8, 2, 8)), ValueError, r"\bv must have rank 4"),
    "bias_rank": (dict(bias=_f32(1, 8)), ValueError, r"\bbias must have rank 3"),
    "H_not_multiple_of_Hkv": (dict(k=_f32(1, 8, 3, 8), v=_f32(1, 8, 3, 8), bias=_f32(1, 3, 8)), ValueError, r"Hkv"),
    "Hb_not_dividing_H": (dict(k=_f32(1, 8, 1, 8), v=_f32(1, 8, 1, 8), bias=_f32(1, 3, 8)), ValueError, r"bias heads Hb"),
    "Hb_not_multiple_of_Hkv": (dict(bias=_f32(1, 1, 8)), ValueError, r"bias heads Hb"),
    "batch_k": (dict(k=_f32(2, 8, 2, 8), v=_f32(2, 8, 2, 8)), ValueError, r"batch"),
    "batch_bias": (dict(bias=_f32(2, 2, 8)), ValueError, r"batch"),
    "length_bias": (dict(bias=_f32(1, 2, 7)), ValueError, r"bias .* must have Tk"),
    "length_k_vs_v": (dict(v=_f32(1, 7, 2, 8)), ValueError, r"k and v must have the same shape"),
    "head_dim_k": (dict(k=_f32(1, 8, 2, 6), v=_f32(1, 8, 2, 6)), ValueError, r"head dim"),
    "head_dim_v": (dict(v=_f32(1, 8, 2, 6)), ValueError, r"k and v must have the same shape"),
    "causal_tq_gt_tk": (dict(q=_f32(1, 9, 4, 8)), ValueError, r"Tq <= Tk"),
    "window_zero": (dict(window=0), ValueError, r"window"),
    "window_negative": (dict(window=-2), ValueError, r"window"),
    "window_float": (dict(window=3.0), TypeError, r"window"),
    "window_bool": (dict(window=True), TypeError, r"window"),
    "window_str": (dict(window="3"), TypeError, r"window"),
    "mixed_dtype_k": (dict(k=jnp.zeros((1, 8, 2, 8), jnp.bfloat16)), TypeError, r"q, k and v must share one dtype"),
    "mixed_dtype_v": (dict(v=jnp.zeros((1, 8, 2, 8), jnp.float16)), TypeError, r"q, k and v must share one dtype"),
    "int_qkv": (
        dict(q=jnp.zeros((1, 8, 4, 8), jnp.int32), k=jnp.zeros((1, 8, 2, 8), jnp.int32), v=jnp.zeros((1, 8, 2, 8), jnp.int32)),
        TypeError,
        r"floating",
    ),
    "int_bias": (dict(bias=jnp.zeros((1, 2, 8), jnp.int32)), TypeError, r"\bbias must be a float"),
    "scale_str": (dict(scale="0.5"), TypeError, r"scale"),
    "segment_ids_tq_ne_tk": (
        dict(q=_f32(1, 5, 4, 8), segment_ids=jnp.zeros((1, 8), jnp.int32)),
        ValueError,
        r"segment_ids",
    ),
    "segment_ids_shape": (dict(segment_ids=jnp.zeros((1, 7), jnp.int32)), ValueError, r"segment_ids"),
    "segment_ids_float": (dict(segment_ids=jnp.zeros((1, 8), jnp.float32)), TypeError, r"segment_ids"),
    "segment_ids_not_contiguous": (
        dict(segment_ids=jnp.asarray([[0, 0, 1, 1, 0, 0, 2, 2]], jnp.int32)),
        ValueError,
        r"segment_ids",
    ),
    "key_mask_shape": (dict(key_mask=jnp.ones((1, 7), bool)), ValueError, r"key_mask"),
    "key_mask_batch": (dict(key_mask=jnp.ones((2, 8), bool)), ValueError, r"key_mask"),
    "key_mask_dtype": (dict(key_mask=jnp.ones((1, 8), jnp.int32)), TypeError, r"key_mask"),
    "implementation_unknown": (dict(implementation="triton"), ValueError, r"implementation"),
    "causal_none": (dict(causal=None), TypeError, r"causal must be True or False"),
    "causal_zero": (dict(causal=0), TypeError, r"causal must be True or False"),
    "causal_str": (dict(causal="yes"), TypeError, r"causal must be True or False"),
    "scale_nan": (dict(scale=float("nan")), ValueError, r"scale must be finite and > 0"),
    "scale_inf": (dict(scale=float("inf")), ValueError, r"scale must be finite and > 0"),
    "scale_zero": (dict(scale=0.0), ValueError, r"scale must be finite and > 0"),
    "scale_negative": (dict(scale=-0.5), ValueError, r"scale must be finite and > 0"),
    "scale_bool": (dict(scale=True), TypeError, r"scale"),
    "head_dim_zero": (dict(q=_f32(1, 8, 4, 0), k=_f32(1, 8, 2, 0), v=_f32(1, 8, 2, 0)), ValueError, r"D must be >= 1"),
    "heads_zero": (dict(q=_f32(1, 8, 0, 8)), ValueError, r"H must be >= 1"),
    "kv_heads_zero": (dict(k=_f32(1, 8, 0, 8), v=_f32(1, 8, 0, 8)), ValueError, r"Hkv must be >= 1"),
    "bias_heads_zero": (dict(bias=_f32(1, 0, 8)), ValueError, r"Hb must be >= 1"),
    "float64_on_pallas": (dict(implementation="pallas", q=_f64(1, 8, 4, 8), k=_f64(1, 8, 2, 8), v=_f64(1, 8, 2, 8)),
                          TypeError, r"float32 at most"),
    "nan_bias": (dict(bias=_bias_with(np.nan)), ValueError, r"\bbias contains NaN"),
    "pos_inf_bias": (dict(bias=_bias_with(np.inf)), ValueError, r"\bbias contains \+inf"),
}


@pytest.mark.parametrize("overrides,error,match", list(ERROR_CASES.values()), ids=list(ERROR_CASES))
def test_argument_errors(overrides, error, match):
    args = _valid_args()
    with jax.enable_x64(True):  # float64 inputs stay float64
        args.update({name: value() if callable(value) else value for name, value in overrides.items()})
        q, k, v, bias, window = (args.pop(name) for name in ("q", "k", "v", "bias", "window"))
        with pytest.raises(error, match=match):
            dma_jax.dma_attention(q, k, v, bias, window, **args)


@pytest.mark.parametrize("shapes", [((0, 8, 4, 8), (0, 8, 2, 8), (0, 2, 8)), ((1, 0, 4, 8), (1, 8, 2, 8), (1, 2, 8)),
                                    ((1, 5, 4, 8), (1, 0, 2, 8), (1, 2, 0))], ids=["B=0", "Tq=0", "Tk=0-non-causal"])
@pytest.mark.parametrize("implementation", ["xla", "pallas", "pallas_tpu"])
def test_empty_inputs_give_an_empty_or_zero_output(shapes, implementation):
    """B = 0, Tq = 0 or (not causal) Tk = 0: nothing to attend from or to, so zeros of q's shape,
    with zero gradients (these used to crash with a ZeroDivisionError deep inside)."""
    q, k, bias = _f32(*shapes[0]), _f32(*shapes[1]), _f32(*shapes[2])
    causal = shapes[1][1] > 0
    out = dma_jax.dma_attention(q, k, k, bias, 4, causal=causal, implementation=implementation)
    assert out.shape == q.shape and not np.asarray(out).any()
    grads = jax.grad(lambda *a: dma_jax.dma_attention(*a, 4, causal=causal, implementation=implementation).sum(),
                     argnums=(0, 1, 2, 3))(q, k, k, bias)
    assert [g.shape for g in grads] == [q.shape, k.shape, k.shape, bias.shape]


@pytest.mark.parametrize(
    "overrides,error,match",
    [
        pytest.param(dict(window=0), ValueError, r"window", id="window_zero"),
        pytest.param(dict(bias=_f32(1, 3, 8)), ValueError, r"bias heads Hb", id="Hb"),
        pytest.param(dict(key_mask=jnp.ones((1, 8), jnp.int32)), TypeError, r"key_mask", id="key_mask_dtype"),
    ],
)
def test_argument_errors_under_jit(overrides, error, match):
    """The static checks also fire while tracing under jit."""
    args = _valid_args()
    args.update(overrides)
    q, k, v, bias, window = (args.pop(name) for name in ("q", "k", "v", "bias", "window"))
    with pytest.raises(error, match=match):
        jax.jit(lambda q_, k_, v_, b_: dma_jax.dma_attention(q_, k_, v_, b_, window, **args))(q, k, v, bias)


def test_valid_small_call_runs():
    """The base call of the error tests is valid (so each error comes from its override)."""
    args = _valid_args()
    out = dma_jax.dma_attention(args["q"], args["k"], args["v"], args["bias"], args["window"])
    ref = dma_jax.dma_attention_reference(args["q"], args["k"], args["v"], args["bias"], args["window"])
    assert max_err(out, ref) <= 1e-5
    # Not causal, Tq > Tk is allowed.
    q = jnp.asarray(np.random.default_rng(51).standard_normal((1, 11, 4, 8)), jnp.float32)
    out = dma_jax.dma_attention(q, args["k"], args["v"], args["bias"], 3, causal=False)
    ref = dma_jax.dma_attention_reference(q, args["k"], args["v"], args["bias"], 3, causal=False)
    assert max_err(out, ref) <= 1e-5
