"""The TPU forward kernel of pallas_kernels.tpu against its dense reference, in TPU interpret mode.

The key lists are built as ``dma_jax.ops.pallas_tpu`` builds them; the kernel's output starts as
NaN (``poison_outputs``), so an element it never writes fails. The backward kernels are checked
end to end against the dense spec in ``tests/ops/test_pallas_tpu.py``.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from dma_jax.ops.pallas_tpu import _lists, _meta, _offsets
from dma_jax.selection import key_tables
from pallas_kernels.tpu.common import TpuKernelOptions
from pallas_kernels.tpu.forward import dma_forward_tpu
from pallas_kernels.tpu.reference import list_attention_reference

OPTIONS = TpuKernelOptions(interpret=True, poison_outputs=True)


@pytest.mark.parametrize("kv_len,q_len,bias_heads,kv_heads,per_bias,window,causal", [
    pytest.param(40, 40, 2, 1, 2, 5, True, id="gqa", marks=pytest.mark.slow),  # 33 s; "non-causal" has R = 2 too
    pytest.param(45, 21, 1, 1, 1, 3, True, id="tq<tk", marks=pytest.mark.slow),  # 27 s in interpret mode
    pytest.param(33, 33, 2, 2, 1, 40, True, id="w>T", marks=pytest.mark.slow),  # 31 s
    pytest.param(40, 40, 2, 2, 2, 6, False, id="non-causal")])
def test_forward_kernel_matches_list_reference(kv_len, q_len, bias_heads, kv_heads, per_bias, window, causal):
    rng = np.random.default_rng(kv_len + q_len)
    block_q, block_k, dim = 8, 8, 128
    tiles = -(-q_len // block_q)
    q_offset = kv_len - q_len if causal else 0
    own_chunks = -(-block_q // block_k) if causal else 0
    width = -(-min(window, kv_len) // block_k) * block_k
    bias = jnp.asarray(rng.integers(-2, 3, (1, bias_heads, kv_len)), jnp.float32)
    start, end, (table,) = key_tables(bias, window, q_len, (block_q,), width, causal=causal, segment_ids=None,
                                      key_mask=None)
    lists = _lists(table, start, end, tile_q=block_q, block_k=block_k, own_chunks=own_chunks, q_offset=q_offset)
    meta = _meta(bias, lists, block_k)
    zero_row = max(kv_len, q_offset + tiles * block_q + own_chunks * block_k)
    rows = -(-(zero_row + 1) // 8) * 8
    q_tiles = jnp.asarray(rng.normal(size=(1, bias_heads, tiles, block_q * per_bias, dim)), jnp.float32)
    kv = lambda: jnp.pad(jnp.asarray(rng.normal(size=(1, kv_heads, kv_len, dim)), jnp.float32),  # noqa: E731
                         ((0, 0), (0, 0), (0, rows - kv_len), (0, 0)))
    k, v = kv(), kv()
    offsets = _offsets(block_q * per_bias, per_bias)
    common = dict(scale=0.3, block_q=block_q, q_offset=q_offset, own_chunks=own_chunks, zero_row=zero_row)
    out, lse = dma_forward_tpu(q_tiles, k, v, lists.keys, meta, lists.counts, offsets, options=OPTIONS, **common)
    ref_out, ref_lse = list_attention_reference(q_tiles, k, v, lists.keys, meta, offsets, **common)
    assert np.isfinite(np.asarray(out)).all()
    np.testing.assert_allclose(out, ref_out, atol=2e-5)
    np.testing.assert_allclose(lse, ref_lse, atol=2e-5)
