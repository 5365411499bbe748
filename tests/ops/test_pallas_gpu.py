"""The Pallas kernels on a real GPU (marked ``gpu``: skipped where JAX sees none).

bf16/fp16 accuracy bound as in FlashAttention's tests: the kernel's max error against a float32
reference (XLA path at highest matmul precision) is at most twice the error of the same XLA
path run in the low precision (plus a small slack relative to the values), for the output and
all four gradients. Also: float32 inputs, head dims 64/128/256, Hb = H, segments, key mask,
Tq < Tk, window None, non-causal, bitwise-deterministic gradients.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dma_jax import dma_attention
from dma_jax.ops.pallas_gpu import PallasConfig, dma_attention_pallas
from dma_jax.ops.xla import dma_attention_xla
from pallas_kernels.gpu.common import KernelOptions

pytestmark = pytest.mark.gpu


def _problem(seed, batch, q_len, kv_len, heads, kv_heads, bias_heads, head_dim, dtype, segments, key_mask):
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.normal(size=(batch, q_len, heads, head_dim)), dtype)
    k = jnp.asarray(rng.normal(size=(batch, kv_len, kv_heads, head_dim)), dtype)
    v = jnp.asarray(rng.normal(size=(batch, kv_len, kv_heads, head_dim)), dtype)
    bias = jnp.asarray(rng.normal(size=(batch, bias_heads, kv_len)), jnp.float32)
    kwargs = {}
    if segments:
        cuts = np.sort(rng.choice(np.arange(1, kv_len), 3, replace=False))
        kwargs["segment_ids"] = jnp.asarray(np.searchsorted(cuts, np.arange(kv_len), side="right")[None].repeat(batch, 0), jnp.int32)
    if key_mask:
        kwargs["key_mask"] = jnp.asarray(rng.random((batch, kv_len)) > 0.2)
    cotangent = jnp.asarray(rng.normal(size=q.shape), jnp.float32)
    return (q, k, v, bias), cotangent, kwargs


def _out_and_grads(fn, args, cotangent):
    @jax.jit
    def run(*a):
        out, vjp = jax.vjp(fn, *a)
        return (out,) + vjp(cotangent.astype(out.dtype))

    return [np.asarray(x.astype(jnp.float32)) for x in run(*args)]


CASES = {
    "bf16_T2048_w256_D128": dict(q_len=2048, kv_len=2048, heads=8, kv_heads=2, bias_heads=2, head_dim=128, dtype=jnp.bfloat16),
    "bf16_T1000_w100_D64_segments_keymask": dict(q_len=1000, kv_len=1000, heads=8, kv_heads=2, bias_heads=2, head_dim=64,
                                                 dtype=jnp.bfloat16, segments=True, key_mask=True, window=100),
    "bf16_T777_w64_D256_hb_h": dict(q_len=777, kv_len=777, heads=4, kv_heads=2, bias_heads=4, head_dim=256, dtype=jnp.bfloat16, window=64),
    "fp16_Tq300_Tk1500_w128_D80": dict(q_len=300, kv_len=1500, heads=4, kv_heads=1, bias_heads=1, head_dim=80, dtype=jnp.float16, window=128),
    "bf16_T600_wNone": dict(q_len=600, kv_len=600, heads=4, kv_heads=2, bias_heads=2, head_dim=64, dtype=jnp.bfloat16, window=None),
    "bf16_noncausal_Tq500_Tk700_w50": dict(q_len=500, kv_len=700, heads=4, kv_heads=2, bias_heads=2, head_dim=64,
                                           dtype=jnp.bfloat16, window=50, causal=False),
    "bf16_noncausal_T1500_w64_segments": dict(q_len=1500, kv_len=1500, heads=8, kv_heads=2, bias_heads=2, head_dim=128,
                                              dtype=jnp.bfloat16, window=64, causal=False, segments=True, key_mask=True),
    # the local-window variant: its live ranges differ, the kernels and tables do not
    "bf16_T2048_w256_local64_sinks4_segments": dict(q_len=2048, kv_len=2048, heads=8, kv_heads=2, bias_heads=2,
                                                    head_dim=128, dtype=jnp.bfloat16, segments=True, key_mask=True,
                                                    local_window=64, sink_keys=4),
    "bf16_T1000_w128_local32_hb_h": dict(q_len=1000, kv_len=1000, heads=8, kv_heads=2, bias_heads=8, head_dim=64,
                                         dtype=jnp.bfloat16, window=128, local_window=32),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_low_precision_within_twice_xla_error(case):
    case = dict(case)
    window, causal = case.pop("window", 256), case.pop("causal", True)
    variant = dict(local_window=case.pop("local_window", 0), sink_keys=case.pop("sink_keys", 0))
    args, cotangent, kwargs = _problem(0, 2, segments=case.pop("segments", False), key_mask=case.pop("key_mask", False), **case)
    kwargs.update(causal=causal, **variant)
    xla = functools.partial(dma_attention_xla, window=window, scale=None, segment_ids=kwargs.get("segment_ids"),
                            key_mask=kwargs.get("key_mask"), causal=causal, **variant)
    f32 = [a.astype(jnp.float32) for a in args]
    with jax.default_matmul_precision("highest"):
        exact = _out_and_grads(xla, f32, cotangent)
    low = _out_and_grads(xla, args, cotangent)
    got = _out_and_grads(lambda *a: dma_attention(*a, window, implementation="pallas", **kwargs), args, cotangent)
    for name, g, l, e in zip(("out", "dq", "dk", "dv", "dbias"), got, low, exact):
        assert np.isfinite(g).all(), name
        err, ref_err = np.abs(g - e).max(), np.abs(l - e).max()
        assert err <= 2 * ref_err + 1e-3 * np.abs(e).max(), f"{name}: kernel {err:.3g} vs low-precision XLA {ref_err:.3g}"


def test_float32_inputs_are_accurate():
    args, cotangent, kwargs = _problem(1, 1, 513, 513, 4, 2, 2, 64, jnp.float32, True, True)
    xla = functools.partial(dma_attention_xla, window=32, causal=True, scale=None, **kwargs)
    with jax.default_matmul_precision("highest"):
        exact = _out_and_grads(xla, args, cotangent)
    got = _out_and_grads(lambda *a: dma_attention(*a, 32, implementation="pallas", **kwargs), args, cotangent)
    for name, g, e in zip(("out", "dq", "dk", "dv", "dbias"), got, exact):
        assert np.abs(g - e).max() <= 1e-2 * max(np.abs(e).max(), 1.0), name  # Triton dots run in tf32


def test_gradients_are_bitwise_deterministic():
    args, cotangent, _ = _problem(2, 1, 4096, 4096, 8, 2, 2, 128, jnp.bfloat16, False, False)
    fn = lambda *a: dma_attention(*a, 512, implementation="pallas")
    first, second = _out_and_grads(fn, args, cotangent), _out_and_grads(fn, args, cotangent)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("transposed,options_slots",
                         [(False, None), (True, None), (True, KernelOptions(num_warps=8, num_stages=1))],
                         ids=["plain", "transposed", "transposed-8-warps-1-stage"])
def test_key_major_pass_is_accurate_and_deterministic(transposed, options_slots):
    """The key-major backward with plain and transposed sums (``slot_sums_transposed``), with
    segments and a key mask: within the bf16 bound, and bitwise equal over two runs."""
    args, cotangent, kwargs = _problem(5, 1, 2048, 2048, 8, 2, 2, 128, jnp.bfloat16, True, True)
    xla = functools.partial(dma_attention_xla, window=256, causal=True, scale=None, **kwargs)
    with jax.default_matmul_precision("highest"):
        exact = _out_and_grads(xla, [a.astype(jnp.float32) for a in args], cotangent)
    low = _out_and_grads(xla, args, cotangent)
    config = PallasConfig(slot_sums_transposed=transposed, options_slots=options_slots)
    fn = lambda *a: dma_attention_pallas(*a, 256, causal=True, scale=None, config=config, **kwargs)
    got, again = _out_and_grads(fn, args, cotangent), _out_and_grads(fn, args, cotangent)
    for name, g, g2, l, e in zip(("out", "dq", "dk", "dv", "dbias"), got, again, low, exact):
        np.testing.assert_array_equal(g, g2)
        err, ref_err = np.abs(g - e).max(), np.abs(l - e).max()
        assert err <= 2 * ref_err + 1e-3 * np.abs(e).max(), f"{name}: kernel {err:.3g} vs low-precision XLA {ref_err:.3g}"


@pytest.mark.parametrize("kv_heads,bias_heads", [(8, 8), (2, 2)], ids=["mha-like", "gqa"])
def test_kv_sequence_layout_matches_the_transposed_copy(kv_heads, bias_heads):
    """``PallasConfig(kv_sequence_layout=True)``: the kernels gather k and v rows from (B, Tk, Hkv, D)
    (a row stride of Hkv * D) instead of from a (B, Hkv, Tk, D) copy. Outputs and gradients are
    bitwise those of the copy (the same sums; one bias head per kv head, so the GQA group sum
    does not reorder either), at the 2K model layer's head layout and with GQA. ``fused_key_grads``
    is off on both sides: it takes only the sequence layout, and its dK rounds differently (its
    own test)."""
    args, cotangent, kwargs = _problem(7, 2, 2048, 2048, 8, kv_heads, bias_heads, 128, jnp.bfloat16, True, True)
    run = lambda config: _out_and_grads(
        lambda *a: dma_attention_pallas(*a, 512, causal=True, scale=None, config=config, **kwargs), args, cotangent)
    kept = run(PallasConfig(kv_sequence_layout=True, fused_key_grads=False))
    copied = run(PallasConfig(kv_sequence_layout=False, fused_key_grads=False))
    for name, got, want in zip(("out", "dq", "dk", "dv", "dbias"), kept, copied):
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_q_sequence_backward_matches_the_tile_layout():
    """``PallasConfig(q_sequence_backward=True)`` at the 2K model layer's heads (H = Hb = Hkv = 8,
    R = 1): both backward passes read q and dO and write dq in (B, T, H, D). Bitwise the tile
    layout's gradients, alone and with ``kv_sequence_layout`` (``fused_key_grads`` off, as in the
    test above)."""
    args, cotangent, kwargs = _problem(8, 2, 2048, 2048, 8, 8, 8, 128, jnp.bfloat16, True, True)
    run = lambda config: _out_and_grads(
        lambda *a: dma_attention_pallas(*a, 512, causal=True, scale=None, config=config, **kwargs), args, cotangent)
    tiles = run(PallasConfig(q_sequence_backward=False, fused_key_grads=False))
    for config in (PallasConfig(q_sequence_backward=True, fused_key_grads=False),
                   PallasConfig(q_sequence_backward=True, kv_sequence_layout=True, fused_key_grads=False)):
        for name, got, want in zip(("out", "dq", "dk", "dv", "dbias"), run(config), tiles):
            np.testing.assert_array_equal(got, want, err_msg=f"{name} {config}")


@pytest.mark.parametrize("segments", [False, True], ids=["plain", "segments-and-mask"])
def test_fused_key_grads_match_the_unfused_sums(segments):
    """``PallasConfig(fused_key_grads=True)`` at the 2K model layer's heads (H = Hb = Hkv = 8,
    R = 1, queries = keys): the key-major pass runs first and the query-major pass adds its float32
    sums to its own keys' and writes dK and dV in bf16. Outputs, dq, dv and dbias are bitwise equal
    to the unfused path. dK is own dK times the scale plus the sum: the GPU compiler contracts that
    into one fused multiply-add (one rounding where the unfused path has two), so a few elements in
    10^5 differ, by one bf16 step or, where the two parts nearly cancel, by the product's float32
    rounding. Every output is bitwise equal over two runs."""
    args, cotangent, kwargs = _problem(9, 2, 2048, 2048, 8, 8, 8, 128, jnp.bfloat16, segments, segments)
    kwargs = dict(segment_ids=None, key_mask=None) | kwargs
    run = lambda config: _out_and_grads(
        lambda *a: dma_attention_pallas(*a, 512, causal=True, scale=None, config=config, **kwargs), args, cotangent)
    unfused = run(PallasConfig(fused_key_grads=False))
    fused, again = run(PallasConfig(fused_key_grads=True)), run(PallasConfig(fused_key_grads=True))
    for name, got, got_again, want in zip(("out", "dq", "dk", "dv", "dbias"), fused, again, unfused):
        np.testing.assert_array_equal(got, got_again, err_msg=name)
        if name != "dk":
            np.testing.assert_array_equal(got, want, err_msg=name)
            continue
        assert np.mean(got != want) < 1e-4, np.mean(got != want)
        np.testing.assert_allclose(got, want, rtol=2.0**-7, atol=2.0**-16 * np.abs(want).max())


def test_sequence_layout_is_accurate_and_matches_the_tile_layout():
    """``PallasConfig(sequence_layout=True)``: the forward gathers q's rows from (B, T, H, D) and
    scatters its output rows back, with segments, a key mask and a length that is no multiple
    of the tile. Within the bf16 bound, and equal to the tile layout's results where both run the
    same kernels (the Mosaic GPU kernels, which "auto" backends pick for the sequence layout only,
    round differently: then within bf16 rounding)."""
    args, cotangent, kwargs = _problem(6, 1, 2000, 2000, 8, 2, 2, 128, jnp.bfloat16, True, True)
    xla = functools.partial(dma_attention_xla, window=256, causal=True, scale=None, **kwargs)
    with jax.default_matmul_precision("highest"):
        exact = _out_and_grads(xla, [a.astype(jnp.float32) for a in args], cotangent)
    low = _out_and_grads(xla, args, cotangent)
    run = lambda config: _out_and_grads(
        lambda *a: dma_attention_pallas(*a, 256, causal=True, scale=None, config=config, **kwargs), args, cotangent)
    got, tiles = run(PallasConfig(sequence_layout=True)), run(PallasConfig(sequence_layout=False))
    default = PallasConfig()
    same_kernels = default.forward_backend == default.backward_backend == "pallas_triton"
    for name, g, t, l, e in zip(("out", "dq", "dk", "dv", "dbias"), got, tiles, low, exact):
        err, ref_err = np.abs(g - e).max(), np.abs(l - e).max()
        assert err <= 2 * ref_err + 1e-3 * np.abs(e).max(), f"{name}: kernel {err:.3g} vs low-precision XLA {ref_err:.3g}"
        atol = (1e-6 if same_kernels else 2 * ref_err / np.abs(e).max() + 1e-3) * np.abs(e).max()
        np.testing.assert_allclose(g, t, rtol=0, atol=atol, err_msg=name)


def test_default_implementation_is_pallas_on_gpu():
    args, cotangent, _ = _problem(3, 1, 300, 300, 4, 2, 2, 64, jnp.bfloat16, False, False)
    default = _out_and_grads(lambda *a: dma_attention(*a, 32), args, cotangent)
    pallas = _out_and_grads(lambda *a: dma_attention(*a, 32, implementation="pallas"), args, cotangent)
    for a, b in zip(default, pallas):
        np.testing.assert_array_equal(a, b)


def test_inside_shard_map_with_varying_axes_checked():
    from jax.sharding import NamedSharding, PartitionSpec as P

    shard_map = getattr(jax, "shard_map", None)
    if shard_map is None:
        from jax.experimental.shard_map import shard_map
    devices = len(jax.devices())
    mesh = jax.make_mesh((devices,), ("data",))
    args, cotangent, _ = _problem(4, devices, 512, 512, 4, 2, 2, 64, jnp.bfloat16, False, False)
    sharded = shard_map(
        lambda *a: dma_attention(*a, 64, implementation="pallas"), mesh=mesh, in_specs=(P("data"),) * 4,
        out_specs=P("data"),
    )
    placed = [jax.device_put(a, NamedSharding(mesh, P("data"))) for a in args]
    got = _out_and_grads(sharded, placed, jax.device_put(cotangent, NamedSharding(mesh, P("data"))))
    want = _out_and_grads(lambda *a: dma_attention(*a, 64, implementation="pallas"), args, cotangent)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("q_len,kv_len,bias_heads,window,key_mask,segments", [
    (2048, 2048, 8, None, False, False), (2048, 2048, 32, 2048, True, False)], ids=["T2048_wNone", "T2048_wT_hb_h_keymask"])
def test_dense_regime_on_cudnn_within_twice_xla_error(q_len, kv_len, bias_heads, window, key_mask, segments):
    """w >= T: the default implementation takes the cuDNN dense path (bias folded into head
    columns), within the bf16 bound of the float32 XLA path, as does asking for it. (cuDNN's
    backward is bitwise reproducible only with XLA_FLAGS=--xla_gpu_deterministic_ops=true.)"""
    from dma_jax import DenseConfig
    from dma_jax.ops.attention import choose_path

    args, cotangent, kwargs = _problem(7, 1, q_len, kv_len, 32, 8, bias_heads, 128, jnp.bfloat16, segments, key_mask)
    q, k, _, bias = args
    segment_ids = kwargs.get("segment_ids")
    assert choose_path(q, k, bias, window, segment_ids=segment_ids, implementation=None) == DenseConfig("cudnn")
    xla = functools.partial(dma_attention_xla, window=window, causal=True, scale=None, segment_ids=segment_ids,
                            key_mask=kwargs.get("key_mask"))
    with jax.default_matmul_precision("highest"):
        exact = _out_and_grads(xla, [a.astype(jnp.float32) for a in args], cotangent)
    low = _out_and_grads(xla, args, cotangent)
    default = lambda *a: dma_attention(*a, window, **kwargs)
    asked = lambda *a: dma_attention(*a, window, **kwargs, implementation=DenseConfig("cudnn"))
    for run in (default, asked):
        for name, g, l, e in zip(("out", "dq", "dk", "dv", "dbias"), _out_and_grads(run, args, cotangent), low, exact):
            err, ref_err = np.abs(g - e).max(), np.abs(l - e).max()
            assert err <= 2 * ref_err + 1e-3 * np.abs(e).max(), f"{name}: cuDNN dense {err:.3g} vs bf16 XLA {ref_err:.3g}"
