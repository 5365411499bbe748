"""dma_jax.sharding: mesh shapes, logical-axis rules, and per-device attention on 4 CPU devices."""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import AbstractMesh, AxisType
from jax.sharding import PartitionSpec as P

from dma_jax.sharding import MeshConfig, partition_spec, path_name, per_device
from small_runs import host_devices_env


@pytest.mark.parametrize(
    "config, devices, shape",
    [(MeshConfig(), 8, (8, 1, 1, 1)), (MeshConfig(data=2, fsdp=-1), 8, (2, 4, 1, 1)),
     (MeshConfig(1, 2, 2), 4, (1, 2, 1, 2)), (MeshConfig(data=2, sequence=-1), 8, (2, 1, 4, 1))],
    ids=["all-data", "fsdp-fills", "exact", "sequence-fills"],
)
def test_mesh_shape(config, devices, shape):
    assert config.shape(devices) == shape


@pytest.mark.parametrize(
    "config, devices, message",
    [(MeshConfig(data=3), 8, "needs 3 devices"), (MeshConfig(data=-1, fsdp=-1), 4, "at most one"),
     (MeshConfig(data=-1, fsdp=3), 8, "does not divide"), (MeshConfig(tensor=0), 4, "mesh.tensor")],
    ids=["too-few", "two-fills", "indivisible", "zero"],
)
def test_mesh_shape_errors(config, devices, message):
    with pytest.raises(ValueError, match=message):
        config.shape(devices)


MESH = AbstractMesh((1, 2, 4), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)


@pytest.mark.parametrize(
    "name, shape, spec",
    [
        ("embed/embedding", (256, 64), P("tensor", "fsdp")),
        ("blocks/0/attn/q_proj/kernel", (64, 128), P("fsdp", "tensor")),
        ("blocks/3/attn/o_proj/kernel", (128, 64), P("tensor", "fsdp")),
        ("blocks/0/mlp/down_proj/kernel", (256, 64), P("tensor", "fsdp")),
        ("blocks/0/attn/dt_proj/kernel", (64, 2), P("fsdp", None)),
        ("blocks/0/attn/k_proj/kernel", (64, 6), P("fsdp", None)),  # 6 heads*dim: 4 does not divide
        ("blocks/0/attn_norm/scale", (64,), P(None)),
        ("opt_state/0/mu/blocks/0/mlp/up_proj/kernel", (64, 256), P("fsdp", "tensor")),
    ],
    ids=["embedding", "q-proj", "o-proj", "down-proj", "dt-proj", "indivisible", "norm", "adam-moment"],
)
def test_partition_spec_rules(name, shape, spec):
    assert partition_spec(name, shape, MESH) == spec


def test_path_name_of_nnx_state():
    from flax import nnx

    from dma_jax.models import DecoderLM, ModelConfig

    _, params = nnx.split(DecoderLM(ModelConfig.preset("tiny"), rngs=nnx.Rngs(0)))
    names = {path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
    assert "blocks/0/attn/q_proj/kernel" in names and "embed/embedding" in names


def test_per_device_without_mesh_is_a_plain_call():
    x = jnp.arange(6.0).reshape(2, 3)
    assert per_device(lambda a, b: a * 2 if b is None else a, x, None) is not None
    assert jnp.array_equal(per_device(lambda a, b: a * 2, x, None), x * 2)


# Shared by both scripts below: one attention's loss and gradients on every mesh against one
# device's (one program, not op by op); DMA must run its attention under shard_map.
MATCH_ONE_DEVICE = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from dma_jax.models import DecoderLM, ModelConfig
    from dma_jax.sharding import MeshConfig, make_mesh, tree_shardings, batch_sharding

    def match_one_device(config, tokens, segments, meshes):
        graphdef, params = nnx.split(DecoderLM(config, rngs=nnx.Rngs(0)))
        loss = lambda p, t, s: jnp.mean(nnx.merge(graphdef, p)(t, s) ** 2)
        expected, expected_grads = jax.jit(jax.value_and_grad(loss))(params, tokens, segments)
        for mesh_config in meshes:
            mesh = make_mesh(mesh_config)
            with jax.set_mesh(mesh):
                shardings = tree_shardings(params, mesh)
                fn = jax.jit(jax.value_and_grad(loss), in_shardings=(shardings, batch_sharding(mesh), batch_sharding(mesh)))
                got, grads = fn(jax.device_put(params, shardings), tokens, segments)
                text = fn.lower(params, tokens, segments).as_text()
            if config.attention == "dma":
                assert "shard_map" in text or "manual" in text.lower(), "attention did not run under shard_map"
            np.testing.assert_allclose(float(got), float(expected), rtol=1e-5)
            for g, e in zip(jax.tree.leaves(grads), jax.tree.leaves(expected_grads)):
                np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=1e-4, atol=1e-6)
            print(config.attention, mesh_config, grads["blocks"][0]["attn"]["q_proj"]["kernel"].sharding.spec)
    """
)

SCRIPT = MATCH_ONE_DEVICE + textwrap.dedent(
    """
    assert jax.device_count() == 4
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, 256, (4, 37)), jnp.int32)
    segments = jnp.asarray(np.repeat([[1] * 20 + [2] * 17], 4, 0), jnp.int32)
    for attention, meshes in (("dma", (MeshConfig(2, 2, 1), MeshConfig(1, 2, 2))), ("mha", (MeshConfig(1, 4, 1),))):
        match_one_device(ModelConfig.preset("tiny", attention=attention, implementation="xla"), tokens, segments, meshes)
    print("mesh ok")
    """
)


SEQUENCE_SCRIPT = MATCH_ONE_DEVICE + textwrap.dedent(
    """
    assert jax.device_count() == 8
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, 256, (2, 64)), jnp.int32)
    segments = jnp.asarray(np.repeat([[1] * 21 + [2] * 30 + [3] * 13], 2, 0), jnp.int32)  # across shard borders
    dma_meshes = (MeshConfig(data=2, sequence=4), MeshConfig(data=1, fsdp=2, sequence=4))
    for attention, meshes in (("dma", dma_meshes), ("mha", dma_meshes[:1])):
        config = ModelConfig.preset("tiny", attention=attention, window=6, implementation="xla")
        match_one_device(config, tokens, segments, meshes)
    print("sequence ok")
    """
)


@pytest.mark.slow  # 92 s; the sequence-parallel op alone: tests/ops/test_sequence_parallel.py
def test_sequence_split_model_matches_one_device():
    """A training step's loss and gradients with the sequence split over 4 of 8 CPU devices, beside
    a data or an fsdp axis, equal one device's (the sequence axis alone: tests/ops/test_sequence_parallel.py): DMA through the carried keys, MHA through XLA's
    partitioner (which gathers keys and values), norms, MLPs, RoPE positions and loss along T."""
    env = host_devices_env(8)
    result = subprocess.run([sys.executable, "-c", SEQUENCE_SCRIPT], env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "sequence ok" in result.stdout


@pytest.mark.slow  # 86 s; a sharded model's training steps: tests/training/test_training_sharded.py
def test_sharded_model_matches_one_device():
    env = host_devices_env(4)
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "mesh ok" in result.stdout
