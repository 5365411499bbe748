"""Launch the Triton forward kernel (``forward_kernel.py``) from JAX through ``jax_triton.triton_call``.

jax-triton compiles the kernel with the Triton package installed beside JAX (3.6 on our GPU
machine), not with XLA's copy of Triton, and calls it as a custom call: it runs on CUDA only
(``triton_call`` has no CPU lowering). On the CPU the kernel itself runs in Triton's interpreter,
for tests (``tests/kernels/test_jax_triton_forward.py``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.jax_triton.forward_kernel import dma_forward_kernel, launch_constants
from pallas_kernels.shared import varying_like


def dma_forward(q, k, v, bias, start, end, table, *, scale, block_q, block_k, q_offset, bias_heads,
                own_keys=True, num_warps=4, num_stages=2):
    """Forward kernel, sequence layout only; arguments as ``pallas_kernels.gpu.forward.dma_forward``
    with ``bias_heads`` given.

    Args:
      q: (B, tiles * block_q, Hb * R, D), R and D powers of two, D >= 16.
      k, v: (B, Hkv, Tk, D). bias: float (B, Hb, Tk). start, end: int32 (B, Hb, Tk).
      table: int32 (B, Hb, tiles, W), W a positive multiple of ``block_k``; -1 empty.

    Returns:
      out (q's shape and dtype), lse float32 (B, Hb, tiles, block_q * R), +inf on empty rows.
    """
    import jax_triton

    batch, padded_len, heads, head_dim = q.shape
    tiles = padded_len // block_q
    constants = launch_constants(q.shape, k.shape, table.shape, scale=scale, block_q=block_q, block_k=block_k,
                                 q_offset=q_offset, bias_heads=bias_heads, own_keys=own_keys, num_stages=num_stages)
    out_shape = varying_like([jax.ShapeDtypeStruct(q.shape, q.dtype),
                              jax.ShapeDtypeStruct((batch, bias_heads, tiles, block_q * (heads // bias_heads)),
                                                   jnp.float32)], (q,))
    qk_scale = np.float32(constants.pop("qk_scale"))  # a Python float would reach Triton as fp64
    return jax_triton.triton_call(
        q, k, v, bias, start, end, table, qk_scale, kernel=dma_forward_kernel, out_shape=out_shape,
        grid=(tiles, batch, bias_heads), num_warps=num_warps, num_stages=num_stages, **constants,
    )
