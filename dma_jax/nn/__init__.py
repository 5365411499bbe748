"""Flax NNX attention layers: DMA and the baselines it is compared with, one call signature.

Every layer maps ``x`` (B, T, d_model) to (B, T, d_model) as
``layer(x, *, positions=None, segment_ids=None)``: ``positions`` (B, T) int feed RoPE (default
``0 .. T-1``), ``segment_ids`` (B, T) int keep packed documents apart. Every layer also decodes
with a cache of its own: ``prefill``, ``extend`` and ``decode`` (``CachedAttention``).
"""

from dma_jax.nn.attention_layers import (
    CachedAttention,
    DynamicMaskAttention,
    MultiHeadAttention,
    SlidingWindowAttention,
)
from dma_jax.nn.latent_attention import MultiHeadLatentAttention
from dma_jax.nn.native_sparse_attention import NativeSparseAttention
from dma_jax.nn.rope import apply_rope

__all__ = [
    "CachedAttention",
    "DynamicMaskAttention",
    "MultiHeadAttention",
    "MultiHeadLatentAttention",
    "NativeSparseAttention",
    "SlidingWindowAttention",
    "apply_rope",
]
