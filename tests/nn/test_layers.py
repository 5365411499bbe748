"""dma_jax.nn: RoPE, the DMA layer against a by-hand computation, the baselines, interop."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen, nnx

from dma_jax import dma_attention_reference, live_ranges
from dma_jax.nn import DynamicMaskAttention, MultiHeadAttention, SlidingWindowAttention, apply_rope

D_MODEL, HEADS, KV_HEADS, HEAD_DIM = 32, 4, 2, 8


def _x(seed=0, batch=2, length=37):
    return jax.random.normal(jax.random.key(seed), (batch, length, D_MODEL))


def test_rope_depends_only_on_relative_position():
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32)
    dot = lambda t, s: float(jnp.sum(apply_rope(q, jnp.array([[t]])) * apply_rope(k, jnp.array([[s]]))))
    assert dot(5, 2) == pytest.approx(dot(13, 10), rel=1e-5)
    assert dot(5, 2) != pytest.approx(dot(5, 3), rel=1e-3)
    np.testing.assert_allclose(apply_rope(q, jnp.zeros((1, 1), jnp.int32)), q)


def _naive_causal(q, k, v, window=None, segment_ids=None):
    """Plain softmax attention, float64, with GQA by repeating kv heads."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    group = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, group, 2), np.repeat(v, group, 2)
    logits = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(q.shape[-1])
    t, s = np.arange(q.shape[1])[:, None], np.arange(k.shape[1])[None, :]
    mask = (s <= t) & ((s > t - window) if window else True)
    mask = np.broadcast_to(mask, logits.shape[:1] + mask.shape)
    if segment_ids is not None:
        mask = mask & (segment_ids[:, :, None] == segment_ids[:, None, :])
    logits = np.where(mask[:, None], logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return np.einsum("bhts,bshd->bthd", p / p.sum(-1, keepdims=True), v)


def _projections_by_hand(layer, x):
    w = lambda lin: np.asarray(lin.kernel[...], np.float64)
    xb = np.asarray(x, np.float64)
    batch, length = x.shape[:2]
    q = (xb @ w(layer.q_proj)).reshape(batch, length, HEADS, HEAD_DIM)
    k = (xb @ w(layer.k_proj)).reshape(batch, length, KV_HEADS, HEAD_DIM)
    v = (xb @ w(layer.v_proj)).reshape(batch, length, KV_HEADS, HEAD_DIM)
    positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
    rope = lambda a: np.asarray(apply_rope(jnp.asarray(a, jnp.float32), positions), np.float64)
    return rope(q), rope(k), v, w(layer.o_proj)


@pytest.mark.parametrize("bias_kind", ["exp", "linear"])
@pytest.mark.parametrize("bias_heads", [KV_HEADS, HEADS], ids=["hb_hkv", "hb_h"])
def test_dma_layer_matches_by_hand_computation(bias_kind, bias_heads):
    layer = DynamicMaskAttention(D_MODEL, HEADS, KV_HEADS, HEAD_DIM, 6, bias_heads=bias_heads, bias_kind=bias_kind,
                                 rngs=nnx.Rngs(1))
    layer.A[...] = jnp.asarray(np.random.default_rng(2).normal(size=(bias_heads,)), jnp.float32)
    x = _x()
    q, k, v, wo = _projections_by_hand(layer, x)
    dt = v.reshape(2, 37, -1) @ np.asarray(layer.dt_proj.kernel[...], np.float64) + np.asarray(layer.dt_proj.bias[...])
    score = np.asarray(layer.A[...], np.float64) * np.log1p(np.exp(dt))
    bias = np.exp(score) if bias_kind == "exp" else score
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    attended = dma_attention_reference(f32(q), f32(k), f32(v), f32(np.transpose(bias, (0, 2, 1))), 6)
    want = np.asarray(attended, np.float64).reshape(2, 37, -1) @ wo
    np.testing.assert_allclose(np.asarray(layer(x)), want, atol=2e-4)


def test_dma_recency_adds_a_learned_slope_times_position():
    """``recency``: the key score gains slope * position; with a steep slope the kept keys are the
    latest w, whatever the content; without it there is no slope parameter."""
    plain = DynamicMaskAttention(D_MODEL, HEADS, KV_HEADS, HEAD_DIM, 5, rngs=nnx.Rngs(1))
    ramped = DynamicMaskAttention(D_MODEL, HEADS, KV_HEADS, HEAD_DIM, 5, recency=0.25, rngs=nnx.Rngs(1))
    assert plain.recency_slope is None and ramped.recency_slope.shape == (KV_HEADS,)
    for layer in (plain, ramped):
        layer.A[...] = jnp.full((KV_HEADS,), 2.0)
    v = jnp.asarray(np.random.default_rng(3).normal(size=(2, 37, KV_HEADS, HEAD_DIM)), jnp.float32)
    positions = jnp.asarray(np.random.default_rng(4).integers(0, 100, (2, 37)), jnp.int32)
    want = plain.key_bias(v) + 0.25 * positions[:, None, :]
    np.testing.assert_allclose(np.asarray(ramped.key_bias(v, positions)), np.asarray(want), rtol=1e-6, atol=1e-5)
    ramped.recency_slope[...] = jnp.full((KV_HEADS,), 1e3)
    ends = np.asarray(live_ranges(ramped.key_bias(v), 5))
    np.testing.assert_array_equal(ends, np.broadcast_to(np.minimum(np.arange(37) + 5, 37), ends.shape))
    grads = nnx.grad(lambda m: jnp.sum(m(_x()) ** 2))(ramped)
    assert np.all(np.isfinite(np.asarray(grads.recency_slope[...])))


def test_dma_layer_starts_as_sliding_window():
    """A = 0 at init: constant bias, so DMA with window w equals SWA of width w."""
    dma = DynamicMaskAttention(D_MODEL, HEADS, KV_HEADS, HEAD_DIM, 5, rngs=nnx.Rngs(0))
    swa = SlidingWindowAttention(D_MODEL, HEADS, KV_HEADS, HEAD_DIM, 5, rngs=nnx.Rngs(0))
    x = _x(3)
    np.testing.assert_allclose(np.asarray(dma(x)), np.asarray(swa(x)), atol=1e-5)


@pytest.mark.parametrize("kind", ["mha", "swa"])
@pytest.mark.parametrize("segments", [False, True])
def test_baselines_match_naive_attention(kind, segments):
    layer = (MultiHeadAttention(D_MODEL, HEADS, KV_HEADS, HEAD_DIM, rngs=nnx.Rngs(4)) if kind == "mha"
             else SlidingWindowAttention(D_MODEL, HEADS, KV_HEADS, HEAD_DIM, 7, rngs=nnx.Rngs(4)))
    x = _x(5)
    seg = np.repeat(np.array([[0, 1, 2]]), [10, 20, 7], axis=1).repeat(2, 0).astype(np.int32) if segments else None
    q, k, v, wo = _projections_by_hand(layer, x)
    want = _naive_causal(q, k, v, window=None if kind == "mha" else 7, segment_ids=seg).reshape(2, 37, -1) @ wo
    got = layer(x, segment_ids=None if seg is None else jnp.asarray(seg))
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-4)


