"""dma_jax.remat: what a rematerialised block keeps of its attention instead of recomputing it.

The programs are exported for CUDA on the CPU (``jax.export`` runs JAX's dead-code elimination
and every lowering rule, no GPU needed), so the kernels a train step would launch can be counted.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import export

from dma_jax import PallasConfig, dma_attention
from dma_jax.models import DecoderLM, ModelConfig
from dma_jax.remat import SAVES, policy

TRITON = "__gpu$xla.gpu.triton"
CUDNN_FORWARD, CUDNN_BACKWARD = "__cudnn$fmhaSoftmax", "__cudnn$fmhaSoftmaxBackward"


def _exported_step(attention, saves, *shapes, allow=(TRITON,)):
    """StableHLO of value_and_grad of sum(tanh(remat(block)(...))), block = attention of sin(q):
    the block's output is needed outside it, as in a model, so its forward runs twice without a
    policy that saves it."""

    def block(q, *rest):
        return attention(jnp.sin(q), *rest)

    def loss(*args):
        out = jax.checkpoint(block, policy=policy(saves))(*args)
        return jnp.sum(jnp.tanh(out.astype(jnp.float32)))

    step = jax.jit(jax.value_and_grad(loss, argnums=tuple(range(len(shapes)))))
    checks = [export.DisabledSafetyCheck.custom_call(target) for target in allow]
    return export.export(step, platforms=["cuda"], disabled_checks=checks)(*shapes).mlir_module()


def _custom_calls(text: str) -> list[str]:
    return re.findall(r"custom_call @(\S+?)\(", text)


def test_saving_attention_runs_dma_forward_and_selection_once():
    """Without a policy the backward recomputes the selection (its sort) and the forward kernel:
    two sorts and four Triton calls (forward twice, two backward passes). Saving the selection
    leaves one sort; saving the attention one of each forward."""
    q = jax.ShapeDtypeStruct((1, 1000, 8, 128), jnp.bfloat16)
    kv = jax.ShapeDtypeStruct((1, 1000, 2, 128), jnp.bfloat16)
    bias = jax.ShapeDtypeStruct((1, 2, 1000), jnp.float32)
    config = PallasConfig(forward_backend="pallas_triton", backward_backend="pallas_triton")
    attention = lambda q, k, v, b: dma_attention(q, k, v, b, 256, implementation=config)  # noqa: E731
    counts = {}
    for saves in SAVES:
        text = _exported_step(attention, saves, q, kv, kv, bias)
        counts[saves] = (_custom_calls(text).count(TRITON), text.count("stablehlo.sort"))
    assert counts == {"nothing": (4, 2), "selection": (4, 1), "attention": (3, 1)}


def test_saving_attention_keeps_cudnn_forward(monkeypatch):
    """cuDNN's fused forward names nothing; the policy saves its outputs by primitive. cuDNN's
    version checks are stubbed so that the CPU can lower the call for CUDA."""
    import jax._src.cudnn.fused_attention_stablehlo as cudnn

    monkeypatch.setattr(cudnn, "check_cudnn_version", lambda: 91000)
    monkeypatch.setattr(cudnn, "check_compute_capability", lambda capability: True)
    monkeypatch.setattr(cudnn, "is_cuda_compute_capability_equal", lambda capability: False)
    q = jax.ShapeDtypeStruct((1, 1024, 8, 128), jnp.bfloat16)
    attention = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")  # noqa: E731
    calls = {saves: _custom_calls(_exported_step(attention, saves, q, q, q, allow=(CUDNN_FORWARD, CUDNN_BACKWARD)))
             for saves in SAVES}
    assert sorted(calls["nothing"]) == [CUDNN_FORWARD, CUDNN_FORWARD, CUDNN_BACKWARD]
    assert sorted(calls["attention"]) == [CUDNN_FORWARD, CUDNN_BACKWARD]
    assert sorted(calls["selection"]) == sorted(calls["nothing"])  # nothing of cuDNN's is DMA's selection


def _gradients_by_saves(length=48, **config):
    """Gradients of a tiny model with each remat setting (MHA: "selection" is "nothing" there)."""
    tokens = jax.random.randint(jax.random.key(0), (2, length), 0, 256)
    grads = {}
    for saves in [s for s in SAVES if config["attention"] == "dma" or s != "selection"]:
        model = DecoderLM(ModelConfig.preset("tiny", remat=True, remat_saves=saves, **config), rngs=nnx.Rngs(0))
        grads[saves] = nnx.state(nnx.jit(nnx.grad(lambda m: jnp.mean(m(tokens).astype(jnp.float32) ** 2)))(model))
    return grads


@pytest.mark.parametrize("attention,implementation", [("dma", "xla"), pytest.param("mha", None, marks=pytest.mark.slow)])  # Pallas: the GPU test below
def test_model_gradients_do_not_depend_on_what_remat_saves(attention, implementation):
    """Saving instead of recomputing changes where values come from, not the values."""
    grads = _gradients_by_saves(attention=attention, window=4, implementation=implementation)
    for saves in set(grads) - {"nothing"}:
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), grads["nothing"], grads[saves])


@pytest.mark.gpu
@pytest.mark.parametrize("attention", ["dma", "mha"])
def test_saved_attention_gives_the_same_gradients_on_gpu(attention):
    """bf16 on the GPU: DMA on the default Pallas kernels (w = 64 of 256, so the gathered-tile
    kernels run), MHA on cuDNN. The two programs fuse their bf16 arithmetic differently, so a few
    gradients differ by rounding (on an H200: two leaves by 1.6e-3 of their norm, the rest bitwise)."""
    grads = _gradients_by_saves(length=256, attention=attention, window=64, dtype="bfloat16",
                                dense_implementation="cudnn")
    for saves in set(grads) - {"nothing"}:
        for a, b in zip(jax.tree.leaves(grads["nothing"]), jax.tree.leaves(grads[saves])):
            a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
            assert np.linalg.norm(b - a) <= 1e-2 * np.linalg.norm(a) + 1e-6


def test_unknown_saves_are_refused():
    with pytest.raises(ValueError, match="remat_saves"):
        policy("everything")
