"""Pieces shared by the TPU DMA kernels: launch options, the double-buffered row gather, masking.

Layout conventions (prepared by ``dma_jax/ops/pallas_tpu.py``; one program works on one
(batch, bias head) and one query tile):

- q tiles (B, Hb, tiles, rows, Dp): ``rows = block_q * R`` rows, position-major (row r is query
  position ``r // R`` of the tile), ``Dp`` = D zero-padded to a multiple of 128 (lanes);
- k, v (B, Hkv, kv_rows, Dp) stay in HBM (``pl.ANY``): Tk is padded with zero rows so that a
  tile's own keys ``[t0, t0 + own_width)`` are always in bounds, and row ``zero_row`` is zeros:
  empty list entries (-1) fetch it, so every gathered row is finite;
- per tile, a key list: ``W`` carried keys (slot table, -1 = empty) then the tile's own keys;
  the list's per-key data rides in lanes: bias (float32), start, end (int32), (chunks, block_k)
  per tile, with start = end = 0 for absent keys (never kept);
- per-query vectors (log-sum-exp, delta, row offsets) are lane rows (1, rows) in HBM and become
  columns (rows, 1) inside the kernel.

Key j is kept by sequence positions ``start_j <= t < end_j`` (segments, key masks and -inf bias
included), exactly as on the GPU path (``pallas_kernels.gpu.common``).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels.shared import MASKED, varying_like

NT_DIMS = (((1,), (1,)), ((), ()))  # a @ b.T
LANES = 128
SUBLANES = 8


@dataclasses.dataclass(frozen=True)
class TpuKernelOptions:
    """Static options of a TPU kernel launch.

    interpret: run in TPU interpret mode (``pltpu.InterpretParams``: simulated DMAs and
      semaphores, uninitialised VMEM filled with NaN) instead of compiling with Mosaic.
    poison_outputs: fill every blocked output with NaN (int min) at the start of each program,
      so tests catch elements a kernel never writes (interpret mode reuses output buffers
      across grid steps, so aliasing a NaN input would not be enough).
    vmem_limit_bytes: Mosaic's scoped VMEM limit (None: its default).
    dma_execution_mode: interpret mode only. "on_wait" runs a copy when it is waited for (a read
      before the wait sees NaN); "eager" runs it when started (a copy into a buffer still being
      computed on overwrites it).
    """

    interpret: bool = False
    poison_outputs: bool = False
    vmem_limit_bytes: int | None = None
    dma_execution_mode: str = "on_wait"

    def call_kwargs(self, dimension_semantics) -> dict:
        if self.interpret:
            return dict(interpret=pltpu.InterpretParams(dma_execution_mode=self.dma_execution_mode))
        params = pltpu.CompilerParams(
            dimension_semantics=tuple(dimension_semantics), vmem_limit_bytes=self.vmem_limit_bytes
        )
        return dict(compiler_params=params)


def poison(*refs) -> None:
    """Fill output refs with NaN (floats) or the minimum (ints)."""
    for ref in refs:
        if jnp.issubdtype(ref.dtype, jnp.floating):
            ref[...] = jnp.full(ref.shape, jnp.nan, ref.dtype)
        else:
            ref[...] = jnp.full(ref.shape, jnp.iinfo(ref.dtype).min, ref.dtype)


def tpu_call(
    kernel, *, grid, num_scalar_prefetch, in_specs, out_specs, out_shape, scratch_shapes, args, options,
    dimension_semantics, input_output_aliases=None,
):
    """``pl.pallas_call`` with a ``PrefetchScalarGridSpec``; the first ``num_scalar_prefetch``
    args go to SMEM before the grid runs and are passed to every index map."""
    grid_spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=num_scalar_prefetch, grid=grid, in_specs=in_specs, out_specs=out_specs,
        scratch_shapes=scratch_shapes,
    )
    return pl.pallas_call(
        kernel,
        grid_spec=grid_spec,
        out_shape=varying_like(out_shape, args),
        input_output_aliases=input_output_aliases or {},
        **options.call_kwargs(dimension_semantics),
    )(*args)


def column(row_ref):
    """A (1, n) lane-row block as an (n, 1) column (the splash attention backward's idiom)."""
    return jnp.expand_dims(row_ref[0], -1)


def column_to_row(col):
    """(n, 1) -> (1, n) with broadcasts, an iota mask and a sublane sum (no relayout or transpose)."""
    n = col.shape[0]
    diagonal = lax.broadcasted_iota(jnp.int32, (n, n), 0) == lax.broadcasted_iota(jnp.int32, (n, n), 1)
    return jnp.sum(jnp.where(diagonal, col, 0), axis=0, keepdims=True).astype(col.dtype)


def masked_scores(q, k, bias, start, end, query, scale):
    """Logits (rows, n) of ``scale * q.k + bias``, MASKED where not kept, and the keep mask.

    q (rows, Dp), k (n, Dp); bias float32, start, end int32: (1, n) lanes; query int32 (rows, 1).
    """
    logits = lax.dot_general(q, k, NT_DIMS, preferred_element_type=jnp.float32) * scale + bias
    keep = (start <= query) & (query < end)
    return jnp.where(keep, logits, MASKED), keep


class ChunkGather:
    """Double-buffered gather of ``block_k`` key and value rows at a time into VMEM.

    Chunk ``c < carried`` holds list entries ``[c * block_k, (c + 1) * block_k)`` of ``keys_ref``
    (SMEM), one row DMA each (-1 fetches ``zero_row``); chunk ``carried + j`` is the contiguous
    run ``[own_start + j * block_k, ...)``, one DMA. ``start(c, slot)`` issues a chunk's copies into
    buffer ``slot`` of ``k_buf``/``v_buf`` (2, block_k, Dp); ``wait(c, slot)`` waits for exactly
    those copies (semaphore ``sems[slot]``).
    """

    def __init__(self, k_hbm, v_hbm, k_buf, v_buf, sems, keys_ref, *, carried, own_start, zero_row):
        self.k_hbm, self.v_hbm, self.k_buf, self.v_buf, self.sems = k_hbm, v_hbm, k_buf, v_buf, sems
        self.keys_ref, self.carried, self.own_start, self.zero_row = keys_ref, carried, own_start, zero_row
        self.block_k = k_buf.shape[1]

    def _row_copies(self, c, slot, i):
        key = self.keys_ref[c * self.block_k + i]
        row = pl.ds(jnp.where(key >= 0, key, self.zero_row), 1)
        return [
            pltpu.make_async_copy(src.at[row], dst.at[slot, pl.ds(i, 1)], self.sems.at[slot])
            for src, dst in ((self.k_hbm, self.k_buf), (self.v_hbm, self.v_buf))
        ]

    def _run_copies(self, c, slot):
        first = self.own_start + (c - self.carried) * self.block_k
        return [
            pltpu.make_async_copy(src.at[pl.ds(first, self.block_k)], dst.at[slot], self.sems.at[slot])
            for src, dst in ((self.k_hbm, self.k_buf), (self.v_hbm, self.v_buf))
        ]

    def _each(self, c, slot, action):
        @pl.when(c < self.carried)
        def _():
            def row(i, _):
                for copy in self._row_copies(c, slot, i):
                    action(copy)

            lax.fori_loop(0, self.block_k, row, None)

        @pl.when(c >= self.carried)
        def _():
            for copy in self._run_copies(c, slot):
                action(copy)

    def start(self, c, slot):
        self._each(c, slot, lambda copy: copy.start())

    def wait(self, c, slot):
        self._each(c, slot, lambda copy: copy.wait())


def chunk_loop(gather, total, body, carry):
    """Run ``body(c, slot, carry) -> carry`` over chunks ``0 .. total - 1``, each after its copies
    have landed; the next chunk's copies are issued before the current one is computed."""

    @pl.when(total > 0)
    def _():
        gather.start(0, 0)

    def step(c, carry):
        slot = c % 2

        @pl.when(c + 1 < total)
        def _():
            gather.start(c + 1, 1 - slot)

        gather.wait(c, slot)
        return body(c, slot, carry)

    return lax.fori_loop(0, total, step, carry)


@dataclasses.dataclass(frozen=True)
class QueryTileInputs:
    """BlockSpecs of the query-major kernels (forward, backward pass 1), grid (B, Hb, tiles).

    keys: int32 (B, Hb, tiles, W) carried keys, one tile's row in SMEM; meta: three arrays
    (B, Hb, tiles, chunks, block_k) (bias, start, end of each list entry); offsets: int32
    (1, rows), the position of each row in its tile; k, v: in HBM.
    """

    rows: int
    head_dim: int
    width: int
    chunks: int
    block_k: int

    def tile(self, *shape):
        return pl.BlockSpec((None, None, None) + shape, lambda b, h, n, *_: (b, h, n) + (0,) * len(shape))

    def keys(self):
        return pl.BlockSpec((None, None, None, self.width), lambda b, h, n, *_: (b, h, n, 0), memory_space=pltpu.SMEM)

    def q(self):
        return self.tile(self.rows, self.head_dim)

    def row(self):
        return self.tile(1, self.rows)

    def meta(self):
        return self.tile(self.chunks, self.block_k)

    def offsets(self):
        return pl.BlockSpec((1, self.rows), lambda b, h, n, *_: (0, 0))

    @staticmethod
    def hbm():
        return pl.BlockSpec(memory_space=pl.ANY)

    def scratch(self, dtype):
        """Double buffers for gathered k and v rows, and their DMA semaphores."""
        buffer = pltpu.VMEM((2, self.block_k, self.head_dim), dtype)
        return [buffer, buffer, pltpu.SemaphoreType.DMA((2,))]


def tile_context(counts_ref, *, block_q, q_offset, own_chunks, carried_rows):
    """(b, h, n, carried chunk count, total chunks, t0, meta row of chunk c) for this program."""
    b, h, n = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    carried = counts_ref[(b * pl.num_programs(1) + h) * pl.num_programs(2) + n]
    t0 = q_offset + n * block_q
    meta_row = lambda c: pl.ds(jnp.where(c < carried, c, c - carried + carried_rows), 1)
    return b, h, n, carried, carried + own_chunks, t0, meta_row