class _ForeignModel(nnx.Module):
    """Somebody else's tiny NNX model with our layer inside."""

    def __init__(self, rngs):
        self.inp = nnx.Linear(3, D_MODEL, rngs=rngs)
        self.attn = DynamicMaskAttention(D_MODEL, HEADS, KV_HEADS, HEAD_DIM, 4, rngs=rngs)
        self.out = nnx.Linear(D_MODEL, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(self.attn(self.inp(x)))


@pytest.mark.slow  # 27 s; a model written outside the package trains in tests/decoding/test_custom_model.py
def test_drops_into_a_foreign_nnx_model_and_trains():
    model = _ForeignModel(nnx.Rngs(0))
    model.attn.A[...] = jnp.full((KV_HEADS,), 0.5)
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    x = jax.random.normal(jax.random.key(0), (2, 24, 3))
    y = jnp.cumsum(x[..., :1], axis=1)

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        optimizer.update(model, grads)
        return loss, grads

    first, grads = step(model, optimizer)
    assert float(jnp.abs(grads.attn.A[...]).sum()) > 0, "the selection bias gets gradients"
    assert float(jnp.abs(grads.attn.dt_proj.kernel[...]).sum()) > 0
    for _ in range(20):
        loss, _ = step(model, optimizer)
    assert float(loss) < float(first)


def test_works_in_a_linen_model_through_the_bridge():
    class LinenNet(linen.Module):
        @linen.compact
        def __call__(self, x):
            attn = nnx.bridge.to_linen(DynamicMaskAttention, D_MODEL, HEADS, KV_HEADS, HEAD_DIM, 4)
            return linen.Dense(1)(attn(x))

    x = _x(6, length=20)
    net = LinenNet()
    variables = net.init(jax.random.key(0), x)
    out = net.apply(variables, x)
    assert out.shape == (2, 20, 1) and np.isfinite(np.asarray(out)).all()
    grads = jax.grad(lambda v: jnp.sum(net.apply(v, x) ** 2))(variables)
    assert any(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(grads))
    np.testing.assert_array_equal(np.asarray(net.apply(variables, x)), np.asarray(out))


def test_latent_attention_matches_by_hand_computation():
    from dma_jax.nn import MultiHeadLatentAttention

    heads, dim, latent_dim, rope_dim = 4, 8, 12, 4
    layer = MultiHeadLatentAttention(D_MODEL, heads, dim, latent_dim, rope_dim, rngs=nnx.Rngs(7))
    x = _x(8, length=19)
    w = lambda lin: np.asarray(lin.kernel[...], np.float64)
    xb = np.asarray(x, np.float64)
    positions = jnp.broadcast_to(jnp.arange(19), (2, 19))
    rope = lambda a: np.asarray(apply_rope(jnp.asarray(a, jnp.float32), positions), np.float64)
    down = xb @ w(layer.kv_down)
    latent = down[..., :latent_dim]
    latent = latent / np.sqrt(np.mean(latent**2, axis=-1, keepdims=True) + 1e-6) * np.asarray(layer.kv_norm.scale[...])
    k_rope = rope(down[..., None, latent_dim:])  # (B, T, 1, rope_dim), shared by the heads
    k_nope = (latent @ w(layer.k_up)).reshape(2, 19, heads, dim)
    v = (latent @ w(layer.v_up)).reshape(2, 19, heads, dim)
    q = (xb @ w(layer.q_proj)).reshape(2, 19, heads, dim + rope_dim)
    q = np.concatenate([q[..., :dim], rope(q[..., dim:])], axis=-1)
    k = np.concatenate([k_nope, np.repeat(k_rope, heads, axis=2)], axis=-1)
    logits = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(dim + rope_dim)
    logits = np.where(np.tril(np.ones((19, 19), bool)), logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    attended = np.einsum("bhts,bshd->bthd", p / p.sum(-1, keepdims=True), v)
    want = attended.reshape(2, 19, -1) @ w(layer.o_proj)
    np.testing.assert_allclose(np.asarray(layer(x)), want, atol=2e-4)


def _naive_nsa(layer, x):
    """NSA written query by query from the paper's description, in float64 numpy."""
    heads, kv_heads, dim = layer.num_heads, layer.num_kv_heads, layer.head_dim
    group = heads // kv_heads
    l, d, lp, n, w = layer.block_size, layer.block_stride, layer.select_block, layer.num_selected, layer.window
    f64 = lambda a: np.asarray(a, np.float64)
    batch, length = x.shape[:2]
    positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
    rope = lambda a: f64(apply_rope(jnp.asarray(a, jnp.float32), positions))
    kv = (f64(x) @ f64(layer.kv_proj.kernel[...])).reshape(batch, length, 6, kv_heads, dim)
    kc, vc, ks, vs, kw, vw = rope(kv[:, :, 0]), kv[:, :, 1], rope(kv[:, :, 2]), kv[:, :, 3], rope(kv[:, :, 4]), kv[:, :, 5]
    q = rope((f64(x) @ f64(layer.q_proj.kernel[...])).reshape(batch, length, heads, dim))
    gates = 1 / (1 + np.exp(-(f64(x) @ f64(layer.gate_proj.kernel[...]) + f64(layer.gate_proj.bias[...]))))
    pe = f64(layer.block_position[...])
    blocks = (length - l) // d + 1
    out = np.zeros((batch, length, heads, dim))

    def softmax_attend(qv, keys, values):
        logits = keys @ qv / np.sqrt(dim)
        p = np.exp(logits - logits.max())
        return (p / p.sum()) @ values, p / p.sum()

    for b in range(batch):
        kcmp = np.stack([[(kc[b, i * d:i * d + l, g] + pe).reshape(-1) @ f64(layer.compress_k.kernel[...])
                          for g in range(kv_heads)] for i in range(blocks)])  # (blocks, Hkv, D)
        vcmp = np.stack([[(vc[b, i * d:i * d + l, g] + pe).reshape(-1) @ f64(layer.compress_v.kernel[...])
                          for g in range(kv_heads)] for i in range(blocks)])
        for t in range(length):
            visible_blocks = [i for i in range(blocks) if i * d + l - 1 <= t]
            importance = np.zeros((kv_heads, -(-length // lp)))
            branch_cmp = np.zeros((heads, dim))
            for h in range(heads):
                g = h // group
                if visible_blocks:
                    o, p = softmax_attend(q[b, t, h], kcmp[visible_blocks, g], vcmp[visible_blocks, g])
                    branch_cmp[h] = o
                    for pi, i in zip(p, visible_blocks):
                        for j in range(importance.shape[1]):
                            if i * d < (j + 1) * lp and i * d + l - 1 >= j * lp:
                                importance[g, j] += pi
            for h in range(heads):
                g = h // group
                candidates = [j for j in range(importance.shape[1]) if j * lp <= t]
                forced = [j for j in candidates if j == 0 or j >= t // lp - 1]
                others = sorted((j for j in candidates if j not in forced), key=lambda j: (-importance[g, j], j))
                chosen = set((forced + others)[:n]) if len(forced) <= n else set(forced[:n])
                tokens = [s for s in range(t + 1) if s // lp in chosen]
                branch_slc, _ = softmax_attend(q[b, t, h], ks[b, tokens, g], vs[b, tokens, g])
                recent = list(range(max(0, t - w + 1), t + 1))
                branch_win, _ = softmax_attend(q[b, t, h], kw[b, recent, g], vw[b, recent, g])
                gate = gates[b, t, h * 3:h * 3 + 3]
                out[b, t, h] = gate[0] * branch_cmp[h] + gate[1] * branch_slc + gate[2] * branch_win
    return out.reshape(batch, length, heads * dim) @ f64(layer.o_proj.kernel[...])


def test_native_sparse_attention_matches_naive_loops():
    from dma_jax.nn import NativeSparseAttention

    layer = NativeSparseAttention(D_MODEL, HEADS, KV_HEADS, HEAD_DIM, block_size=4, block_stride=2, select_block=4,
                                  num_selected=3, window=5, rngs=nnx.Rngs(9))
    layer.block_position[...] = jax.random.normal(jax.random.key(1), layer.block_position[...].shape)
    x = _x(10, batch=1, length=26)
    np.testing.assert_allclose(np.asarray(layer(x)), _naive_nsa(layer, x), atol=3e-4)


@pytest.mark.parametrize("window,local_window,sink_keys,message", [
    (8, 6, 3, "exceed window=8"), (8, -1, 0, "local_window must be an int >= 0"), (None, 2, 0, "need a window"),
])
def test_dma_layer_refuses_a_local_window_that_does_not_fit(window, local_window, sink_keys, message):
    with pytest.raises(ValueError, match=message):
        DynamicMaskAttention(16, 2, 1, 8, window, local_window=local_window, sink_keys=sink_keys, rngs=nnx.Rngs(0))
