"""DMA through the Pallas GPU kernels, with a custom VJP; layouts prepared here.

The selection stage (``dma_jax.selection.key_tables``: live ranges, slots and tables, in XLA)
gives the kernels (``pallas_kernels.gpu``) index tables only. Layout: the R = H / Hb query heads
of a bias head are packed with ``block_q`` consecutive positions into one tile of
``rows = block_q * R`` rows. Head dims and R are padded to powers of two (Triton needs
power-of-two blocks); padded rows and columns are zeros.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from dma_jax.remat import OUTPUT, STATS
from dma_jax.selection.slots import ever_carried
from dma_jax.selection.tables import KeyTables, key_tables, num_tiles, table_width
from pallas_kernels.gpu.backward import dma_backward_queries, dma_backward_slots
from pallas_kernels.gpu.common import KernelOptions
from pallas_kernels.gpu.forward import dma_forward
from pallas_kernels.shared import next_pow2, vary_like


FORWARD_BACKENDS = ("pallas_triton", "jax_triton", "mosaic_gpu", "auto")
FORWARD_BACKEND_VARIABLE = "DMA_FORWARD_BACKEND"  # environment variable: PallasConfig's default forward_backend
BACKWARD_BACKENDS = ("pallas_triton", "mosaic_gpu", "auto")
BACKWARD_BACKEND_VARIABLE = "DMA_BACKWARD_BACKEND"  # environment variable: PallasConfig's default backward_backend


def _default_forward_backend() -> str:
    return os.environ.get(FORWARD_BACKEND_VARIABLE, "auto")


def _default_backward_backend() -> str:
    return os.environ.get(BACKWARD_BACKEND_VARIABLE, "auto")


# environment variables (0 or 1): PallasConfig's defaults of kv_sequence_layout and q_sequence_backward
# and fused_key_grads (all on when unset)
KV_SEQUENCE_LAYOUT_VARIABLE = "DMA_KV_SEQUENCE_LAYOUT"
Q_SEQUENCE_BACKWARD_VARIABLE = "DMA_Q_SEQUENCE_BACKWARD"
FUSED_KEY_GRADS_VARIABLE = "DMA_FUSED_KEY_GRADS"


def _flag_from_environment(name: str, default: str = "1") -> bool:
    value = os.environ.get(name, default)
    if value not in ("0", "1"):
        raise ValueError(f"${name} must be 0 or 1, got {value!r}")
    return value == "1"


@dataclasses.dataclass(frozen=True)
class PallasConfig:
    """Tiles and launch options of the Pallas GPU kernels (static, hashable).

    ``dma_attention(..., implementation=PallasConfig(...))`` uses them. Fields left None are
    filled per call by ``resolve`` (from D, R = H / Hb and the dtype); the backward runs on its
    own (smaller or equal) query tiles: ``block_q_bwd`` must divide ``block_q``.

    block_q: forward query positions per tile (default 128 rows, 64 if D > 128, divided by R).
    block_k: keys gathered per forward step (capped at ``block_q``; the Mosaic GPU kernel always
      takes 64).
    block_q_bwd, block_k_bwd: the same for both backward passes (default: ``block_q``, 64).
    block_slots: slots per program of the key-major backward.
    options, options_bwd, options_slots: launch options of the forward, of the query-major
      backward and of the key-major backward (None: ``options_bwd``).
    sequence_layout: the forward reads q and writes its output in their (B, T, H, D) layout
      instead of transposing them into tiles; used where R and D are powers of two (measured on
      an H200 at 4K: 0.79 against 0.92 ms, docs/kernels.md).
    slot_sums_transposed: the key-major backward accumulates dK^T and dV^T (D x slots), so its
      per-tile products run on wgmma instead of mma.sync; used for 16-bit inputs with D <= 128,
      where it fits in shared memory (measured on an H200 at 32K: forward+backward 17.8 against
      18.8 ms).
    forward_backend: which compiler builds the forward kernel (``FORWARD_BACKENDS``):
      "pallas_triton" (``pallas_kernels.gpu``, the Triton lowering of Pallas, which JAX 0.11
      deprecates; runs in interpret mode too), "jax_triton" (``pallas_kernels.jax_triton``, a Triton
      kernel launched with ``jax_triton.triton_call``; CUDA only, sequence layout only) or
      "mosaic_gpu" (``pallas_kernels.mosaic_gpu``; Hopper only, sequence layout only, and the limits
      of ``dma_forward_mosaic``), or "auto": "mosaic_gpu" for the calls it takes on a Hopper GPU,
      "pallas_triton" for the others. The default is the environment variable
      ``DMA_FORWARD_BACKEND`` when set, else "auto".
    backward_backend: which compiler builds the two backward passes (``BACKWARD_BACKENDS``):
      "pallas_triton" (``pallas_kernels.gpu``), "mosaic_gpu" (``pallas_kernels.mosaic_gpu``;
      Hopper only, within the limits of ``dma_backward_queries_mosaic`` and
      ``dma_backward_slots_mosaic``) or "auto" (each pass on Mosaic GPU where it takes the call on
      a Hopper GPU, else "pallas_triton"). The default is ``DMA_BACKWARD_BACKEND`` when set, else
      "auto".
    kv_sequence_layout: the Mosaic GPU kernels gather k and v rows from their (B, Tk, Hkv, D)
      layout (a row stride of Hkv * D) instead of from a transposed (B, Hkv, Tk, D) copy; the other
      backends still get the copy. On by default (it saves one read and one write of k and v per
      forward: docs/kernels.md has the H100 timings); the default is ``DMA_KV_SEQUENCE_LAYOUT``
      (0 or 1) when set.
    q_sequence_backward: with the sequence layout and one query head per bias head (R = 1), the
      Mosaic GPU backward passes read q and dO, and write dq, in their (B, T, H, D) layout (one TMA
      box a tile) instead of transposing them into tiles; where either pass is not on Mosaic GPU
      both run on tiles. On by default (it saves one read and one write of q and of dO per
      backward); the default is ``DMA_Q_SEQUENCE_BACKWARD`` (0 or 1) when set.
    fused_key_grads: where both backward passes run on Mosaic GPU with q_sequence_backward's
      conditions, k in (B, Tk, Hkv, D), one bias head per kv head and the queries being the keys,
      the key-major pass runs first and the query-major pass adds its float32 sums of dK and dV to
      its own keys' and writes the finished gradients in k's dtype and layout, instead of both
      passes writing float32 sums that XLA adds. The same float32 additions, except that the GPU
      compiler contracts dK's scale and sum into one fused multiply-add (a last-bit difference in a
      few dK elements in 10^5); bitwise reproducible run to run. It removes a read of four float32
      (B, Hb, Tk, D) arrays a call. On by default (0.34 ms of the 2K model layer's 4.56 ms
      forward+backward on an H100, docs/kernels.md); the default is ``DMA_FUSED_KEY_GRADS`` (0 or
      1) when set.
    """

    block_q: int | None = None
    block_k: int = 64
    block_q_bwd: int | None = None
    block_k_bwd: int = 64
    block_slots: int = 32
    options: KernelOptions = KernelOptions(num_warps=4, num_stages=2)
    options_bwd: KernelOptions = KernelOptions(num_warps=4, num_stages=2)
    options_slots: KernelOptions | None = None
    sequence_layout: bool = True
    slot_sums_transposed: bool = True
    forward_backend: str = dataclasses.field(default_factory=_default_forward_backend)
    backward_backend: str = dataclasses.field(default_factory=_default_backward_backend)
    kv_sequence_layout: bool = dataclasses.field(
        default_factory=functools.partial(_flag_from_environment, KV_SEQUENCE_LAYOUT_VARIABLE))
    q_sequence_backward: bool = dataclasses.field(
        default_factory=functools.partial(_flag_from_environment, Q_SEQUENCE_BACKWARD_VARIABLE))
    fused_key_grads: bool = dataclasses.field(
        default_factory=functools.partial(_flag_from_environment, FUSED_KEY_GRADS_VARIABLE))

    def __post_init__(self):
        if self.forward_backend not in FORWARD_BACKENDS:
            raise ValueError(f"forward_backend must be one of {FORWARD_BACKENDS}, got {self.forward_backend!r} "
                             f"(the default comes from ${FORWARD_BACKEND_VARIABLE} when it is set)")
        if self.backward_backend not in BACKWARD_BACKENDS:
            raise ValueError(f"backward_backend must be one of {BACKWARD_BACKENDS}, got {self.backward_backend!r} "
                             f"(the default comes from ${BACKWARD_BACKEND_VARIABLE} when it is set)")

    def interpreted(self, poison_outputs: bool = False) -> "PallasConfig":
        """Small tiles and interpret mode, for CPU tests (the layout flags are kept; the kernels are
        the Pallas ones, the only backend that runs in interpret mode)."""
        options = KernelOptions(interpret=True, poison_outputs=poison_outputs)
        return PallasConfig(block_q=16, block_k=16, block_q_bwd=8, block_k_bwd=8, block_slots=16, options=options,
                            options_bwd=options, sequence_layout=self.sequence_layout,
                            slot_sums_transposed=self.slot_sums_transposed, forward_backend="pallas_triton",
                            backward_backend="pallas_triton", kv_sequence_layout=self.kv_sequence_layout,
                            q_sequence_backward=self.q_sequence_backward, fused_key_grads=self.fused_key_grads)

    def resolve(self, *, head_dim: int, per_bias: int, dtype) -> "PallasConfig":
        """This config with every field set for a call with head dim D, R = ``per_bias`` query heads
        per bias head and input ``dtype``; the layout flags are turned off where they do not apply."""
        rows_per_pos = next_pow2(per_bias)
        block_q = self.block_q or max(16, (128 if head_dim <= 128 else 64) // rows_per_pos)
        block_q_bwd = self.block_q_bwd or block_q
        if block_q % block_q_bwd:
            raise ValueError(f"block_q_bwd={block_q_bwd} must divide block_q={block_q}")
        options_slots = self.options_slots or self.options_bwd
        dim = padded_head_dim(head_dim)
        sequence_layout = self.sequence_layout and rows_per_pos == per_bias and dim == head_dim
        if self.forward_backend in ("jax_triton", "mosaic_gpu") and not sequence_layout:
            raise ValueError(f"forward_backend={self.forward_backend!r} needs the sequence layout: R = {per_bias} "
                             f"query heads per bias head and D = {head_dim} must be powers of two (D >= 16)")
        return dataclasses.replace(
            self, block_q=block_q, block_k=min(self.block_k, block_q), block_q_bwd=block_q_bwd,
            block_k_bwd=min(self.block_k_bwd, block_q_bwd), options_slots=options_slots,
            sequence_layout=sequence_layout,
            slot_sums_transposed=self.slot_sums_transposed and _transposed_sums_fit(dtype, dim, options_slots),
        )

    @property
    def table_multiple(self) -> int:
        """Every key table's width is a multiple of this: the key blocks that read it (resolved)."""
        mosaic = MOSAIC_BLOCK_K if self.forward_backend in ("mosaic_gpu", "auto") else 1
        mosaic_bwd = MOSAIC_BLOCK_SLOTS if self.backward_backend in ("mosaic_gpu", "auto") else 1
        return max(self.block_k, self.block_k_bwd, self.block_slots, mosaic, mosaic_bwd)


