"""Launch ``chain_roots_kernel.root_values_kernel`` from JAX through ``jax_triton.triton_call``
(CUDA only: ``triton_call`` has no CPU lowering; the kernel runs in Triton's CPU interpreter for
tests, ``tests/kernels/test_jax_triton_chain_roots.py``). Triton and jax-triton are imported only
when it launches, so the selection imports this module without them."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from pallas_kernels.shared import next_pow2, varying_like

# A row lives in one program; Triton stages each gather through shared memory, 4 bytes a position:
# 128 KiB at 32K keys, of the 227 KiB an sm_90 block may use.
MAX_LENGTH = 32768


def root_values(pointer: jax.Array, values: jax.Array) -> jax.Array:
    """``values[root(i)]`` for every position i of every row, one Triton program a row.

    Args:
      pointer: int32 (..., T): each position's parent in its row; following parents from any
        position ends at a root (``pointer[r] == r``) within T - 1 steps.
      values: int32 (..., T).

    Returns:
      int32 (..., T). Rows are padded to a power of two with roots of value 0 and cut back.
    """
    *lead, length = pointer.shape
    if length > MAX_LENGTH:
        raise ValueError(f"rows of {length} keys exceed the kernel's {MAX_LENGTH} (one row in shared memory)")
    import jax_triton

    from pallas_kernels.jax_triton.chain_roots_kernel import num_warps, root_values_kernel, turns

    padded = next_pow2(length)
    rows = math.prod(lead)
    pointer = pointer.reshape(rows, length).astype(jnp.int32)
    values = values.reshape(rows, length).astype(jnp.int32)
    if padded != length:
        extra = jnp.broadcast_to(jnp.arange(length, padded, dtype=jnp.int32), (rows, padded - length))
        pointer = jnp.concatenate([pointer, extra], axis=1)
        values = jnp.pad(values, ((0, 0), (0, padded - length)))
    out_shape = varying_like([jax.ShapeDtypeStruct((rows, padded), jnp.int32)], (pointer,))[0]
    out = jax_triton.triton_call(pointer, values, kernel=root_values_kernel, out_shape=out_shape, grid=(rows,),
                                 num_warps=num_warps(padded), num_stages=1, LENGTH=padded, TURNS=turns(padded))
    return out[:, :length].reshape(*lead, length)
