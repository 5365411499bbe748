"""dma_attention inside shard_map: one call per device on its batch shard, with gradients.

Runs in a subprocess so that the CPU can pretend to be 4 devices
(``--xla_force_host_platform_device_count``) without touching this process's JAX.
"""

import subprocess
import sys
import textwrap

import jax
import pytest

from dma_jax.sharding import path_name
from small_runs import host_devices_env

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import PartitionSpec as P
    from dma_jax import dma_attention, dma_attention_reference

    assert len(jax.devices()) == 4, jax.devices()
    shard_map = getattr(jax, "shard_map", None)
    if shard_map is None:
        from jax.experimental.shard_map import shard_map
    mesh = jax.make_mesh((4,), ("data",))
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(4, 70, 4, 16)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(4, 70, 2, 16)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(4, 70, 2, 16)), jnp.float32)
    bias = jnp.asarray(rng.integers(-2, 3, (4, 2, 70)), jnp.float32)
    seg = jnp.asarray(np.repeat(np.arange(2), 35)[None].repeat(4, 0), jnp.int32)
    on_mesh = lambda x: jax.device_put(x, jax.sharding.NamedSharding(mesh, P("data")))

    def loss(fn, q, k, v, bias):
        return jnp.sum(jnp.sin(fn(q, k, v, bias)))

    reference = jax.jit(jax.grad(lambda *a: loss(lambda *b: dma_attention_reference(*b, 6, segment_ids=seg), *a),
                                 argnums=(0, 1, 2, 3)))(q, k, v, bias)
    # Pallas interpret mode trips JAX's varying-axes check of its own grid loop (JAX asks for
    # check_vma=False there); the XLA path and the compiled GPU kernels run with the check on.
    for impl, check_vma in (("xla", True), ("pallas", False)):
        sharded = shard_map(
            lambda q, k, v, b, s: dma_attention(q, k, v, b, 6, segment_ids=s, implementation=impl),
            mesh=mesh, in_specs=(P("data"),) * 5, out_specs=P("data"), check_vma=check_vma,
        )
        sharded_seg = on_mesh(seg)
        grads = jax.jit(jax.grad(lambda *a: loss(lambda *b: sharded(*b, sharded_seg), *a), argnums=(0, 1, 2, 3)))(
            *(on_mesh(x) for x in (q, k, v, bias))
        )
        for g, r in zip(grads, reference):
            np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=2e-5)
    print("sharded ok")
    """
)


@pytest.mark.slow  # 43 s; the sharded train step: tests/training/test_training_sharded.py
@pytest.mark.parametrize("devices", [4])
def test_shard_map_over_batch_matches_reference(devices):
    env = host_devices_env(devices)
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "sharded ok" in result.stdout


@pytest.mark.parametrize("attention", ["dma", "mha", "swa", "mla", "nsa"])
def test_parameters_carry_the_logical_axes_the_rules_use(attention):
    """Every parameter's logical_axes metadata equals what LOGICAL_AXES gives its path (so the two
    cannot drift apart); unannotated ones (norms, biases, A) are the replicated ones."""
    from flax import nnx

    from dma_jax.models import DecoderLM, ModelConfig
    from dma_jax.sharding import logical_axes

    model = DecoderLM(ModelConfig.preset("tiny", attention=attention, tie_embeddings=False), rngs=nnx.Rngs(0))
    leaves = jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param),
                                                  is_leaf=lambda x: isinstance(x, nnx.Variable))[0]
    annotated = 0
    for path, variable in leaves:
        name, ndim = path_name(path), variable.get_value().ndim
        expected = logical_axes(name, ndim)
        got = variable.get_metadata().get("logical_axes")
        assert (got or (None,) * ndim) == expected, name
        annotated += got is not None
    assert annotated >= 8


def test_a_host_model_shards_the_layer_by_its_own_rules():
    """A DynamicMaskAttention inside another model, with other mesh axis names."""
    from flax import nnx
    from jax.sharding import PartitionSpec as P

    from dma_jax.nn import DynamicMaskAttention
    from dma_jax.sharding import logical_partition_specs

    layer = DynamicMaskAttention(64, 4, 2, 16, window=8, rngs=nnx.Rngs(0))
    specs = logical_partition_specs(layer, {"embed": "dp", "heads": "tp"})
    assert specs["q_proj/kernel"] == P("dp", "tp") and specs["o_proj/kernel"] == P("tp", "dp")
    assert specs["dt_proj/kernel"] == P("dp", None) and specs["A"] == P(None)
