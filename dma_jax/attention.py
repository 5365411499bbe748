"""The public DMA op: one signature, pluggable implementations."""

from __future__ import annotations

import jax

from dma_jax.pallas_attention import PallasConfig, dma_attention_pallas
from dma_jax.pallas_tpu_attention import PallasTpuConfig, dma_attention_pallas_tpu
from dma_jax.validation import check_attention_args
from dma_jax.xla_attention import check_contiguous_segments, dma_attention_xla

IMPLEMENTATIONS = (None, "xla", "pallas", "pallas_tpu")

_xla = jax.jit(dma_attention_xla, static_argnames=("window", "causal", "scale", "block_q"))
_pallas = jax.jit(dma_attention_pallas, static_argnames=("window", "causal", "scale", "config"))
_pallas_tpu = jax.jit(dma_attention_pallas_tpu, static_argnames=("window", "causal", "scale", "config"))


def _on_gpu() -> bool:
    return jax.default_backend() == "gpu"


def _on_tpu() -> bool:
    return jax.default_backend() == "tpu"


def _resolve(implementation):
    """Pick an implementation; None means the kernels on GPU or TPU, the XLA path elsewhere."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    if implementation is None:
        return "pallas" if _on_gpu() else "pallas_tpu" if _on_tpu() else "xla"
    return implementation


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
    implementation: str | None = None,
) -> jax.Array:
    """Dynamic mask attention: each query attends to the top-``window`` keys by ``bias``.

    Args:
      q: (B, Tq, H, D). k, v: (B, Tk, Hkv, D), same dtype as q; H % Hkv == 0.
      bias: float (B, Hb, Tk), one learned score per key; Hb = Hkv (one selection per kv
        head, shared by its query heads) or Hb = H. Query head h uses kv head
        ``h // (H // Hkv)`` and bias head ``h // (H // Hb)``. -inf keys are never kept.
      window: keys kept per query (int >= 1), or None for every visible key.
      causal: key j is visible to query t iff ``j <= t + Tk - Tq`` (bottom-right, as in
        decoding; needs Tq <= Tk). Not causal: every query of a segment keeps the same
        top-``window`` keys.
      scale: multiplies q.k; default ``D ** -0.5``.
      segment_ids: optional int (B, T) for packed documents (Tq == Tk): a query sees only
        keys of its segment. Each segment must be one contiguous run (checked outside jit).
      key_mask: optional bool (B, Tk): False keys (padding) are never kept.
      implementation: None (the Pallas kernels on GPU or TPU, the XLA path elsewhere), "xla"
        (gathered key tiles in plain XLA, O(T * window) work, O(B * H * T * D) memory) or
        "pallas" (the GPU kernels of ``pallas_kernels``; in interpret mode off the GPU, which is
        slow and meant for tests) or "pallas_tpu" (the TPU kernels of ``pallas_kernels.tpu``;
        in TPU interpret mode off the TPU, for tests).

    Returns:
      (B, Tq, H, D) in q's dtype: softmax over the kept keys of ``scale * q.k + bias``,
      times v; zeros for a query that keeps no key. Differentiable in q, k, v and bias; the
      selection itself has no gradient. NaN in bias raises outside jit; under jit NaN keys
      are never kept.

    Example:
      >>> out = dma_attention(q, k, v, bias, window=1024)            # doctest: +SKIP
    """
    check_attention_args(q, k, v, bias, window, causal, segment_ids, key_mask, scale)
    chosen = _resolve(implementation)
    check_contiguous_segments(segment_ids)
    kwargs = dict(causal=causal, scale=scale, segment_ids=segment_ids, key_mask=key_mask)
    if chosen == "pallas":
        config = PallasConfig() if _on_gpu() else PallasConfig().interpreted()
        return _pallas(q, k, v, bias, window, config=config, **kwargs)
    if chosen == "pallas_tpu":
        config = PallasTpuConfig() if _on_tpu() else PallasTpuConfig().interpreted()
        return _pallas_tpu(q, k, v, bias, window, config=config, **kwargs)
    return _xla(q, k, v, bias, window, **kwargs)
