"""Run the Triton forward kernel in Triton's CPU interpreter against the dense reference; print
the largest errors per case as JSON. ``TRITON_INTERPRET=1`` must be set before Triton is first
imported, so ``test_jax_triton_forward.py`` runs this in a subprocess:

    TRITON_INTERPRET=1 python -m tests.kernels.jax_triton_interpreted
"""

import json

import jax.numpy as jnp
import numpy as np
import torch

from dma_jax.ops.pallas_gpu import _sequence_to_tiles
from pallas_kernels.gpu.reference import interval_attention_reference
from pallas_kernels.jax_triton.forward_kernel import dma_forward_kernel, launch_constants
from tests.problems import causal_key_lists

CASES = {  # Tk, Tq (unpadded), Hb, Hkv, R, block_q, block_k, window
    "tq<tk_padded_rows": (45, 21, 1, 1, 1, 8, 4, 3),
    "gqa_w>T": (33, 33, 2, 1, 4, 16, 8, 40),
}


def run_case(seed, kv_len, q_len, bias_heads, kv_heads, per_bias, block_q, block_k, window, head_dim=16):
    rng = np.random.default_rng(seed)
    tiles = -(-q_len // block_q)
    q_offset = kv_len - q_len
    q = rng.normal(size=(1, tiles * block_q, bias_heads * per_bias, head_dim)).astype(np.float32)
    k, v = (rng.normal(size=(1, kv_heads, kv_len, head_dim)).astype(np.float32) for _ in range(2))
    bias = jnp.asarray(rng.integers(-2, 3, (1, bias_heads, kv_len)), jnp.float32)
    start, end, table = causal_key_lists(bias, q_len, block_q, window, multiple=block_k)
    constants = launch_constants(q.shape, k.shape, table.shape, scale=0.3, block_q=block_q, block_k=block_k,
                                 q_offset=q_offset, bias_heads=bias_heads, own_keys=True, num_stages=2)
    qk_scale = constants.pop("qk_scale")
    as_torch = lambda x: torch.from_numpy(np.array(x))  # noqa: E731
    out = torch.full(q.shape, float("nan"))
    lse = torch.full((1, bias_heads, tiles, block_q * per_bias), float("nan"))
    dma_forward_kernel[(tiles, 1, bias_heads)](
        *(as_torch(x) for x in (q, k, v, bias, start, end, table)), qk_scale, out, lse, **constants)
    q_tiles = _sequence_to_tiles(jnp.asarray(q), bias_heads, block_q)
    ref_out, ref_lse = interval_attention_reference(q_tiles, k, v, bias, start, end, scale=0.3, block_q=block_q,
                                                    q_offset=q_offset)
    got_out = _sequence_to_tiles(jnp.asarray(out.numpy()), bias_heads, block_q)
    got_lse = lse.numpy()
    lse_ok = np.isinf(ref_lse) == np.isinf(got_lse)
    finite = ~np.isinf(np.asarray(ref_lse))
    return dict(out_err=float(np.abs(got_out - ref_out).max()),
                lse_err=float(np.abs(got_lse[finite] - np.asarray(ref_lse)[finite]).max()),
                empty_rows=int((~finite).sum()), empty_rows_match=bool(np.all(lse_ok)))


if __name__ == "__main__":
    print(json.dumps({name: run_case(i, *case) for i, (name, case) in enumerate(CASES.items())}))