def padded_head_dim(head_dim: int) -> int:
    """D zero-padded to a power of two, at least 16."""
    return max(16, next_pow2(head_dim))


@dataclasses.dataclass(frozen=True)
class _Call:
    """The static part of one kernel call: the resolved config and what the call adds to it."""

    config: PallasConfig
    scale: float
    q_offset: int  # sequence position of query 0
    causal: bool  # causal tables list carried keys; the tile's own keys are visited too
    bias_heads: int

    @property
    def sequence_bias_heads(self) -> int | None:
        """Hb when q and the output stay in the (B, T, H, D) layout, else None."""
        return self.bias_heads if self.config.sequence_layout else None


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _kernels(call, q_tiles, k, v, bias, start, end, table, table_bwd):
    return _kernels_fwd(call, q_tiles, k, v, bias, start, end, table, table_bwd)[0]


MOSAIC_BLOCK_K = 64  # keys a step of the Mosaic GPU forward (the only size it takes)
MOSAIC_BLOCK_SLOTS = 64  # slots a program of the Mosaic GPU key-major backward (the only size it takes)


def _is_hopper(device=None) -> bool:
    device = device or jax.devices()[0]
    return device.platform == "gpu" and str(getattr(device, "compute_capability", "")).startswith("9")


def _takes(check, *args, **kwargs) -> bool:
    """Whether a kernel's ``check_arguments`` accepts the call (it raises a ValueError otherwise)."""
    try:
        check(*args, **kwargs)
    except ValueError:
        return False
    return True


