"""Multi-head latent attention (MLA, DeepSeek-V2 style), the latent-KV baseline.

Keys and values come from one low-rank latent per token, ``c = RMSNorm(x W_dkv)`` of size
``latent_dim``: ``k_nope = c W_uk``, ``v = c W_uv`` (per head), plus a decoupled RoPE key
``k_rope`` (``rope_dim``, shared by all heads) so that position enters without passing through
the latent. Queries are ``[q_nope, RoPE(q_rope)]``; scores ``q.k / sqrt(head_dim + rope_dim)``.
The decoding cache holds only the latent and ``k_rope`` per token (latent_dim + rope_dim
numbers, instead of 2 * H * head_dim), and rebuilds keys and values from them.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from dma_jax.decoding.kv_cache import KVCache, kv_cache_append, kv_cache_from_prefill, kv_cached_attention
from dma_jax.nn.attention_layers import dense_causal_attention
from dma_jax.nn.rope import apply_rope
from dma_jax.sharding import annotate


class MultiHeadLatentAttention(nnx.Module):
    """Call: ``layer(x, *, positions=None, segment_ids=None)``, x (B, T, d_model) -> same shape.

    ``implementation`` for the full-sequence call: "auto" (cuDNN on a GPU where it applies), or
    ``jax.nn.dot_product_attention``'s None (XLA), "xla" or "cudnn" (``dense_causal_attention``).
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        head_dim: int,
        latent_dim: int,
        rope_dim: int | None = None,
        *,
        rope_base: float = 10000.0,
        implementation: str | None = "auto",
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.num_heads, self.head_dim, self.latent_dim = num_heads, head_dim, latent_dim
        self.implementation = implementation
        self.rope_dim = rope_dim or max(2, head_dim // 2)
        self.rope_base = rope_base
        linear = lambda i, o: nnx.Linear(i, o, use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q_proj = linear(d_model, num_heads * (head_dim + self.rope_dim))
        self.kv_down = linear(d_model, latent_dim + self.rope_dim)
        self.kv_norm = nnx.RMSNorm(latent_dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.k_up = linear(latent_dim, num_heads * head_dim)
        self.v_up = linear(latent_dim, num_heads * head_dim)
        self.o_proj = linear(num_heads * head_dim, d_model)
        annotate(self, {"q_proj": ("embed", "heads"), "kv_down": ("embed", None), "k_up": (None, "heads"),
                        "v_up": (None, "heads"), "o_proj": ("heads", "embed")})

    def _queries(self, x, positions):
        batch, length = x.shape[:2]
        q = self.q_proj(x).reshape(batch, length, self.num_heads, self.head_dim + self.rope_dim)
        q_nope, q_rope = q[..., : self.head_dim], q[..., self.head_dim :]
        return jnp.concatenate([q_nope, apply_rope(q_rope, positions, self.rope_base)], axis=-1)

    def _latent(self, x, positions):
        """Per token: the latent (B, T, latent_dim) and the RoPE'd shared key part (B, T, rope_dim)."""
        down = self.kv_down(x)
        latent, k_rope = down[..., : self.latent_dim], down[..., self.latent_dim :]
        k_rope = apply_rope(k_rope[:, :, None, :], positions, self.rope_base)[:, :, 0, :]
        return self.kv_norm(latent), k_rope

    def _keys_values(self, latent, k_rope):
        """Keys (B, S, H, head_dim + rope_dim) and values padded to the same width."""
        batch, length = latent.shape[:2]
        k_nope = self.k_up(latent).reshape(batch, length, self.num_heads, self.head_dim)
        v = self.v_up(latent).reshape(batch, length, self.num_heads, self.head_dim)
        k_rope = jnp.broadcast_to(k_rope[:, :, None, :], (batch, length, self.num_heads, self.rope_dim))
        # jax.nn.dot_product_attention wants one head dim for k and v: pad v with zeros.
        v = jnp.pad(v, ((0, 0), (0, 0), (0, 0), (0, self.rope_dim)))
        return jnp.concatenate([k_nope, k_rope.astype(k_nope.dtype)], axis=-1), v

    def _output(self, attended):
        batch, length = attended.shape[:2]
        attended = attended[..., : self.head_dim].reshape(batch, length, self.num_heads * self.head_dim)
        return self.o_proj(attended)

    def __call__(self, x, *, positions=None, segment_ids=None):
        batch, length = x.shape[:2]
        positions = jnp.broadcast_to(jnp.arange(length), (batch, length)) if positions is None else positions
        k, v = self._keys_values(*self._latent(x, positions))
        out = dense_causal_attention(self._queries(x, positions), k, v, window=None, segment_ids=segment_ids,
                                     implementation=self.implementation)
        return self._output(out)

    def prefill(self, x, *, lengths, max_len, chunk=1):
        """Right-padded prompts (B, T, d_model) -> (y, latent cache of ``max_len`` slots)."""
        batch, length = x.shape[:2]
        positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
        latent, k_rope = self._latent(x, positions)
        y = self(x)
        return y, kv_cache_from_prefill(latent[:, :, None, :], k_rope[:, :, None, :], max_len, lengths)

    def extend(self, x, *, positions, cache: KVCache, lengths=None):
        """C tokens per sequence: x (B, C, d_model) at ``positions`` (B, C) -> (y, cache)."""
        latent, k_rope = self._latent(x, positions)
        cache = kv_cache_append(cache, latent[:, :, None, :], k_rope[:, :, None, :], positions, lengths)
        k, v = self._keys_values(cache.keys[:, :, 0, :], cache.values[:, :, 0, :])
        expanded = KVCache(keys=k, values=v, position=cache.position)
        out = kv_cached_attention(self._queries(x, positions), expanded, positions)
        return self._output(out.astype(x.dtype)), cache

    def decode(self, x, *, positions, cache: KVCache):
        """One token per sequence: x (B, 1, d_model) at ``positions`` (B,) -> (y, cache)."""
        return self.extend(x, positions=positions[:, None], cache=cache)
