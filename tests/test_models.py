"""dma_jax.models: the decoder LM for every attention kind, presets, Orbax round trip."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from dma_jax.models import DecoderLM, ModelConfig, positions_in_segments

KINDS = ["dma", "mha", "swa", "mla", "nsa"]


def _model(kind, **overrides):
    return DecoderLM(ModelConfig.preset("tiny", attention=kind, **overrides), rngs=nnx.Rngs(0))


def _tokens(seed=0, batch=2, length=48):
    return jax.random.randint(jax.random.key(seed), (batch, length), 0, 256)


@pytest.mark.parametrize("kind", KINDS)
def test_logits_are_causal(kind):
    model = _model(kind, window=4)
    if kind == "dma":  # a non-constant bias, so that the selection is not just a sliding window
        model.blocks[0].attn.A[...] = jnp.array([1.0, -0.5])
    tokens = _tokens()
    changed = tokens.at[:, 30].set((tokens[:, 30] + 1) % 256)
    run = nnx.jit(lambda model, tokens: model(tokens))
    before, after = run(model, tokens), run(model, changed)
    assert before.shape == (2, 48, 256) and before.dtype == jnp.float32
    np.testing.assert_allclose(before[:, :30], after[:, :30], atol=1e-5)
    assert not np.allclose(before[:, 30:], after[:, 30:])


@pytest.mark.parametrize("kind", KINDS)
def test_packed_documents_match_separate_runs(kind):
    """Two documents packed in one row give the logits of each document run alone."""
    model = _model(kind)
    if kind == "dma":
        for block in model.blocks:
            block.attn.A[...] = jnp.array([0.7, -0.4])
    first, second = _tokens(1, 1, 20), _tokens(2, 1, 28)
    packed = jnp.concatenate([first, second], axis=1)
    segment_ids = jnp.concatenate([jnp.zeros((1, 20), jnp.int32), jnp.ones((1, 28), jnp.int32)], axis=1)
    run = nnx.jit(lambda model, tokens, segment_ids=None: model(tokens, segment_ids=segment_ids))
    logits = run(model, packed, segment_ids)
    np.testing.assert_allclose(logits[:, :20], run(model, first), atol=1e-4)
    np.testing.assert_allclose(logits[:, 20:], run(model, second), atol=1e-4)


def test_positions_restart_in_each_segment():
    segment_ids = jnp.asarray([[3, 3, 3, 5, 5, 9], [0, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(positions_in_segments(segment_ids), [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5]])


@pytest.mark.parametrize(
    "name, non_embedding_millions",
    [("80m", 78), ("200m", 189), pytest.param("680m", 623, marks=pytest.mark.slow), ("1.7b", 1409)],
)
def test_presets_have_the_paper_sizes(name, non_embedding_millions):
    config = ModelConfig.preset(name)
    model = nnx.eval_shape(lambda: DecoderLM(config, rngs=nnx.Rngs(0)))
    params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    non_embedding = params - config.vocab_size * config.d_model
    assert non_embedding / 1e6 == pytest.approx(non_embedding_millions, rel=0.02)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(attention="nope"), "attention"),
        (dict(num_heads=5, num_kv_heads=2), "num_kv_heads"),
        (dict(attention="swa", window=None), "window"),
        (dict(dense_implementation="flash"), "dense_implementation"),
        (dict(remat_saves="everything"), "remat_saves"),
    ],
)
def test_bad_config_fails_early(overrides, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig.preset("tiny", **overrides)


def _implementations_seen(monkeypatch) -> list:
    """The ``implementation`` of every later ``jax.nn.dot_product_attention`` call, in order."""
    original, seen = jax.nn.dot_product_attention, []

    def spy(*args, implementation=None, **kwargs):
        seen.append(implementation)
        return original(*args, implementation=implementation, **kwargs)

    monkeypatch.setattr(jax.nn, "dot_product_attention", spy)
    return seen


@pytest.mark.parametrize("kind", ["mha"] + [pytest.param(k, marks=pytest.mark.slow) for k in ("swa", "mla")])  # 8-14 s each
def test_dense_implementation_reaches_dot_product_attention(kind, monkeypatch):
    """``dense_implementation`` is what the dense layers hand to ``jax.nn.dot_product_attention``;
    "xla" gives the default's logits."""
    default = _model(kind)
    chosen = _model(kind, dense_implementation="xla")
    tokens = _tokens()
    expected = default(tokens)
    seen = _implementations_seen(monkeypatch)
    np.testing.assert_allclose(chosen(tokens), expected, atol=1e-6)
    assert seen == ["xla"] * len(chosen.blocks)