def mosaic_forward_applies(q, k, v, bias, start, end, table, *, block_q, bias_heads, own_keys, num_stages,
                           interpret=False, device=None, kv_sequence=False) -> bool:
    """Whether ``forward_backend="auto"`` runs this call's forward on Mosaic GPU: a Hopper GPU
    (compute capability 9.x; not interpret mode, not the sequence-less tile layout) and arguments
    within ``dma_forward_mosaic``'s limits."""
    from pallas_kernels.mosaic_gpu.forward import check_arguments

    if interpret or bias_heads is None or not _is_hopper(device):
        return False
    return _takes(check_arguments, q, k, v, bias, start, end, table, block_q=block_q, block_k=MOSAIC_BLOCK_K,
                  bias_heads=bias_heads, num_stages=num_stages, own_keys=own_keys, kv_sequence=kv_sequence)


def mosaic_backward_applies(*args, block_q, own_keys=True, num_stages=2, interpret=False,
                            device=None, kv_sequence=False, q_sequence=False) -> tuple[bool, bool]:
    """Whether ``backward_backend="auto"`` runs this call's (query-major, key-major) passes on
    Mosaic GPU: a Hopper GPU (not interpret mode) and arguments (those of ``dma_backward_slots``)
    within ``dma_backward_queries_mosaic``'s and ``dma_backward_slots_mosaic``'s limits."""
    from pallas_kernels.mosaic_gpu import backward_queries, backward_slots

    if interpret or not _is_hopper(device):
        return False, False

    layouts = dict(block_q=block_q, kv_sequence=kv_sequence, q_sequence=q_sequence)
    return (_takes(backward_queries.check_arguments, *args, block_k=MOSAIC_BLOCK_K, num_stages=num_stages,
                   own_keys=own_keys, **layouts),
            _takes(backward_slots.check_arguments, *args, **layouts))


