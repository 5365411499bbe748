"""dma_jax.ops.dense: DMA in the dense regime (window None or >= Tk) as dense attention with the
bias folded into extra head columns, run here through XLA with the same folded inputs cuDNN gets
(``DenseConfig("xla")``); and the rule by which ``dma_attention`` chooses that path on a GPU."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dma_jax
from dma_jax import DenseConfig, PallasConfig
from dma_jax.ops import attention
from dma_jax.ops.dense import fold_bias
from test_attention import FP32_REL_TOL, Case, make_inputs, max_err, out_and_grads

NAMES = ["out", "dq", "dk", "dv", "dbias"]
XLA_DENSE = DenseConfig("xla")

CASES = {
    "gqa_hb_hkv_keymask_ties": Case(seed=81, q_len=63, kv_len=63, window=None, key_mask=True, int_bias=True),
    "hb_h_neginf": Case(seed=82, q_len=63, kv_len=63, window=63, bias_heads=4, neg_inf_frac=0.3),
    "tq_lt_tk_bottom_right": Case(seed=83, q_len=20, kv_len=63, window=100, key_mask=True),
    "decode_one_query_keymask": Case(seed=88, q_len=1, kv_len=63, window=None, key_mask=True, neg_inf_frac=0.2),
    "noncausal_tq_ne_tk": Case(seed=84, q_len=40, kv_len=63, window=None, causal=False, neg_inf_frac=0.2),
    "segments_keymask_hb_h": Case(seed=85, q_len=63, kv_len=63, window=None, segments=True, key_mask=True,
                                  bias_heads=4),
    "noncausal_segments": Case(seed=86, q_len=63, kv_len=63, window=None, causal=False, segments=True),
    "mqa_d80_scale": Case(seed=87, q_len=40, kv_len=40, window=None, kv_heads=1, bias_heads=4, head_dim=80,
                          scale=0.3),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_dense_path_matches_reference_fp32(case):
    q, k, v, bias, ct, kwargs = make_inputs(case)
    got = out_and_grads(lambda *a: dma_jax.dma_attention(*a, case.window, implementation=XLA_DENSE, **kwargs),
                        q, k, v, bias, ct)
    want = out_and_grads(lambda *a: dma_jax.dma_attention_reference(*a, case.window, **kwargs), q, k, v, bias, ct)
    got, want = dict(zip(NAMES, (got[0], *got[1]))), dict(zip(NAMES, (want[0], *want[1])))
    for name in NAMES:
        assert np.isfinite(np.asarray(got[name])).all(), name
        bound = FP32_REL_TOL * max(float(np.max(np.abs(np.asarray(want[name])))), 1e-2)
        assert max_err(got[name], want[name]) <= bound, (name, max_err(got[name], want[name]), bound)


@pytest.mark.parametrize("case", [  # 5-7 s each on a fresh clone; the fp32 table above has every case
    pytest.param(CASES["gqa_hb_hkv_keymask_ties"], id="hb_hkv"),
    pytest.param(CASES["hb_h_neginf"], id="hb_h", marks=pytest.mark.slow),
    pytest.param(CASES["tq_lt_tk_bottom_right"], id="tq_lt_tk", marks=pytest.mark.slow)])
def test_bf16_error_within_twice_the_bf16_reference_error(case):
    """The bias split into a high and a low bf16 column keeps the folded path as accurate as a
    dense bf16 reference (against float64)."""
    case = dataclasses.replace(case, head_dim=64)
    q, k, v, bias, ct, kwargs = make_inputs(case, dtype=jnp.bfloat16)
    bias = bias * 8  # biases of several units: 8 bits of mantissa alone would lose them
    got = out_and_grads(lambda *a: dma_jax.dma_attention(*a, case.window, implementation=XLA_DENSE, **kwargs),
                        q, k, v, bias, ct)
    low = out_and_grads(lambda *a: dma_jax.dma_attention_reference(*a, case.window, **kwargs), q, k, v, bias, ct)
    with jax.enable_x64(True):
        as64 = lambda x: jnp.asarray(np.asarray(x, np.float64))  # noqa: E731
        high = out_and_grads(lambda *a: dma_jax.dma_attention_reference(*a, case.window, **kwargs),
                             *(as64(x) for x in (q, k, v, bias, ct)))
        high = [np.asarray(x) for x in (high[0], *high[1])]
    for name, g, lo, hi in zip(NAMES, (got[0], *got[1]), (low[0], *low[1]), high):
        err, ref_err, scale = max_err(g, hi), max_err(lo, hi), float(np.max(np.abs(hi)))
        assert err <= 2 * ref_err + 1e-3 * scale, f"{name}: dense path {err:.3g}, bf16 reference {ref_err:.3g}"


def test_folded_logits_equal_scaled_scores_plus_bias():
    rng = np.random.default_rng(3)
    q = jnp.asarray(rng.standard_normal((1, 5, 4, 16)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((1, 7, 2, 16)), jnp.float32)
    bias = jnp.asarray(rng.standard_normal((1, 4, 7)), jnp.float32)  # Hb = H = 4: one-hot pairs
    qf, kf, vf, valid = fold_bias(q, k, k, bias, scale=0.25)
    assert qf.shape[-1] == kf.shape[-1] == vf.shape[-1] == 24 and bool(valid.all())  # 16 + 2 * 2, padded to 24
    folded = jnp.einsum("bqhd,bkhd->bhqk", qf, jnp.repeat(kf, 2, axis=2)) * 0.25
    direct = jnp.einsum("bqhd,bkhd->bhqk", q, jnp.repeat(k, 2, axis=2)) * 0.25 + bias[:, :, None, :]
    np.testing.assert_allclose(folded, direct, atol=1e-5)


@pytest.fixture
def on_gpu(monkeypatch):
    monkeypatch.setattr(attention.jax, "default_backend", lambda: "gpu")


def _call(q_len=64, kv_len=64, heads=4, kv_heads=2, bias_heads=2, dim=64, dtype=jnp.bfloat16):
    q = jnp.zeros((1, q_len, heads, dim), dtype)
    k = jnp.zeros((1, kv_len, kv_heads, dim), dtype)
    return q, k, jnp.zeros((1, bias_heads, kv_len))


@pytest.mark.parametrize("window,kwargs,dense", [
    (None, {}, True), (64, {}, True), (4096, {}, True), (63, {}, False),
    (None, dict(dtype=jnp.float32), False), (None, dict(dim=256), False),
    (None, dict(dim=252, heads=8, bias_heads=8), False), (None, dict(dim=248, heads=8, bias_heads=8), True),
    (None, dict(q_len=1), False), (None, dict(q_len=16), False),
], ids=["none", "w=T", "w>T", "w<T", "fp32", "d256", "d252-hb=h", "d248-hb=h", "decode", "chunk-Tq<Tk"])
def test_the_automatic_choice_on_a_gpu(on_gpu, window, kwargs, dense):
    q, k, bias = _call(**kwargs)
    config = attention.choose_path(q, k, bias, window, segment_ids=None, implementation=None)
    assert isinstance(config, DenseConfig if dense else PallasConfig)


def test_segments_and_explicit_choices_stay_with_the_kernels(on_gpu):
    q, k, bias = _call()
    segments = jnp.zeros((1, 64), jnp.int32)
    assert isinstance(attention.choose_path(q, k, bias, None, segment_ids=segments, implementation=None), PallasConfig)
    assert isinstance(attention.choose_path(q, k, bias, None, segment_ids=None, implementation="pallas"), PallasConfig)
    assert attention.choose_path(q, k, bias, None, segment_ids=segments, implementation=XLA_DENSE) == XLA_DENSE


def test_the_cpu_default_stays_xla_and_dense_outside_its_regime_raises():
    q, k, bias = _call()
    assert isinstance(attention.choose_path(q, k, bias, None, segment_ids=None, implementation=None), dma_jax.XlaConfig)
    with pytest.raises(ValueError, match="window 8 < Tk = 64"):
        attention.choose_path(q, k, bias, 8, segment_ids=None, implementation=XLA_DENSE)
    with pytest.raises(ValueError, match="bf16/fp16"):
        attention.choose_path(q.astype(jnp.float32), k.astype(jnp.float32), bias, None, segment_ids=None,
                              implementation=DenseConfig("cudnn"))