@pytest.mark.parametrize("backend,dtype,head_dim,expected", [
    ("gpu", jnp.bfloat16, 64, "cudnn"), ("gpu", jnp.float16, 128, "cudnn"), ("gpu", jnp.float32, 64, None),
    ("gpu", jnp.bfloat16, 256, None), ("gpu", jnp.bfloat16, 60, None), ("cpu", jnp.bfloat16, 64, None),
    ("tpu", jnp.bfloat16, 64, None),
])
def test_auto_dense_implementation_takes_cudnn_only_where_it_applies(monkeypatch, backend, dtype, head_dim, expected):
    from dma_jax.nn.attention_layers import resolve_dense_implementation

    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    q = jax.ShapeDtypeStruct((1, 8, 2, head_dim), dtype)
    assert resolve_dense_implementation("auto", q) == expected
    assert resolve_dense_implementation("xla", q) == "xla" and resolve_dense_implementation(None, q) is None


def test_the_default_dense_implementation_is_auto_and_xla_on_the_cpu(monkeypatch):
    assert ModelConfig.preset("tiny", attention="mha").dense_implementation == "auto"
    seen = _implementations_seen(monkeypatch)
    model = _model("mha", dtype="bfloat16")
    model(_tokens())
    assert seen == [None] * len(model.blocks)


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["mha", "swa", "mla"])
def test_cudnn_dense_layers_match_xla_on_gpu(kind):
    """bf16 models: cuDNN's fused attention gives XLA's logits and gradients, packed rows included."""
    tokens = _tokens(length=128)
    segment_ids = (jnp.arange(128) >= 50).astype(jnp.int32)[None].repeat(2, 0)
    results = []
    for implementation in ("xla", "cudnn"):
        model = _model(kind, dtype="bfloat16", dense_implementation=implementation)
        loss = lambda m: jnp.mean(m(tokens, segment_ids=segment_ids).astype(jnp.float32) ** 2)
        results.append(nnx.value_and_grad(loss)(model))
    (xla_loss, xla_grads), (cudnn_loss, cudnn_grads) = results
    np.testing.assert_allclose(cudnn_loss, xla_loss, rtol=2e-2)
    for a, b in zip(jax.tree.leaves(xla_grads), jax.tree.leaves(cudnn_grads)):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        assert np.linalg.norm(b - a) <= 0.05 * np.linalg.norm(a) + 1e-6  # bf16: a few per cent


def test_embedding_rows_equal_nnx_embed_and_their_gradient_sums_in_float32():
    """embed_tokens gives nnx.Embed's bf16 rows; a token repeated 1024 times gets the float32 sum
    of its cotangents (a bf16 scatter-add stalls once the sum is 256 times one term)."""
    model = _model("mha", dtype="bfloat16")
    tokens = jnp.concatenate([jnp.full((1, 1024), 7), _tokens(3, 1, 64)], axis=1)
    np.testing.assert_array_equal(model.embed_tokens(tokens), model.embed(tokens))
    cotangent = jnp.full((1, tokens.shape[1], model.config.d_model), 0.01, jnp.bfloat16)
    grad = nnx.grad(lambda m: jnp.sum(m.embed_tokens(tokens).astype(jnp.float32) * cotangent))(model)
    repeats = np.sum(np.asarray(tokens) == 7)
    expected = repeats * np.float32(jnp.bfloat16(0.01))
    np.testing.assert_allclose(grad.embed.embedding[...][7], expected, rtol=1e-5)


def test_tokens_must_be_2d():
    with pytest.raises(ValueError, match="tokens"):
        _model("mha")(jnp.zeros((2, 3, 4), jnp.int32))


