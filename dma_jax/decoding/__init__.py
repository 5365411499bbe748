"""Decoding: per-layer caches and generation.

- ``dma_cache.py``: a DMA layer's cache, only its w live keys per (sequence, bias head)
  (``DMACache``; ``cache_from_prefill``, ``cache_extend``, ``cache_append``, ``cached_attention``);
- ``kv_cache.py``: the dense baselines' position-slotted cache (``KVCache``: every key for MHA,
  a ring of w for SWA);
- ``generation.py``: ``generate`` and ``teacher_forced_logits`` (prefill whole or in chunks, then
  one jitted scan over new tokens) for any model with the two methods of ``CachedLM``.
"""

from dma_jax.decoding.dma_cache import DMACache, cache_append, cache_extend, cache_from_prefill, cached_attention
from dma_jax.decoding.generation import CachedLM, check_cached_lm, generate, teacher_forced_logits
from dma_jax.decoding.kv_cache import KVCache, kv_cache_append, kv_cache_from_prefill, kv_cached_attention

__all__ = [
    "CachedLM",
    "DMACache",
    "KVCache",
    "cache_append",
    "cache_extend",
    "cache_from_prefill",
    "cached_attention",
    "check_cached_lm",
    "generate",
    "kv_cache_append",
    "kv_cache_from_prefill",
    "kv_cached_attention",
    "teacher_forced_logits",
]
