"""The public DMA op: one signature, pluggable implementations, each with one config object."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dma_jax.ops.dense import DenseConfig, dense_attention, why_not_dense
from dma_jax.ops.pallas_gpu import PallasConfig, dma_attention_pallas
from dma_jax.ops.pallas_tpu import PallasTpuConfig, dma_attention_pallas_tpu
from dma_jax.ops.xla import XlaConfig, dma_attention_xla
from dma_jax.validation import check_attention_args, check_contiguous_segments

IMPLEMENTATIONS = (None, "xla", "pallas", "pallas_tpu")
Implementation = str | None | XlaConfig | PallasConfig | PallasTpuConfig | DenseConfig

_STATIC = ("window", "causal", "scale", "config", "local_window", "sink_keys")
_RUNNERS = {
    XlaConfig: jax.jit(dma_attention_xla, static_argnames=_STATIC),
    PallasConfig: jax.jit(dma_attention_pallas, static_argnames=_STATIC),
    PallasTpuConfig: jax.jit(dma_attention_pallas_tpu, static_argnames=_STATIC),
    DenseConfig: jax.jit(dense_attention, static_argnames=_STATIC),
}


def resolve_implementation(implementation: Implementation) -> XlaConfig | PallasConfig | PallasTpuConfig | DenseConfig:
    """The config object an ``implementation`` argument stands for.

    A config object is used as given. A name gets that path's default config: "xla"; "pallas"
    (the GPU kernels; off a GPU their interpret mode, slow and meant for tests); "pallas_tpu" (the
    TPU kernels; off a TPU their interpret mode); None: the kernels on a GPU or TPU, XLA elsewhere
    (``dma_attention`` then also takes the dense path where it applies, ``choose_path``).
    """
    if isinstance(implementation, tuple(_RUNNERS)):
        return implementation
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"implementation must be one of {IMPLEMENTATIONS} or a config object (XlaConfig, PallasConfig, "
            f"PallasTpuConfig, DenseConfig), got {implementation!r}"
        )
    backend = jax.default_backend()
    if implementation is None:
        implementation = {"gpu": "pallas", "tpu": "pallas_tpu"}.get(backend, "xla")
    if implementation == "pallas":
        return PallasConfig() if backend == "gpu" else PallasConfig().interpreted()
    if implementation == "pallas_tpu":
        return PallasTpuConfig() if backend == "tpu" else PallasTpuConfig().interpreted()
    return XlaConfig()


def choose_path(q, k, bias, window, *, segment_ids, implementation: Implementation):
    """The config a call runs with: ``resolve_implementation``'s, except that with ``implementation``
    None on a GPU a call in the dense regime (every query keeps every key it sees: window None or
    >= Tk) runs on cuDNN (``DenseConfig``) where ``ops.dense.why_not_dense`` allows it. An explicit
    ``DenseConfig`` outside what it can do raises, with the reason."""
    config = resolve_implementation(implementation)
    if implementation is None and isinstance(config, PallasConfig) and jax.default_backend() == "gpu":
        if why_not_dense(q, k, bias, window, segment_ids=segment_ids, backend="cudnn", automatic=True) is None:
            return DenseConfig("cudnn")
    if isinstance(config, DenseConfig):
        reason = why_not_dense(q, k, bias, window, segment_ids=segment_ids, backend=config.backend)
        if reason is not None:
            raise ValueError(f"implementation={config}: not available for this call ({reason})")
    return config


def dma_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    bias: jax.Array,
    window: int | None,
    *,
    causal: bool = True,
    scale: float | None = None,
    segment_ids: jax.Array | None = None,
    key_mask: jax.Array | None = None,
    implementation: Implementation = None,
    local_window: int = 0,
    sink_keys: int = 0,
) -> jax.Array:
    """Dynamic mask attention: each query attends to the top-``window`` keys by ``bias``.

    Args:
      q: (B, Tq, H, D). k, v: (B, Tk, Hkv, D), same dtype as q; H % Hkv == 0.
      bias: float (B, Hb, Tk), one learned score per key; Hb = Hkv (one selection per kv
        head, shared by its query heads) or Hb = H. Query head h uses kv head
        ``h // (H // Hkv)`` and bias head ``h // (H // Hb)``. -inf keys are never kept.
      window: keys kept per query (int >= 1), or None for every visible key.
      causal: a bool. True: key j is visible to query t iff ``j <= t + Tk - Tq`` (bottom-right,
        as in decoding; needs Tq <= Tk). False: every query of a segment keeps the same
        top-``window`` keys.
      scale: multiplies q.k; a finite number > 0, default ``D ** -0.5``.
      segment_ids: optional int (B, T) for packed documents (Tq == Tk): a query sees only
        keys of its segment. Each segment must be one contiguous run (checked outside jit).
      key_mask: optional bool (B, Tk): False keys (padding) are never kept.
      local_window, sink_keys: the local-window variant (not the paper's; causal only): each
        query keeps its last ``local_window`` valid keys and its segment's first ``sink_keys``
        valid keys, and the top ``window - local_window - sink_keys`` of the others by ``bias``
        (``dma_jax.selection.live_ranges``). 0 and 0: the paper's DMA.
      implementation: None (the Pallas kernels on GPU or TPU, the XLA path elsewhere), "xla"
        (gathered key tiles in plain XLA, O(T * window) work, O(B * H * T * D) memory), "pallas"
        (the GPU kernels of ``pallas_kernels.gpu``; in interpret mode off the GPU, which is slow
        and meant for tests), "pallas_tpu" (the TPU kernels of ``pallas_kernels.tpu``; in TPU
        interpret mode off the TPU), or a config object that picks the path and sets its tiles:
        ``XlaConfig(block_q=...)``, ``PallasConfig(block_q=..., ...)``, ``PallasTpuConfig(...)``,
        ``DenseConfig(backend)`` (the dense regime only, window None or >= Tk: dense attention with
        the bias folded into extra head columns, on cuDNN or XLA). None on a GPU takes that dense
        path by itself for 16-bit calls in the dense regime without ``segment_ids``.
        The Pallas kernels compute in float32 at most: float64 inputs raise there (use "xla").

    Empty inputs: B = 0, Tq = 0, or (not causal) Tk = 0 give an all-zero (B, Tq, H, D) output;
    H, Hkv, Hb or D = 0 raise ValueError. Every bad argument raises an error that names it.

    Returns:
      (B, Tq, H, D) in q's dtype: softmax over the kept keys of ``scale * q.k + bias``,
      times v; zeros for a query that keeps no key. Differentiable in q, k, v and bias; the
      selection itself has no gradient. NaN in bias raises outside jit; under jit NaN keys
      are never kept.

    Example:
      >>> out = dma_attention(q, k, v, bias, window=1024)            # doctest: +SKIP
      >>> out = dma_attention(q, k, v, bias, 1024, implementation=PallasConfig(block_q=64))  # doctest: +SKIP
    """
    dims = check_attention_args(q, k, v, bias, window, causal, segment_ids, key_mask, scale, local_window, sink_keys)
    config = choose_path(q, k, bias, window, segment_ids=segment_ids, implementation=implementation)
    if isinstance(config, (PallasConfig, PallasTpuConfig)) and jnp.dtype(q.dtype) == jnp.float64:
        raise TypeError(f"the Pallas kernels ({type(config).__name__}) compute in float32 at most; "
                        "for float64 inputs use implementation='xla'")
    if 0 in (dims.batch, dims.q_len, dims.kv_len):  # nothing to attend from, or to: zeros
        return jnp.zeros(q.shape, q.dtype)
    check_contiguous_segments(segment_ids)
    return _RUNNERS[type(config)](
        q, k, v, bias, window, causal=causal, scale=scale, segment_ids=segment_ids, key_mask=key_mask, config=config,
        local_window=local_window, sink_keys=sink_keys,
    )
