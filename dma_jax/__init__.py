"""Trainable dynamic mask sparse attention (DMA, arXiv 2508.02124) in JAX.

Public entry points:
  dma_attention            the op; ``implementation`` picks a path by name or config object
  XlaConfig, PallasConfig, PallasTpuConfig, DenseConfig   one config object per path
  dma_attention_reference  dense spec, for tests
  selection_mask           dense kept-key mask (B, Hb, Tq, Tk), for tests and pictures
  live_ranges              every key's live range [j, end_j), O(T log T), no T x T array
  static_keep              non-causal selection: the top-w keys of each segment
  generate                 cached generation (a DMA layer's cache holds only its w live keys)

Packages: ``dma_jax.ops`` (the op and its implementations), ``dma_jax.selection`` (live ranges,
slots, key tables), ``dma_jax.decoding`` (caches, generation), ``dma_jax.nn`` (Flax NNX layers),
``dma_jax.models`` (the decoder LM and presets); ``dma_jax.data``, ``dma_jax.training`` and
``dma_jax.evaluation`` need the ``train`` extra.
"""

from dma_jax.decoding import generate
from dma_jax.ops import (
    DenseConfig,
    PallasConfig,
    PallasTpuConfig,
    XlaConfig,
    dma_attention,
    dma_attention_reference,
    selection_mask,
)
from dma_jax.selection import live_ranges, static_keep

__version__ = "0.2.0"

__all__ = [
    "DenseConfig",
    "PallasConfig",
    "PallasTpuConfig",
    "XlaConfig",
    "__version__",
    "dma_attention",
    "dma_attention_reference",
    "generate",
    "live_ranges",
    "selection_mask",
    "static_keep",
]
