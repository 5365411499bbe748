"""Random attention problems shared by the test files."""

import jax.numpy as jnp
import numpy as np

from dma_jax import live_ranges
from dma_jax.selection.slots import carried_key_table, key_slots


def random_qkv(rng: np.random.Generator, case):
    """Standard-normal float64 q (B, Tq, H, D), k and v (B, Tk, Hkv, D) for a test case.

    ``case`` has batch, q_len, kv_len, heads, kv_heads and head_dim attributes.
    """
    q = rng.standard_normal((case.batch, case.q_len, case.heads, case.head_dim))
    k = rng.standard_normal((case.batch, case.kv_len, case.kv_heads, case.head_dim))
    v = rng.standard_normal((case.batch, case.kv_len, case.kv_heads, case.head_dim))
    return q, k, v


def causal_key_lists(bias, q_len, block_q, window, multiple):
    """The index inputs of the forward kernels for causal DMA over ``bias`` (B, Hb, Tk): start and
    end (B, Hb, Tk) and the carried-key table (B, Hb, tiles, W), W padded with -1 to a multiple of
    ``multiple``."""
    end = live_ranges(bias, window)
    start = jnp.broadcast_to(jnp.arange(bias.shape[-1], dtype=jnp.int32), end.shape)
    table = carried_key_table(end, key_slots(end, window), q_len, block_q, window)
    width = -(-table.shape[-1] // multiple) * multiple
    return start, end, jnp.pad(table, ((0, 0),) * 3 + ((0, width - table.shape[-1]),), constant_values=-1)


def op_output_and_grads(length, window, config):
    """A jitted no-argument call: ``dma_attention``'s output and the gradients of q, k, v and bias
    for a random cotangent, on ``benchmarks.common.inputs(length)`` (B = 1, H = 32, Hkv = 8,
    D = 128, bf16) with ``config`` as the implementation. For GPU tests comparing kernel backends."""
    import jax

    from benchmarks.common import inputs
    from dma_jax import dma_attention

    q, k, v, bias = inputs(length, seed=4)
    cotangent = jax.random.normal(jax.random.key(2), q.shape, q.dtype)

    def run():
        out, vjp = jax.vjp(lambda *a: dma_attention(*a, window, implementation=config), q, k, v, bias)
        return (out,) + vjp(cotangent)

    return jax.jit(run)