def kernel_kv_layout(config, x):
    """A k- or v-shaped array given as (B, Tk, Hkv, D), in the layout ``config``'s kernels read:
    as it is with ``kv_sequence_layout``, else (B, Hkv, Tk, D)."""
    return x if config.kv_sequence_layout else jnp.swapaxes(x, 1, 2)


def _swap_kv_layout(call, x):
    """Where ``kv_sequence_layout`` keeps k and v in (B, Tk, Hkv, D), swap a k-, v-, dk- or dv-shaped
    array between that and (B, Hkv, Tk, D): the copy the Triton-lowered and jax-triton kernels
    read, and the gradients' way back. Without it, ``x`` as it is."""
    return jnp.swapaxes(x, 1, 2) if call.config.kv_sequence_layout else x


def _forward(call, q_tiles, k, v, bias, start, end, table):
    """The forward kernel of ``call.config.forward_backend``: (out, lse), as ``dma_forward``; k and
    v in the layout ``kv_sequence_layout`` names."""
    config = call.config
    backend = config.forward_backend
    if backend == "auto":
        applies = mosaic_forward_applies(q_tiles, k, v, bias, start, end, table, block_q=config.block_q,
                                         bias_heads=call.sequence_bias_heads, own_keys=call.causal,
                                         num_stages=config.options.num_stages, interpret=config.options.interpret,
                                         kv_sequence=config.kv_sequence_layout)
        backend = "mosaic_gpu" if applies else "pallas_triton"
    common = dict(scale=call.scale, block_q=config.block_q, block_k=config.block_k, q_offset=call.q_offset,
                  own_keys=call.causal)
    if backend == "mosaic_gpu":
        from pallas_kernels.mosaic_gpu.forward import dma_forward_mosaic

        common["block_k"] = MOSAIC_BLOCK_K
        return dma_forward_mosaic(q_tiles, k, v, bias, start, end, table, bias_heads=call.bias_heads,
                                  num_stages=config.options.num_stages, kv_sequence=config.kv_sequence_layout,
                                  **common)
    k, v = _swap_kv_layout(call, k), _swap_kv_layout(call, v)
    if backend == "pallas_triton":
        return dma_forward(q_tiles, k, v, bias, start, end, table, options=config.options,
                           bias_heads=call.sequence_bias_heads, **common)
    from pallas_kernels.jax_triton.forward import dma_forward as forward

    return forward(q_tiles, k, v, bias, start, end, table, bias_heads=call.bias_heads,
                   num_warps=config.options.num_warps, num_stages=config.options.num_stages, **common)


