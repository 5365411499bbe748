"""Trainable dynamic mask sparse attention (DMA, arXiv 2508.02124) in JAX.

Public entry points:
  dma_attention            the op (pluggable implementations)
  dma_attention_reference  dense spec, for tests
  selection_mask           dense kept-key mask (B, Hb, Tq, Tk), for tests and pictures
  live_ranges              every key's live range [j, end_j), O(T log T), no T x T array
  generate                 cached generation (a DMA layer's cache holds only its w live keys)
  dma_jax.nn               Flax NNX layers: DynamicMaskAttention and the baselines
  dma_jax.models           ModelConfig, DecoderLM and the paper's presets
"""

from dma_jax.attention import dma_attention
from dma_jax.generation import generate
from dma_jax.reference import dma_attention_reference, selection_mask
from dma_jax.selection import live_ranges, static_keep

__all__ = [
    "dma_attention",
    "generate",
    "dma_attention_reference",
    "live_ranges",
    "selection_mask",
    "static_keep",
]
