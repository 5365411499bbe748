"""The public DMA op: one signature, pluggable implementations."""

from __future__ import annotations

import functools

import jax

from dma_jax.validation import check_attention_args
from dma_jax.xla_attention import check_contiguous_segments, dma_attention_xla

IMPLEMENTATIONS = (None, "xla", "pallas")

_xla = jax.jit(dma_attention_xla, static_argnames=("window", "causal", "scale", "block_q"))


def _resolve(implementation):
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    if implementation == "pallas":
        raise NotImplementedError(
            "implementation='pallas' is not available yet: the Pallas kernels are being built "
            "(see the kernels issue); use implementation='xla' or None"
        )
    return "xla"


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
      implementation: None (best available), "xla" (gathered key tiles in plain XLA,
        O(T * window) work and O(B * H * T * D) memory) or "pallas" (kernels; not yet).

    Returns:
      (B, Tq, H, D) in q's dtype: softmax over the kept keys of ``scale * q.k + bias``,
      times v; zeros for a query that keeps no key. Differentiable in q, k, v and bias; the
      selection itself has no gradient. NaN in bias raises outside jit; under jit NaN keys
      are never kept.

    Example:
      >>> out = dma_attention(q, k, v, bias, window=1024)            # doctest: +SKIP
    """
    check_attention_args(q, k, v, bias, window, causal, segment_ids, key_mask, scale)
    _resolve(implementation)
    check_contiguous_segments(segment_ids)
    return _xla(
        q, k, v, bias, window, causal=causal, scale=scale, segment_ids=segment_ids, key_mask=key_mask
    )
