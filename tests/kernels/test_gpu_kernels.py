"""The GPU kernels of pallas_kernels.gpu against their dense reference, in Pallas interpret mode.

Outputs start as NaN (``poison_outputs``), so an element a kernel never writes fails.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.gpu.common import KernelOptions
from pallas_kernels.gpu.backward import dma_backward_queries, dma_backward_slots
from pallas_kernels.gpu.forward import dma_forward
from pallas_kernels.gpu.reference import interval_attention_reference
from problems import causal_key_lists

OPTIONS = KernelOptions(interpret=True, poison_outputs=True)


def _problem(seed, kv_len, q_len, bias_heads, kv_heads, rows_per_pos, block_q, window, head_dim=16):
    rng = np.random.default_rng(seed)
    tiles = -(-q_len // block_q)
    q_tiles = jnp.asarray(rng.normal(size=(1, bias_heads, tiles, block_q * rows_per_pos, head_dim)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(1, kv_heads, kv_len, head_dim)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(1, kv_heads, kv_len, head_dim)), jnp.float32)
    bias = jnp.asarray(rng.integers(-2, 3, (1, bias_heads, kv_len)), jnp.float32)
    start, end, table = causal_key_lists(bias, q_len, block_q, window, multiple=8)
    return q_tiles, k, v, bias, start, end, table, kv_len - q_len


CASES = [
    # 44 s in interpret mode on a fresh clone; the Pallas cases of tests/ops/test_attention.py run the same kernels
    pytest.param(dict(kv_len=40, q_len=40, bias_heads=2, kv_heads=1, rows_per_pos=2, block_q=8, window=5), id="gqa",
                 marks=pytest.mark.slow),
    pytest.param(dict(kv_len=45, q_len=21, bias_heads=1, kv_heads=1, rows_per_pos=1, block_q=8, window=3), id="tq<tk",
                 marks=pytest.mark.slow),  # Tq < Tk in interpret mode also: tests/ops/test_pallas_gpu_layouts.py
    pytest.param(dict(kv_len=33, q_len=33, bias_heads=2, kv_heads=2, rows_per_pos=4, block_q=16, window=40), id="w>T",
                 marks=pytest.mark.slow),  # 44 s in interpret mode on a fresh clone
]


@pytest.mark.parametrize("case", CASES)
def test_forward_and_backward_kernels_match_reference(case):
    """The forward, the query-major pass and the key-major pass (plain and transposed slot sums)
    against the dense reference's output, log-sum-exp and four gradients."""
    q_tiles, k, v, bias, start, end, table, q_offset = _problem(0, **case)
    block_q, scale = case["block_q"], 0.3
    common = dict(scale=scale, block_q=block_q, q_offset=q_offset, options=OPTIONS)
    out, lse = dma_forward(q_tiles, k, v, bias, start, end, table, block_k=8, **common)
    ref = lambda q, k, v, b: interval_attention_reference(q, k, v, b, start, end, scale=scale, block_q=block_q, q_offset=q_offset)
    ref_out, ref_lse = ref(q_tiles, k, v, bias)
    np.testing.assert_allclose(out, ref_out, atol=2e-5)
    np.testing.assert_allclose(lse, ref_lse, atol=2e-5)

    d_out = jnp.asarray(np.random.default_rng(1).normal(size=out.shape), jnp.float32)
    _, vjp = jax.vjp(lambda *a: ref(*a)[0], q_tiles, k, v, bias)
    dq_ref, dk_ref, dv_ref, db_ref = vjp(d_out)
    delta = jnp.sum(d_out * out, axis=-1)
    args = (q_tiles, d_out, lse, delta, k, v, bias, start, end, table)
    dq, dk_own, dv_own, db_own = dma_backward_queries(*args, block_k=8, **common)
    kv_len = k.shape[2]
    own = lambda x: jnp.pad(x.reshape((1, x.shape[1], -1) + x.shape[4:])[:, :, : kv_len - q_offset],
                            ((0, 0), (0, 0), (q_offset, 0)) + ((0, 0),) * (x.ndim - 4))
    group = bias.shape[1] // k.shape[1]
    per_kv = lambda x: x.reshape((1, k.shape[1], group) + x.shape[2:]).sum(axis=2)
    np.testing.assert_allclose(dq, dq_ref, atol=5e-5)
    for transposed in (False, True):
        dk, dv, db = dma_backward_slots(*args, block_slots=8, transposed=transposed, **common)
        np.testing.assert_allclose(per_kv(dk[:, :, :kv_len] + own(dk_own)), dk_ref, atol=5e-5, err_msg=f"{transposed=}")
        np.testing.assert_allclose(per_kv(dv[:, :, :kv_len] + own(dv_own)), dv_ref, atol=5e-5, err_msg=f"{transposed=}")
        np.testing.assert_allclose(db[:, :, :kv_len] + own(db_own), db_ref, atol=5e-5, err_msg=f"{transposed=}")
