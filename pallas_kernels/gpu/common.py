"""Pieces shared by the GPU DMA kernels: the gathered, exactly masked score block, and call options.

Conventions of every kernel here (one program = one (batch, bias head) slab):
- queries come in tiles of ``block_q`` positions x ``R`` heads = ``rows`` rows; row ``r`` of
  tile ``n`` is query position ``n * block_q + r // R`` of the call, i.e. sequence position
  ``q_offset + n * block_q + r // R``;
- key ``j`` is kept by sequence positions ``start[j] <= t < end[j]`` (its live range), which
  also encodes segments, key masks and -inf bias, so no other mask input is needed;
- key lists hold indices, -1 for an empty entry.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from pallas_kernels.shared import MASKED, varying_like

@dataclasses.dataclass(frozen=True)
class KernelOptions:
    """Static options of a kernel launch.

    interpret: run in Pallas interpret mode (CPU tests) instead of compiling for the GPU.
    num_warps, num_stages: Triton launch options.
    poison_outputs: start every output as NaN (or int32 min), so that tests catch elements a
      kernel never writes.
    """

    interpret: bool = False
    num_warps: int = 4
    num_stages: int = 2
    poison_outputs: bool = False

    def call_kwargs(self) -> dict:
        if self.interpret:
            return dict(interpret=True)
        from jax.experimental.pallas import triton as plgpu

        return dict(compiler_params=plgpu.CompilerParams(num_warps=self.num_warps, num_stages=self.num_stages))


def query_positions(tile, rows, heads_per_tile, block_q, q_offset):
    """int32 (rows,): sequence position of each row of query tile ``tile``."""
    return q_offset + tile * block_q + lax.broadcasted_iota(jnp.int32, (rows,), 0) // heads_per_tile


def gather_keys(keys, kv_len, k_ref, v_ref, bias_ref, start_ref, end_ref):
    """Gather key rows for an index vector (-1 or >= kv_len: absent).

    Returns (present (n,), k (n, D), v (n, D), bias float32 (n,), start (n,), end (n,)).
    """
    present = (keys >= 0) & (keys < kv_len)
    safe = jnp.where(present, keys, 0)
    return (
        present,
        k_ref[safe, :],
        v_ref[safe, :],
        bias_ref[safe].astype(jnp.float32),
        start_ref[safe],
        end_ref[safe],
    )


def masked_scores(q, query, present, k, bias, start, end, scale):
    """Logits (rows, n) of ``scale * q.k + bias`` and the keep mask, MASKED where not kept."""
    logits = jnp.dot(q, k.T, preferred_element_type=jnp.float32) * scale + bias[None, :]
    keep = present[None, :] & (start[None, :] <= query[:, None]) & (query[:, None] < end[None, :])
    return jnp.where(keep, logits, MASKED), keep


def poison_like(shape: jax.ShapeDtypeStruct) -> jax.Array:
    if jnp.issubdtype(shape.dtype, jnp.floating):
        return jnp.full(shape.shape, jnp.nan, shape.dtype)
    return jnp.full(shape.shape, jnp.iinfo(shape.dtype).min, shape.dtype)


def launch(kernel, *, grid, in_specs, out_specs, out_shape, args, options, initial_outputs=None):
    """``pl.pallas_call`` with optional initial output contents.

    ``initial_outputs`` (one array per output), or NaN poison when ``options.poison_outputs``,
    are passed as extra inputs aliased to the outputs: elements the kernel does not write keep
    them. The kernel sees the same refs as without them.
    """
    out_shape = varying_like(out_shape, args)
    if initial_outputs is None and options.poison_outputs:
        initial_outputs = [poison_like(shape) for shape in out_shape]
    if initial_outputs is None:
        return pl.pallas_call(
            kernel, grid=grid, in_specs=in_specs, out_specs=out_specs, out_shape=out_shape, **options.call_kwargs()
        )(*args)
    inputs, outputs = len(args), len(out_shape)

    def without_initial_refs(*refs):
        kernel(*refs[:inputs], *refs[inputs + outputs :])

    return pl.pallas_call(
        without_initial_refs,
        grid=grid,
        in_specs=list(in_specs) + list(out_specs),
        out_specs=out_specs,
        out_shape=out_shape,
        input_output_aliases={inputs + i: i for i in range(outputs)},
        **options.call_kwargs(),
    )(*args, *initial_outputs)
