"""dma_jax.ops.sequence_parallel on 8 CPU devices (a subprocess with
--xla_force_host_platform_device_count=8): forward and all four gradients equal the one-device
dma_attention within float32 rounding, and the collectives move the same bytes at every T."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from small_runs import host_devices_env


ROOT = Path(__file__).resolve().parents[2]

PRELUDE = textwrap.dedent("""
    import json, os, re, sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import AxisType, PartitionSpec as P
    from dma_jax import dma_attention
    from dma_jax.ops.sequence_parallel import collective_bytes, sequence_parallel_attention
    mesh = jax.make_mesh((8,), ("seq",), axis_types=(AxisType.Auto,))

    def sharded(window, with_segments, with_mask, implementation="xla"):
        def per_shard(q, k, v, b, *masks):
            masks = list(masks)
            seg = masks.pop(0) if with_segments else None
            km = masks.pop(0) if with_mask else None
            return sequence_parallel_attention(q, k, v, b, window, axis_name="seq", segment_ids=seg, key_mask=km,
                                               implementation=implementation)
        specs = (P(None, "seq"),) * 3 + (P(None, None, "seq"),) + (P(None, "seq"),) * (with_segments + with_mask)
        # Pallas interpret mode's grid loop fails the varying-axes check (as in dma_jax.sharding.per_device)
        return jax.shard_map(per_shard, mesh=mesh, in_specs=specs, out_specs=P(None, "seq"),
                             check_vma=implementation == "xla")
""")


def run(script: str) -> dict:
    env = host_devices_env(8, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(script)], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


CASES = [  # T = 64 over 8 shards: 8 positions a shard
    dict(name="w5_segments_keymask_ties", window=5, heads=4, kv_heads=2, bias_heads=2, segments=True, mask=True),
    dict(name="w20_wider_than_a_shard", window=20, heads=4, kv_heads=2, bias_heads=2, segments=True, mask=True),
    dict(name="hb_h_w5", window=5, heads=4, kv_heads=2, bias_heads=4, segments=True, mask=False),
    dict(name="window_none_hb_h", window=None, heads=4, kv_heads=2, bias_heads=4, segments=False, mask=True),
    dict(name="w8_one_shard_exactly", window=8, heads=2, kv_heads=2, bias_heads=2, segments=True, mask=True),
]


@pytest.mark.parametrize("names", [
    ("w5_segments_keymask_ties", "w20_wider_than_a_shard"),
    pytest.param(("hb_h_w5", "window_none_hb_h", "w8_one_shard_exactly"), marks=pytest.mark.slow),  # 50 s
], ids=["ties-and-wide-window", "more"])
def test_sequence_parallel_equals_one_device(names):
    cases = [case for case in CASES if case["name"] in names]
    results = run(f"""
        rng = np.random.default_rng(0)
        out = {{}}
        for case in {cases!r}:
            T, H, Hkv, Hb, D = 64, case["heads"], case["kv_heads"], case["bias_heads"], 8
            q = jnp.asarray(rng.standard_normal((2, T, H, D)), jnp.float32)
            k = jnp.asarray(rng.standard_normal((2, T, Hkv, D)), jnp.float32)
            v = jnp.asarray(rng.standard_normal((2, T, Hkv, D)), jnp.float32)
            b = rng.integers(-3, 4, (2, Hb, T)).astype(np.float32)  # many ties
            b[rng.random(b.shape) < 0.1] = -np.inf
            b = jnp.asarray(b)
            masks = []
            if case["segments"]:  # runs that cross shard borders
                masks.append(jnp.asarray(np.sort(rng.integers(0, 4, (2, T)), axis=1).astype(np.int32)))
            if case["mask"]:
                masks.append(jnp.asarray(rng.random((2, T)) < 0.85))
            ct = jnp.asarray(rng.standard_normal(q.shape), jnp.float32)
            seg = masks[0] if case["segments"] else None
            km = masks[-1] if case["mask"] else None
            one = lambda q, k, v, b: jnp.vdot(dma_attention(q, k, v, b, case["window"], segment_ids=seg, key_mask=km,
                                                            implementation="xla"), ct)
            fn = sharded(case["window"], case["segments"], case["mask"])
            many = lambda q, k, v, b: jnp.vdot(fn(q, k, v, b, *masks), ct)
            want = jax.jit(jax.value_and_grad(one, argnums=(0, 1, 2, 3)))(q, k, v, b)
            got = jax.jit(jax.value_and_grad(many, argnums=(0, 1, 2, 3)))(q, k, v, b)
            errors = [float(abs(got[0] - want[0]))] + [float(jnp.abs(g - w).max()) for g, w in zip(got[1], want[1])]
            scales = [float(abs(want[0]))] + [float(jnp.abs(w).max()) for w in want[1]]
            out[case["name"]] = dict(errors=errors, scales=scales)
        print(json.dumps(out))
    """)
    assert set(results) == set(names)
    for name, result in results.items():
        for what, error, scale in zip(("out", "dq", "dk", "dv", "dbias"), result["errors"], result["scales"]):
            assert error <= 1e-5 * max(scale, 1.0), (name, what, error, scale)


@pytest.mark.slow  # 50 s; the kernels lower inside shard_map in tests/ops/test_gpu_lowering.py
def test_the_pallas_kernels_run_inside_each_shard():
    result = run("""
        rng = np.random.default_rng(1)
        q = jnp.asarray(rng.standard_normal((1, 64, 4, 16)), jnp.float32)
        k = jnp.asarray(rng.standard_normal((1, 64, 2, 16)), jnp.float32)
        b = jnp.asarray(rng.standard_normal((1, 2, 64)), jnp.float32)
        got = sharded(6, False, False, implementation="pallas")(q, k, k, b)
        want = dma_attention(q, k, k, b, 6, implementation="xla")
        print(json.dumps(dict(error=float(jnp.abs(got - want).max()))))
    """)
    assert result["error"] <= 1e-5


@pytest.mark.slow  # 38 s on a fresh clone
def test_collectives_move_the_same_bytes_at_every_length():
    """Forward+backward at T = 4K and 16K over 8 shards, w = 64: the all-gather of the carried
    candidates and the reduce-scatter of their gradients do not grow with T, and stay far below
    an all-gather of the whole keys and values (what dense context parallelism moves)."""
    result = run("""
        out = {}
        for T in (4096, 16384):
            q = jax.ShapeDtypeStruct((1, T, 4, 64), jnp.float32)
            kv = jax.ShapeDtypeStruct((1, T, 2, 64), jnp.float32)
            b = jax.ShapeDtypeStruct((1, 2, T), jnp.float32)
            fn = sharded(64, False, False)
            step = jax.jit(jax.grad(lambda *a: fn(*a).sum(), argnums=(0, 1, 2, 3)))
            out[T] = collective_bytes(step.lower(q, kv, kv, b).compile().as_text())
        print(json.dumps(out))
    """)
    small, large = result["4096"], result["16384"]
    assert small == large and small["all-gather"] > 0 and small["reduce-scatter"] > 0
    whole_kv = 2 * 16384 * 2 * 64 * 4  # k and v of the whole 16K sequence, float32
    assert sum(large.values()) < whole_kv / 10