def _kernels_fwd(call, q_tiles, k, v, bias, start, end, table, table_bwd):
    out, lse = vary_like((*_forward(call, q_tiles, k, v, bias, start, end, table),), (q_tiles, k, v, bias))
    out, lse = checkpoint_name(out, OUTPUT), checkpoint_name(lse, STATS)
    return out, (q_tiles, k, v, bias, start, end, table_bwd, out, lse)


def _sequence_to_tiles(x, bias_heads, block_q, rows_per_pos=None):
    """(B, tiles * block_q, Hb * R, ...) -> (B, Hb, tiles, block_q * R', ...): the tile layout of
    ``pallas_kernels.gpu.common``, each position's R heads zero-padded to ``rows_per_pos`` = R' rows
    (default R)."""
    batch, length, heads = x.shape[:3]
    per_bias, rest = heads // bias_heads, x.shape[3:]
    rows_per_pos = rows_per_pos or per_bias
    x = x.reshape((batch, length // block_q, block_q, bias_heads, per_bias) + rest)
    x = jnp.pad(x, ((0, 0),) * 4 + ((0, rows_per_pos - per_bias),) + ((0, 0),) * len(rest))
    x = jnp.moveaxis(x, 3, 1)
    return x.reshape((batch, bias_heads, length // block_q, block_q * rows_per_pos) + rest)


def _tiles_to_sequence(x, per_bias, rows_per_pos=None):
    """Inverse of ``_sequence_to_tiles`` for (B, Hb, tiles, rows, D): drops the padded head rows."""
    batch, bias_heads, tiles, rows, dim = x.shape
    rows_per_pos = rows_per_pos or per_bias
    x = x.reshape(batch, bias_heads, tiles, rows // rows_per_pos, rows_per_pos, dim)[:, :, :, :, :per_bias]
    return jnp.moveaxis(x, 1, 3).reshape(batch, tiles * (rows // rows_per_pos), bias_heads * per_bias, dim)


def _transposed_sums_fit(dtype, padded_head_dim: int, options: KernelOptions) -> bool:
    """Whether the transposed key-major pass runs (``PallasConfig.slot_sums_transposed``): 16-bit
    inputs and padded head dims up to 128, the case measured to fit in shared memory and to be
    faster; always in interpret mode, where shared memory does not limit it (so CPU tests check it)."""
    return options.interpret or (jnp.dtype(dtype).itemsize == 2 and padded_head_dim <= 128)


def _backward_passes(call, args, *, q_sequence=False):
    """The two backward passes on ``args`` (those of ``dma_backward_slots``, q and dO in tiles, or
    in (B, T, H, D) with ``q_sequence``, which only the Mosaic GPU passes take):
    (dq, dk_own, dv_own, db_own) of the query-major pass and (dk, dv, dbias) of the key-major one;
    where ``_fused_key_grads`` holds, (dq, dk, dv, db_own) with dk and dv finished instead (k's
    dtype and (B, Tk, Hkv, D) layout), and the key-major pass' dbias alone. Returns
    (queries, slots, whether dk and dv are finished)."""
    config = call.config
    if q_sequence and _fused_key_grads(call, args):
        from pallas_kernels.mosaic_gpu.backward_queries import dma_backward_queries_mosaic
        from pallas_kernels.mosaic_gpu.backward_slots import carried_key_sums

        common = dict(scale=call.scale, block_q=config.block_q_bwd, q_offset=call.q_offset, kv_sequence=True,
                      q_sequence=True)
        dk, dv, dbias, carried = carried_key_sums(*args, carried=_carried(call, args), **common)
        queries = dma_backward_queries_mosaic(*args, block_k=MOSAIC_BLOCK_K, own_keys=True,
                                              num_stages=config.options_bwd.num_stages, key_sums=(dk, dv, carried),
                                              **common)
        return tuple(queries), (dbias,), True
    common = dict(scale=call.scale, block_q=config.block_q_bwd, q_offset=call.q_offset)
    k, v = args[4], args[5]
    # The Triton-lowered passes read k and v in (B, Hkv, Tk, D), the Mosaic GPU ones in k's layout.
    heads_major_args = args[:4] + (_swap_kv_layout(call, k), _swap_kv_layout(call, v)) + args[6:]
    layouts = dict(kv_sequence=config.kv_sequence_layout, q_sequence=q_sequence)
    mosaic_queries, mosaic_slots = (True, True) if q_sequence else _mosaic_passes(call, args)
    if mosaic_queries:
        from pallas_kernels.mosaic_gpu.backward_queries import dma_backward_queries_mosaic

        queries = dma_backward_queries_mosaic(
            *args, block_k=MOSAIC_BLOCK_K, own_keys=call.causal, num_stages=config.options_bwd.num_stages, **layouts,
            **common)
    else:
        queries = dma_backward_queries(
            *heads_major_args, block_k=config.block_k_bwd, own_keys=call.causal, options=config.options_bwd, **common)
    if mosaic_slots:
        from pallas_kernels.mosaic_gpu.backward_slots import dma_backward_slots_mosaic

        slots = dma_backward_slots_mosaic(*args, carried=_carried(call, args), **layouts, **common)
    else:
        slots = dma_backward_slots(*heads_major_args, block_slots=config.block_slots,
                                   transposed=config.slot_sums_transposed, options=config.options_slots, **common)
    return tuple(queries), tuple(slots), False


def _carried(call, args):
    """The keys the backward's table lists, for the Mosaic GPU key-major pass: from the live ranges
    for a causal call (``ever_carried``), else None (the pass finds them in the table)."""
    if not call.causal:
        return None
    end = args[8]
    return ever_carried(end, end.shape[-1] - call.q_offset, call.config.block_q_bwd)


def _fused_key_grads(call, args) -> bool:
    """Whether the query-major pass finishes dK and dV (``PallasConfig.fused_key_grads``) for
    ``args`` (q and dO in (B, T, H, D), both passes on Mosaic GPU): a causal call whose queries are
    its keys, k in (B, Tk, Hkv, D) and the kernel's own limits (``check_arguments(key_sums=True)``)."""
    config = call.config
    if not (config.fused_key_grads and config.kv_sequence_layout and call.causal and call.q_offset == 0):
        return False
    from pallas_kernels.mosaic_gpu.backward_queries import check_arguments

    return _takes(check_arguments, *args, block_q=config.block_q_bwd, block_k=MOSAIC_BLOCK_K, own_keys=True,
                  num_stages=config.options_bwd.num_stages, kv_sequence=True, q_sequence=True, key_sums=True,
                  q_offset=call.q_offset)


def _mosaic_passes(call, args, *, q_sequence=False) -> tuple[bool, bool]:
    """Whether the (query-major, key-major) backward passes run on Mosaic GPU for ``args``: both
    under ``backward_backend="mosaic_gpu"``, neither under "pallas_triton", and under "auto" those
    whose kernel takes the call on this device (``mosaic_backward_applies``)."""
    config = call.config
    if config.backward_backend != "auto":
        mosaic = config.backward_backend == "mosaic_gpu"
        return mosaic, mosaic
    return mosaic_backward_applies(
        *args, block_q=config.block_q_bwd, own_keys=call.causal, num_stages=config.options_bwd.num_stages,
        interpret=config.options_bwd.interpret or config.options_slots.interpret,
        kv_sequence=config.kv_sequence_layout, q_sequence=q_sequence)


def _q_sequence_backward(call, q, args) -> bool:
    """Whether the backward passes read q and dO in their (B, T, H, D) layout
    (``PallasConfig.q_sequence_backward``): the forward's sequence layout, one query head per bias
    head (R = 1), and both passes on Mosaic GPU (``_mosaic_passes``)."""
    config = call.config
    if not (config.q_sequence_backward and call.sequence_bias_heads is not None and q.shape[2] == call.bias_heads):
        return False
    return all(_mosaic_passes(call, args, q_sequence=True))


def _kernels_bwd(call, residuals, d_out):
    from pallas_kernels.mosaic_gpu.common import kv_dims  # lazily, as the Mosaic GPU kernels

    config = call.config
    q_tiles, k, v, bias, start, end, table, out, lse = residuals
    delta = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)
    kv_heads, kv_len = kv_dims(k, v, kv_sequence=config.kv_sequence_layout)
    tiles = table.shape[2]  # the backward's tiles (block_q_bwd positions each)
    bias_heads, head_dim = call.bias_heads, q_tiles.shape[-1]
    batch = q_tiles.shape[0]
    # Re-tile to the backward's smaller tiles: rows are position-major, so this is a reshape.
    retile = lambda x: x.reshape((batch, bias_heads, tiles, -1) + x.shape[4:])
    q_sequence = False
    if call.sequence_bias_heads is not None:
        delta = _sequence_to_tiles(delta, bias_heads, config.block_q)
        sequence_args = (q_tiles, d_out.astype(q_tiles.dtype), retile(lse), retile(delta), k, v, bias, start, end,
                         table)
        q_sequence = _q_sequence_backward(call, q_tiles, sequence_args)
    finished = False
    if q_sequence:  # q, dO and dq stay (B, T, H, D)
        queries, slots, finished = _backward_passes(call, sequence_args, q_sequence=True)
        dq = queries[0]
    else:  # the backward kernels read the tile layout
        if call.sequence_bias_heads is not None:
            q_tiles, d_out = (_sequence_to_tiles(x, bias_heads, config.block_q) for x in (q_tiles, d_out))
        _, _, tiles_fwd, rows_fwd, _ = q_tiles.shape
        args = (retile(q_tiles), retile(d_out).astype(q_tiles.dtype), retile(lse), retile(delta), k, v, bias, start,
                end, table)
        queries, slots, _ = _backward_passes(call, args)
        dq = queries[0].reshape(batch, bias_heads, tiles_fwd, rows_fwd, head_dim)
        if call.sequence_bias_heads is not None:
            dq = _tiles_to_sequence(dq, rows_fwd // config.block_q)

    def with_own(x, x_own):
        """A key-major sum cut to Tk, plus the own keys' part (tile n's at q_offset + n * block_q + i)."""
        x = x[:, :, :kv_len]
        if not call.causal:
            return x
        flat = x_own.reshape((batch, bias_heads, tiles * config.block_q_bwd) + x_own.shape[4:])
        return x.at[:, :, call.q_offset :].add(flat[:, :, : kv_len - call.q_offset])

    _, dk_own, dv_own, db_own = queries
    dbias = with_own(slots[-1], db_own)
    if finished:  # the query-major pass wrote the whole dk and dv (every key is an own key)
        dk, dv = dk_own, dv_own
    else:
        dk, dv = with_own(slots[0], dk_own), with_own(slots[1], dv_own)
        per_kv = lambda x: x.reshape(batch, kv_heads, bias_heads // kv_heads, kv_len, head_dim).sum(axis=2)
        dk, dv = (_swap_kv_layout(call, per_kv(x)) for x in (dk, dv))  # in k's and v's layout
    grads = vary_like((dq, dk.astype(k.dtype), dv.astype(v.dtype), dbias.astype(bias.dtype)),
                      (residuals[0], k, v, bias))
    return (*grads, None, None, None, None)


_kernels.defvjp(_kernels_fwd, _kernels_bwd)


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def selection_stage(bias, window, q_len, *, causal, segment_ids, key_mask, config: PallasConfig, local_window=0,
                    sink_keys=0) -> KeyTables:
    """Live ranges and the key tables of the forward's and the backward's query tiles.

    ``config``: resolved (``PallasConfig.resolve``). Tables are int32 (B, Hb, tiles, W), W padded
    with -1 to a multiple of every key block that reads it.
    """
    width = table_width(window, bias.shape[-1], config.block_q, causal=causal, segments=segment_ids is not None)
    return key_tables(bias, window, q_len, (config.block_q, config.block_q_bwd), _round_up(width, config.table_multiple),
                      causal=causal, segment_ids=segment_ids, key_mask=key_mask, local_window=local_window,
                      sink_keys=sink_keys)


def dma_attention_pallas(q, k, v, bias, window, *, causal, scale, segment_ids, key_mask, config=PallasConfig(),
                         local_window=0, sink_keys=0):
    """DMA with the Pallas GPU kernels; arguments as ``dma_attention`` (already checked)."""
    batch, q_len, heads, head_dim = q.shape
    kv_len = k.shape[1]
    bias_heads = bias.shape[1]
    per_bias = heads // bias_heads
    config = config.resolve(head_dim=head_dim, per_bias=per_bias, dtype=q.dtype)
    call = _Call(config, head_dim**-0.5 if scale is None else float(scale), kv_len - q_len if causal else 0, causal,
                 bias_heads)
    start, end, (table, table_bwd) = selection_stage(bias, window, q_len, causal=causal, segment_ids=segment_ids,
                                                     key_mask=key_mask, config=config, local_window=local_window,
                                                     sink_keys=sink_keys)

    # Zero-pad D and R to powers of two; q -> (B, Hb, tiles, block_q * R', D'), or in place.
    rows_per_pos, dim = next_pow2(per_bias), padded_head_dim(head_dim)
    tiles = num_tiles(q_len, config.block_q)
    pad_d = ((0, 0),) * 3 + ((0, dim - head_dim),)
    qp = jnp.pad(q, ((0, 0), (0, tiles * config.block_q - q_len), (0, 0), (0, dim - head_dim)))
    if not config.sequence_layout:
        qp = _sequence_to_tiles(qp, bias_heads, config.block_q, rows_per_pos)
    kt, vt = (kernel_kv_layout(config, jnp.pad(x, pad_d)) for x in (k, v))
    out = _kernels(call, qp, kt, vt, bias, start, end, table, table_bwd)
    if not config.sequence_layout:
        out = _tiles_to_sequence(out, per_bias, rows_per_pos)[..., :head_dim]
    return out[:, :q_len]
