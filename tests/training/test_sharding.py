"""dma_attention inside shard_map: one call per device on its batch shard, with gradients.

Runs in a subprocess so that the CPU can pretend to be 4 devices
(``--xla_force_host_platform_device_count``) without touching this process's JAX.
"""

import os
import subprocess
import sys
import textwrap

import pytest

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

    reference = jax.grad(lambda *a: loss(lambda *b: dma_attention_reference(*b, 6, segment_ids=seg), *a), argnums=(0, 1, 2, 3))(q, k, v, bias)
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


@pytest.mark.parametrize("devices", [4])
def test_shard_map_over_batch_matches_reference(devices):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "sharded ok" in result.stdout