def test_parameters_round_trip_through_orbax(tmp_path):
    model = _model("dma")
    for block in model.blocks:
        block.attn.A[...] = jnp.array([0.3, -0.2])
    tokens = _tokens(3)
    expected = model(tokens)
    graphdef, state = nnx.split(model)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "params", state)
    checkpointer.wait_until_finished()
    fresh = DecoderLM(ModelConfig.preset("tiny"), rngs=nnx.Rngs(42))
    abstract = nnx.state(nnx.eval_shape(lambda: DecoderLM(ModelConfig.preset("tiny"), rngs=nnx.Rngs(0))))
    restored = checkpointer.restore(tmp_path / "params", abstract)
    nnx.update(fresh, restored)
    np.testing.assert_array_equal(np.asarray(fresh(tokens)), np.asarray(expected))
    del graphdef


def _scanned_and_unrolled(**overrides):
    """A scanned model and an unrolled one holding the same parameters."""
    config = ModelConfig.preset("tiny", num_layers=3, implementation="xla", **overrides)
    scanned = DecoderLM(dataclasses.replace(config, scan_layers=True), rngs=nnx.Rngs(0))
    unrolled = DecoderLM(config, rngs=nnx.Rngs(1))
    for block, source in zip(unrolled.blocks, scanned.block_list()):
        nnx.update(block, nnx.state(source))
    for name in ("embed", "final_norm"):
        nnx.update(getattr(unrolled, name), nnx.state(getattr(scanned, name)))
    return scanned, unrolled


@pytest.mark.parametrize("attention,remat", [pytest.param("dma", True, marks=pytest.mark.slow), ("swa", False)])  # 47 s
def test_scanned_blocks_equal_unrolled_blocks(attention, remat):
    """scan_layers stacks the blocks' parameters (layers/...) and scans them: same logits and
    gradients as the unrolled model holding the same parameters (with remat for DMA)."""
    scanned, unrolled = _scanned_and_unrolled(attention=attention, remat=remat)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 40)), jnp.int32)
    segment_ids = jnp.asarray(np.repeat([[0, 1]], 2, 0).repeat(20, 1), jnp.int32)
    loss = lambda model: jnp.mean(model(tokens, segment_ids) ** 2)  # noqa: E731
    forward = nnx.jit(lambda model: model(tokens, segment_ids))
    np.testing.assert_allclose(forward(scanned), forward(unrolled), rtol=1e-5, atol=1e-5)
    grads = nnx.jit(nnx.grad(loss))  # one compiled program each, not op-by-op dispatch
    grads_scanned, grads_unrolled = grads(scanned), grads(unrolled)
    for i in range(3):
        got = jax.tree.map(lambda x: x[i], nnx.state(grads_scanned.layers))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                     got, nnx.state(grads_unrolled.blocks[i]))
    np.testing.assert_allclose(grads_scanned.embed.embedding[...], grads_unrolled.embed.embedding[...],
                               rtol=1e-4, atol=1e-6)


@pytest.mark.slow  # 25 s; scanned logits equal unrolled ones in the test above
def test_scanned_model_generates_like_the_unrolled_one():
    from dma_jax import generate

    scanned, unrolled = _scanned_and_unrolled(attention="dma")
    prompts = jnp.asarray(np.random.default_rng(1).integers(0, 256, (2, 12)), jnp.int32)
    np.testing.assert_array_equal(generate(scanned, prompts, 6, prompt_lengths=[12, 7]),
                                  generate(unrolled, prompts, 6, prompt_lengths=[12, 7]))


def test_scanned_parameters_shard_and_count_like_unrolled_ones():
    from jax.sharding import AbstractMesh, AxisType
    from jax.sharding import PartitionSpec as P

    from dma_jax.sharding import partition_spec
    from dma_jax.training.flops import count_matmul_params

    scanned, unrolled = _scanned_and_unrolled(attention="dma")
    assert count_matmul_params(nnx.state(scanned, nnx.Param)) == count_matmul_params(nnx.state(unrolled, nnx.Param))
    mesh = AbstractMesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)
    assert partition_spec("layers/attn/q_proj/kernel", (3, 64, 64), mesh) == P(None, "fsdp", "tensor")
    assert partition_spec("opt_state/0/mu/layers/mlp/down_proj/kernel", (3, 256, 64), mesh) == P(None, "tensor", "fsdp")
    assert partition_spec("layers/attn_norm/scale", (3, 64), mesh) == P(None, None)
