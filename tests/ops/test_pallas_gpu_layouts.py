"""dma_jax.ops.pallas_gpu: the sequence layout of the forward (``PallasConfig.sequence_layout``)
gives bitwise the results of the tile layout (the same sums, only the rows move), so does keeping
k and v in (B, Tk, Hkv, D) (``kv_sequence_layout``: here the Triton-lowered kernels get the
transposed copy, and the gradients come back in k's layout), and the transposed sums of the
key-major backward (``slot_sums_transposed``) those of the plain sums up to rounding (the same
products summed in another order), in Pallas interpret mode with poisoned outputs; the transposed
sums run only where they fit on the GPU."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dma_jax.ops.pallas_gpu as pallas_gpu
from dma_jax.ops.pallas_gpu import PallasConfig, dma_attention_pallas
from pallas_kernels.gpu.common import KernelOptions
from case_tables import case_params

CASES = {  # q_len, kv_len, heads, bias_heads, head_dim, causal, masks
    "gqa-r2": (47, 47, 4, 2, 32, True, False),
    "tq<tk-r4": (50, 77, 8, 2, 16, True, False),
    "non-causal": (40, 40, 2, 2, 64, False, False),
    "segments-and-mask": (45, 45, 4, 1, 16, True, True),
    "r3-d80-falls-back": (21, 21, 6, 2, 80, True, False),  # neither R = 3 nor D = 80 is a power of two
}


def _outputs_and_grads(config, case, seed=0, batch=1):
    """One row of the batch: the layouts differ within a row (interpret mode runs every program
    on the CPU, so a second row doubles the time and tests no more)."""
    q_len, kv_len, heads, bias_heads, dim, causal, masks = case
    keys = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(keys[0], (batch, q_len, heads, dim))
    k = jax.random.normal(keys[1], (batch, kv_len, bias_heads, dim))
    v = jax.random.normal(keys[2], (batch, kv_len, bias_heads, dim))
    bias = jax.random.normal(keys[3], (batch, bias_heads, kv_len))
    segment_ids = jnp.asarray(np.repeat([[0, 1, 2]], batch, 0).repeat(15, 1)) if masks else None
    key_mask = jnp.asarray(np.random.default_rng(seed).random((batch, kv_len)) < 0.8) if masks else None

    def loss(q, k, v, bias):
        out = dma_attention_pallas(q, k, v, bias, 7, causal=causal, scale=None, segment_ids=segment_ids,
                                   key_mask=key_mask, config=config)
        return jnp.sum(out * jnp.cos(out)), out

    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True))(q, k, v, bias)
    return out, grads


# Interpret-mode runs of 14-22 s each on a fresh clone: CI keeps the masked case and the one that
# falls back; these run with -m slow.
SLOW_CASES = {"gqa-r2", "tq<tk-r4", "non-causal"}


@pytest.mark.parametrize("case", case_params(CASES, SLOW_CASES))
def test_sequence_layout_equals_tile_layout(case, monkeypatch):
    layouts = []
    forward = pallas_gpu.dma_forward
    monkeypatch.setattr(pallas_gpu, "dma_forward",
                        lambda q, *a, **k: layouts.append(q.ndim) or forward(q, *a, **k))
    sequence = _outputs_and_grads(PallasConfig(sequence_layout=True).interpreted(poison_outputs=True), case)
    _, _, heads, bias_heads, dim, _, _ = case
    powers_of_two = (heads // bias_heads) & (heads // bias_heads - 1) == 0 and dim & (dim - 1) == 0
    assert layouts == [4 if powers_of_two else 5]  # (B, T, H, D) in place, or the tiles it falls back to
    if not powers_of_two:
        return  # it ran the tile layout itself: nothing to compare
    tiles = _outputs_and_grads(PallasConfig(sequence_layout=False).interpreted(poison_outputs=True), case)
    for name, got, want in zip(["out", "dq", "dk", "dv", "dbias"], jax.tree.leaves(sequence), jax.tree.leaves(tiles)):
        assert not np.isnan(np.asarray(got)).any(), name
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=name)


@pytest.mark.slow  # 38 s in interpret mode on a fresh clone
@pytest.mark.parametrize("case", [CASES["tq<tk-r4"]], ids=["tq<tk-r4"])
def test_kv_sequence_layout_equals_the_transposed_copy(case, monkeypatch):
    heads_major = []
    forward = pallas_gpu.dma_forward
    monkeypatch.setattr(pallas_gpu, "dma_forward",
                        lambda q, k, *a, **kw: heads_major.append(k.shape[1] == case[3]) or forward(q, k, *a, **kw))
    kept = _outputs_and_grads(PallasConfig(kv_sequence_layout=True).interpreted(poison_outputs=True), case)
    assert heads_major == [True]  # the Triton-lowered forward still reads (B, Hkv, Tk, D)
    copied = _outputs_and_grads(PallasConfig(kv_sequence_layout=False).interpreted(poison_outputs=True), case)
    for name, got, want in zip(["out", "dq", "dk", "dv", "dbias"], jax.tree.leaves(kept), jax.tree.leaves(copied)):
        assert got.shape == want.shape, name
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=name)


def test_kernel_kv_layout_hands_the_kernels_the_layout_their_config_reads():
    """The op and benchmarks.forward_backends give the kernels k and v through this one helper."""
    k = jnp.arange(2 * 5 * 3 * 4, dtype=jnp.float32).reshape(2, 5, 3, 4)  # (B, Tk, Hkv, D)
    for sequence in (True, False):
        got = pallas_gpu.kernel_kv_layout(PallasConfig(kv_sequence_layout=sequence), k)
        assert got.shape == ((2, 5, 3, 4) if sequence else (2, 3, 5, 4))
        np.testing.assert_array_equal(got[1, 2, 1] if sequence else got[1, 1, 2], k[1, 2, 1])


@pytest.mark.parametrize("variable,field", [(pallas_gpu.KV_SEQUENCE_LAYOUT_VARIABLE, "kv_sequence_layout"),
                                            (pallas_gpu.Q_SEQUENCE_BACKWARD_VARIABLE, "q_sequence_backward")])
def test_layout_defaults_come_from_the_environment(monkeypatch, variable, field):
    monkeypatch.setenv(variable, "0")
    assert not getattr(PallasConfig(), field)
    monkeypatch.setenv(variable, "yes")
    with pytest.raises(ValueError, match=f"{variable} must be 0 or 1"):
        PallasConfig()
    monkeypatch.delenv(variable)
    assert getattr(PallasConfig(), field)


@pytest.mark.parametrize("heads,backend,sequence_layout,flag,expected", [
    (4, "mosaic_gpu", True, True, True),       # R = 1, both passes on Mosaic GPU
    (8, "mosaic_gpu", True, True, False),      # R = 2: the tiles interleave heads
    (4, "mosaic_gpu", False, True, False),     # the forward's tile layout
    (4, "mosaic_gpu", True, False, False),     # off
    (4, "pallas_triton", True, True, False),   # the Triton-lowered passes read tiles only
    (4, "auto", True, True, False),            # "auto" off a Hopper GPU: Triton-lowered passes
])
def test_backward_reads_q_in_sequence_only_where_both_mosaic_passes_run_with_one_head_a_bias_head(
        heads, backend, sequence_layout, flag, expected):
    config = PallasConfig(backward_backend=backend, sequence_layout=sequence_layout, q_sequence_backward=flag)
    call = pallas_gpu._Call(config.resolve(head_dim=128, per_bias=heads // 4, dtype=jnp.bfloat16), 0.1, 0, True, 4)
    q = jnp.zeros((1, 256, heads, 128), jnp.bfloat16)
    assert pallas_gpu._q_sequence_backward(call, q, ()) is expected


def test_fused_key_grads_default_on_from_the_environment(monkeypatch):
    monkeypatch.delenv(pallas_gpu.FUSED_KEY_GRADS_VARIABLE, raising=False)
    assert PallasConfig().fused_key_grads
    monkeypatch.setenv(pallas_gpu.FUSED_KEY_GRADS_VARIABLE, "0")
    assert not PallasConfig().fused_key_grads
    assert not PallasConfig().interpreted().fused_key_grads


def _sequence_args(*, heads=4, kv_heads=4, q_len=256, kv_len=256, block_q=64, width=64):
    """Arguments of the backward passes with q and dO in (B, T, H, D) (R = 1: Hb = H)."""
    tiles = q_len // block_q
    q = jnp.zeros((1, q_len, heads, 128), jnp.bfloat16)
    rows = jnp.zeros((1, heads, tiles, block_q), jnp.float32)
    kv = jnp.zeros((1, kv_len, kv_heads, 128), jnp.bfloat16)
    per_key = jnp.zeros((1, heads, kv_len), jnp.int32)
    table = jnp.full((1, heads, tiles, width), -1, jnp.int32)
    return (q, q, rows, rows, kv, kv, per_key.astype(jnp.float32), per_key, per_key, table)


@pytest.mark.parametrize("flag,kv_sequence,causal,kv_heads,kv_len,expected", [
    (True, True, True, 4, 256, True),      # one bias head per kv head, queries = keys
    (False, True, True, 4, 256, False),    # off
    (True, False, True, 4, 256, False),    # k in (B, Hkv, Tk, D): the kernel writes k's sequence layout only
    (True, True, False, 4, 256, False),    # no own keys
    (True, True, True, 2, 256, False),     # two bias heads per kv head: their sums meet in XLA
    (True, True, True, 4, 320, False),     # keys before the first query (q_offset = 64)
])
def test_query_major_pass_finishes_key_grads_only_where_every_key_is_one_tiles_own(
        flag, kv_sequence, causal, kv_heads, kv_len, expected):
    config = PallasConfig(backward_backend="mosaic_gpu", kv_sequence_layout=kv_sequence, fused_key_grads=flag)
    call = pallas_gpu._Call(config.resolve(head_dim=128, per_bias=1, dtype=jnp.bfloat16), 0.1, kv_len - 256, causal, 4)
    args = _sequence_args(kv_heads=kv_heads, kv_len=kv_len, block_q=call.config.block_q_bwd)
    assert pallas_gpu._fused_key_grads(call, args) is expected


@pytest.mark.parametrize("kv_heads,kv_len,q_offset,message", [
    (2, 256, 0, "one bias head per kv head"), (4, 320, 64, "q_offset = 0, Tk = tiles \\* block_q = 256")])
def test_key_sums_name_what_they_need(kv_heads, kv_len, q_offset, message):
    from pallas_kernels.mosaic_gpu.backward_queries import check_arguments

    args = _sequence_args(kv_heads=kv_heads, kv_len=kv_len)
    common = dict(block_q=64, block_k=64, num_stages=2, own_keys=True, kv_sequence=True, q_sequence=True)
    check_arguments(*args, **common, q_offset=q_offset)  # the pass itself takes the call
    with pytest.raises(ValueError, match=f"key_sums needs {message}"):
        check_arguments(*args, **common, key_sums=True, q_offset=q_offset)


def test_key_sums_of_the_wrong_shape_are_refused():
    from pallas_kernels.mosaic_gpu.backward_queries import dma_backward_queries_mosaic

    args = _sequence_args()
    sums = jnp.zeros((1, 4, 128, 128), jnp.float32)  # half the keys
    with pytest.raises(ValueError, match=r"key_sums must be dk, dv \(1, 4, 256, 128\)"):
        dma_backward_queries_mosaic(*args, scale=0.1, block_q=64, block_k=64, q_offset=0, kv_sequence=True,
                                    q_sequence=True, key_sums=(sums, sums, jnp.zeros((1, 4, 128), bool)))


@pytest.mark.slow  # 24-33 s each in interpret mode on a fresh clone
@pytest.mark.parametrize("case", [CASES["gqa-r2"], CASES["segments-and-mask"]], ids=["gqa-r2", "segments-and-mask"])
def test_transposed_slot_sums_equal_the_plain_sums(case, monkeypatch):
    plain = _outputs_and_grads(PallasConfig(slot_sums_transposed=False).interpreted(poison_outputs=True), case)
    seen = []
    slots = pallas_gpu.dma_backward_slots
    monkeypatch.setattr(pallas_gpu, "dma_backward_slots",
                        lambda *a, **k: seen.append(k["transposed"]) or slots(*a, **k))
    config = PallasConfig().interpreted(poison_outputs=True)
    transposed = _outputs_and_grads(config, case)
    assert seen == [True]
    # dK^T = Q^T dS and dK = dS^T Q sum the same products in another order: equal up to rounding
    # (a bitwise comparison of two orders depends on the machine's dot kernels).
    for name, got, want in zip(["out", "dq", "dk", "dv", "dbias"], jax.tree.leaves(transposed), jax.tree.leaves(plain)):
        got, want = np.asarray(got), np.asarray(want)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * max(1.0, np.abs(want).max()), err_msg=name)


@pytest.mark.parametrize("dtype,head_dim,interpret,expected", [
    (jnp.bfloat16, 128, False, True), (jnp.float16, 64, False, True), (jnp.bfloat16, 256, False, False),
    (jnp.float32, 64, False, False), (jnp.float32, 256, True, True)])
def test_transposed_slot_sums_run_where_they_fit(dtype, head_dim, interpret, expected):
    options = KernelOptions(interpret=interpret)
    assert pallas_gpu._transposed_sums_fit(dtype, head_dim, options) is expected
