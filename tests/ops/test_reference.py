"""``selection_mask`` and ``dma_attention_reference`` against the naive loop oracle, in float64.

Forward outputs and gradients of all four inputs (q, k, v, bias) are compared; rows that keep
no key must output exact zeros and get zero (finite) gradients.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dma_jax
from problems import random_qkv
from naive import kept_sets_to_mask, naive_attention_with_kept, naive_dma_attention, naive_dma_fn, naive_kept_sets
from case_tables import case_params

FWD_TOL = dict(rtol=1e-11, atol=1e-11)
GRAD_TOL = dict(rtol=1e-9, atol=1e-10)


@dataclasses.dataclass(frozen=True)
class Case:
    seed: int
    window: int | None
    batch: int = 2
    q_len: int = 12
    kv_len: int = 12
    heads: int = 2
    kv_heads: int = 1
    bias_heads: int = 1
    head_dim: int = 4
    causal: bool = True
    scale: float | None = None
    bias_kind: str = "normal"  # normal | ints | signed_zeros | constant
    neg_inf_frac: float = 0.0
    neg_inf_head: tuple[int, int] | None = None  # (b, hb) row set entirely to -inf
    segments: tuple[tuple[int, ...], ...] | None = None
    key_mask_frac: float | None = None  # fraction of False keys
    key_mask_false_batch: int | None = None  # batch row whose keys are all masked
    key_mask_false_prefix: int = 0  # first keys masked in every batch row
    expect_empty_rows: bool = False


CASES = {
    "ties_int_bias": Case(seed=1, window=3, bias_kind="ints"),
    "ties_signed_zeros": Case(seed=2, window=2, heads=2, kv_heads=2, bias_heads=2, bias_kind="signed_zeros"),
    "segments": Case(
        seed=3,
        window=2,
        bias_heads=2,
        bias_kind="ints",
        segments=((0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2), (5, 5, 5, 5, 5, 7, 7, 7, 7, 7, 7, 9)),
    ),
    "key_mask": Case(seed=4, window=3, key_mask_frac=0.35),
    "neg_inf_bias": Case(seed=5, window=3, neg_inf_frac=0.35),
    "gqa_hb_eq_hkv": Case(seed=6, window=3, q_len=12, kv_len=12, heads=4, kv_heads=2, bias_heads=2),
    "gqa_hb_eq_h": Case(seed=7, window=3, q_len=12, kv_len=12, heads=4, kv_heads=2, bias_heads=4),
    "gqa_hkv1_hb2": Case(seed=8, window=2, q_len=12, kv_len=12, heads=4, kv_heads=1, bias_heads=2, bias_kind="ints"),
    "tq_lt_tk_causal": Case(seed=9, window=3, q_len=5, kv_len=12, bias_heads=2, heads=2, kv_heads=2),
    "tq_lt_tk_causal_key_mask": Case(seed=10, window=2, q_len=4, kv_len=12, bias_kind="ints", key_mask_frac=0.3),
    "tq1_decode": Case(seed=11, window=4, q_len=1, kv_len=12, heads=4, kv_heads=2, bias_heads=4),
    "noncausal": Case(seed=12, window=3, causal=False),
    "noncausal_segments_ties": Case(
        seed=13,
        window=2,
        causal=False,
        bias_kind="ints",
        segments=((0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2), (3, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4)),
    ),
    "noncausal_tq_ne_tk": Case(seed=14, window=4, causal=False, q_len=7, kv_len=12, key_mask_frac=0.3),
    "noncausal_tq_gt_tk": Case(seed=15, window=3, causal=False, q_len=12, kv_len=7),
    "window_none": Case(seed=16, window=None, key_mask_frac=0.2),
    "window_none_noncausal_segments": Case(
        seed=17, window=None, causal=False, segments=((0,) * 5 + (1,) * 7, (2,) * 9 + (3,) * 3)
    ),
    "window_1": Case(seed=18, window=1, heads=2, kv_heads=2, bias_heads=2),
    "window_1_ties": Case(seed=19, window=1, bias_kind="ints", neg_inf_frac=0.2),
    "window_eq_T": Case(seed=20, window=12),
    "window_gt_T": Case(seed=21, window=50, neg_inf_frac=0.2),
    "custom_scale": Case(seed=22, window=3, scale=0.37),
    "empty_batch_row_key_mask": Case(seed=23, window=3, key_mask_frac=0.0, key_mask_false_batch=1, expect_empty_rows=True),
    "empty_head_all_neg_inf": Case(
        seed=24, window=2, heads=2, kv_heads=1, bias_heads=2, neg_inf_head=(0, 1), expect_empty_rows=True
    ),
    "empty_causal_prefix": Case(seed=25, window=2, key_mask_frac=0.0, key_mask_false_prefix=4, expect_empty_rows=True),
    "empty_noncausal_all_masked": Case(
        seed=26, window=None, causal=False, key_mask_frac=0.0, key_mask_false_batch=0, expect_empty_rows=True
    ),
    "everything": Case(
        seed=27,
        window=2,
        heads=4,
        kv_heads=2,
        bias_heads=4,
        bias_kind="ints",
        neg_inf_frac=0.15,
        key_mask_frac=0.2,
        segments=((0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1), (4, 4, 6, 6, 6, 6, 6, 6, 8, 8, 8, 8)),
    ),
}


def make_inputs(case: Case):
    rng = np.random.default_rng(case.seed)
    b, tk, hb = case.batch, case.kv_len, case.bias_heads
    q, k, v = random_qkv(rng, case)
    if case.bias_kind == "normal":
        bias = rng.standard_normal((b, hb, tk))
    elif case.bias_kind == "ints":
        bias = rng.integers(-2, 3, size=(b, hb, tk)).astype(np.float64)
    elif case.bias_kind == "signed_zeros":
        bias = rng.choice(np.array([-0.0, 0.0, 0.5]), size=(b, hb, tk))
    else:
        raise ValueError(case.bias_kind)
    if case.neg_inf_frac:
        bias = np.where(rng.random(bias.shape) < case.neg_inf_frac, -np.inf, bias)
    if case.neg_inf_head is not None:
        bias[case.neg_inf_head] = -np.inf
    segment_ids = None if case.segments is None else np.asarray(case.segments, dtype=np.int32)
    key_mask = None
    if case.key_mask_frac is not None:
        key_mask = rng.random((b, tk)) >= case.key_mask_frac
        if case.key_mask_false_batch is not None:
            key_mask[case.key_mask_false_batch] = False
        key_mask[:, : case.key_mask_false_prefix] = False
    cotangent = rng.standard_normal(q.shape)
    return q, k, v, bias, segment_ids, key_mask, cotangent


def _selection_kwargs(case, segment_ids, key_mask):
    return dict(
        causal=case.causal,
        segment_ids=None if segment_ids is None else jnp.asarray(segment_ids),
        key_mask=None if key_mask is None else jnp.asarray(key_mask),
    )


def _assert_close(name, got, want, tol):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    assert np.all(np.isfinite(got)), f"{name}: non-finite values"
    np.testing.assert_allclose(got, want, err_msg=name, **tol)


# Cases whose every feature another case of the table also has ("everything" holds GQA with a bias
# head per query head, a key mask and -inf keys; the other noncausal, window-1, w >= T and Tq < Tk
# cases hold theirs; "gqa_hb_eq_hkv" has GQA, "window_none_noncausal_segments" w = None,
# "noncausal_tq_ne_tk" Tq != Tk, the causal empty rows an empty row's gradients, "window_1_ties"
# ties; Tq = 1 and a custom scale also run in tests/ops/test_attention.py's table): deselected by
# default, run with -m slow.
SLOW_CASES = {"gqa_hb_eq_h", "tq_lt_tk_causal", "noncausal", "window_1", "window_eq_T", "key_mask", "neg_inf_bias",
              "gqa_hkv1_hb2", "window_none", "noncausal_tq_gt_tk", "empty_noncausal_all_masked", "ties_int_bias",
              "tq1_decode", "custom_scale"}


@pytest.mark.parametrize("case", case_params(CASES, SLOW_CASES))
def test_reference_matches_naive(x64, case: Case):
    q, k, v, bias, segment_ids, key_mask, cotangent = make_inputs(case)
    kept = naive_kept_sets(
        bias, case.window, case.q_len, causal=case.causal, segment_ids=segment_ids, key_mask=key_mask
    )
    want_mask = kept_sets_to_mask(kept, case.kv_len)
    kwargs = _selection_kwargs(case, segment_ids, key_mask)

    # 1. The kept sets.
    got_mask = np.asarray(dma_jax.selection_mask(jnp.asarray(bias), case.window, case.q_len, **kwargs))
    assert got_mask.dtype == np.bool_
    assert got_mask.shape == want_mask.shape, got_mask.shape
    if not np.array_equal(got_mask, want_mask):
        diff = np.argwhere(got_mask != want_mask)[:10]
        pytest.fail(f"selection_mask differs from the naive kept sets at (b, hb, t, j) = {diff.tolist()}")
    # Sanity of the oracle itself: at most `window` keys per query.
    if case.window is not None:
        assert want_mask.sum(-1).max() <= case.window

    # 2. Forward and gradients of all four inputs.
    args = tuple(jnp.asarray(x) for x in (q, k, v, bias))

    def ref_fn(q_, k_, v_, b_):
        return dma_jax.dma_attention_reference(q_, k_, v_, b_, case.window, scale=case.scale, **kwargs)

    def naive_fn(q_, k_, v_, b_):
        return naive_attention_with_kept(q_, k_, v_, b_, kept, scale=case.scale)

    @jax.jit
    def ref_out_and_grads(q_, k_, v_, b_, ct):
        out, vjp = jax.vjp(ref_fn, q_, k_, v_, b_)
        return out, vjp(ct)

    ref_out, ref_grads = ref_out_and_grads(*args, jnp.asarray(cotangent))
    naive_out, naive_vjp = jax.vjp(naive_fn, *args)
    assert ref_out.dtype == jnp.float64
    assert ref_out.shape == (case.batch, case.q_len, case.heads, case.head_dim)
    _assert_close("output", ref_out, naive_out, FWD_TOL)
    naive_grads = naive_vjp(jnp.asarray(cotangent))
    for name, got, want in zip("q k v bias".split(), ref_grads, naive_grads):
        _assert_close(f"d{name}", got, want, GRAD_TOL)

    # 3. Queries that keep no key: exact zeros, zero gradient for their q row.
    rows_per_bias = case.heads // case.bias_heads
    empty = [
        (b, t, h)
        for b in range(case.batch)
        for t in range(case.q_len)
        for h in range(case.heads)
        if not kept[b][h // rows_per_bias][t]
    ]
    if case.expect_empty_rows:
        assert empty, "the case was meant to have queries that keep no key"
    for b, t, h in empty:
        assert np.all(np.asarray(ref_out[b, t, h]) == 0.0), (b, t, h)
        assert np.all(np.asarray(ref_grads[0][b, t, h]) == 0.0), (b, t, h)
    # Keys that no query keeps get no bias gradient (this includes every -inf key).
    never_kept = ~want_mask.any(axis=2)  # (B, Hb, Tk)
    assert np.all(np.asarray(ref_grads[3])[never_kept] == 0.0)


@pytest.mark.parametrize(
    "causal,segments",
    [
        pytest.param(True, False, id="causal"),
        pytest.param(False, True, id="noncausal_segments"),
        pytest.param(False, False, id="noncausal"),
    ],
)
@pytest.mark.parametrize("window", [2, None], ids=["w2", "wNone"])
def test_selection_mask_shape(causal, segments, window):
    """selection_mask is documented to return bool (B, Hb, Tq, Tk) in every mode."""
    rng = np.random.default_rng(300)
    bias = jnp.asarray(rng.standard_normal((2, 3, 9)), jnp.float32)
    segment_ids = jnp.asarray(np.repeat(np.array([[0, 1, 2], [4, 5, 6]]), 3, axis=1)) if segments else None
    mask = dma_jax.selection_mask(bias, window, 9, causal=causal, segment_ids=segment_ids)
    assert mask.shape == (2, 3, 9, 9)
    assert mask.dtype == jnp.bool_


def test_empty_rows_have_zero_gradients_everywhere(x64):
    """If no query keeps any key, the output is 0 and every gradient is exactly 0."""
    rng = np.random.default_rng(100)
    q = jnp.asarray(rng.standard_normal((2, 8, 2, 4)))
    k = jnp.asarray(rng.standard_normal((2, 8, 1, 4)))
    v = jnp.asarray(rng.standard_normal((2, 8, 1, 4)))
    bias = np.asarray(rng.standard_normal((2, 1, 8)))
    bias[1] = -np.inf
    key_mask = jnp.asarray(np.array([[False] * 8, [True] * 8]))
    bias = jnp.asarray(bias)

    def loss(q_, k_, v_, b_):
        out = dma_jax.dma_attention_reference(q_, k_, v_, b_, 3, key_mask=key_mask)
        return jnp.sum(out * out), out

    grads, out = jax.grad(loss, argnums=(0, 1, 2, 3), has_aux=True)(q, k, v, bias)
    assert np.all(np.asarray(out) == 0.0)
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g)))
        assert np.all(np.asarray(g) == 0.0)


def _sliding_window_attention(q, k, v, bias, window, scale=None):
    """Dense causal attention over keys ``t' - window < j <= t'`` (t' = t + Tk - Tq)."""
    _, tq, h, d = q.shape
    tk, hkv = k.shape[1], k.shape[2]
    hb = bias.shape[1]
    scale = d**-0.5 if scale is None else scale
    kv_head = np.arange(h) // (h // hkv)
    bias_head = np.arange(h) // (h // hb)
    kk, vv, bb = k[:, :, kv_head], v[:, :, kv_head], bias[:, bias_head]  # per query head
    logits = jnp.einsum("bthd,bshd->bhts", q, kk) * scale + bb[:, :, None, :]
    t = np.arange(tq)[:, None] + (tk - tq)
    j = np.arange(tk)[None, :]
    band = (j <= t) & (j > t - window)
    logits = jnp.where(band, logits, -jnp.inf)
    probs = jax.nn.softmax(logits, axis=-1)
    return jnp.einsum("bhts,bshd->bthd", probs, vv)


@pytest.mark.parametrize(
    "q_len,kv_len,window,heads,kv_heads,bias_heads",
    [
        pytest.param(12, 12, 3, 2, 1, 1, id="T12_w3"),
        pytest.param(12, 12, 1, 2, 2, 2, id="T12_w1"),
        pytest.param(5, 12, 4, 4, 2, 4, id="Tq5_Tk12_w4"),
    ],
)
def test_constant_bias_is_sliding_window(x64, q_len, kv_len, window, heads, kv_heads, bias_heads):
    """With a bias constant along keys, every query keeps its last ``window`` keys."""
    rng = np.random.default_rng(200 + window + q_len)
    b, d = 2, 4
    q = jnp.asarray(rng.standard_normal((b, q_len, heads, d)))
    k = jnp.asarray(rng.standard_normal((b, kv_len, kv_heads, d)))
    v = jnp.asarray(rng.standard_normal((b, kv_len, kv_heads, d)))
    # Constant along keys, different per batch row and bias head.
    bias = jnp.asarray(np.broadcast_to(rng.standard_normal((b, bias_heads, 1)), (b, bias_heads, kv_len)).copy())
    cotangent = jnp.asarray(rng.standard_normal((b, q_len, heads, d)))

    mask = np.asarray(dma_jax.selection_mask(bias, window, q_len))
    t = np.arange(q_len)[:, None] + (kv_len - q_len)
    j = np.arange(kv_len)[None, :]
    band = (j <= t) & (j > t - window)
    assert np.array_equal(mask, np.broadcast_to(band, mask.shape))

    def out_and_grads(fn):
        @jax.jit
        def run(*args):
            out, vjp = jax.vjp(fn, *args)
            return out, vjp(cotangent)

        return run(q, k, v, bias)

    out, grads = out_and_grads(lambda *a: dma_jax.dma_attention_reference(*a, window))
    want, want_grads = out_and_grads(lambda *a: _sliding_window_attention(*a, window))
    _assert_close("output", out, want, FWD_TOL)
    for name, got, exp in zip("q k v bias".split(), grads, want_grads):
        _assert_close(f"d{name}", got, exp, GRAD_TOL)


def test_naive_oracle_hand_example():
    """The oracle itself, on a case worked out by hand (guards the tests' ground truth)."""
    bias = np.array([[[1.0, 3.0, 3.0, 0.0, -np.inf, 3.0]]])
    kept = naive_kept_sets(bias, 2, 6)[0][0]
    # Query 0 sees {0}; 1 sees {0,1}; 2: bias 3 at 1 and 2 beat 1 at 0; 3: key 3 (0.0) loses;
    # 4: key 4 is -inf; 5: three keys tie at 3.0, the larger indices 5 and 2 win.
    assert kept == [[0], [0, 1], [1, 2], [1, 2], [1, 2], [2, 5]]
    # Bottom-right causal with Tq=2: the queries are positions 4 and 5.
    assert naive_kept_sets(bias, 2, 2)[0][0] == [[1, 2], [2, 5]]
    # Not causal: everyone keeps the top 2 of all keys.
    assert naive_kept_sets(bias, 2, 3, causal=False)[0][0] == [[2, 5]] * 3
    # Segments and key mask.
    segment_ids = np.array([[0, 0, 0, 1, 1, 1]])
    key_mask = np.array([[True, True, False, True, True, True]])
    got = naive_kept_sets(bias, 2, 6, segment_ids=segment_ids, key_mask=key_mask)[0][0]
    assert got == [[0], [0, 1], [0, 1], [3], [3], [3, 5]]
    # Window None keeps every visible key.
    assert naive_kept_sets(bias, None, 6)[0][0][5] == [0, 1, 2, 3, 5]


def test_naive_oracle_window_1_copies_values(x64):
    """With window 1 the oracle returns the value row of the single kept key, grad-able in v."""
    rng = np.random.default_rng(400)
    q = jnp.asarray(rng.standard_normal((1, 4, 2, 4)))
    k = jnp.asarray(rng.standard_normal((1, 4, 1, 4)))
    v = jnp.asarray(rng.standard_normal((1, 4, 1, 4)))
    bias = jnp.asarray([[[0.0, 2.0, -np.inf, 1.0]]])
    out = np.asarray(naive_dma_attention(q, k, v, bias, 1))
    best = [0, 1, 1, 1]  # query 2 cannot keep the -inf key 2
    for t, j in enumerate(best):
        np.testing.assert_array_equal(out[0, t], np.repeat(np.asarray(v)[0, j], 2, axis=0))
    dv = jax.grad(lambda v_: jnp.sum(naive_dma_fn(bias, 1, 4)(q, k, v_, bias)))(v)
    np.testing.assert_array_equal(np.asarray(dv)[0, :, 0, 0], [2.0, 6.0, 0.0, 0.0])
