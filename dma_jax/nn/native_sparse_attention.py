"""Native sparse attention (NSA, Yuan et al. 2025), the learned block-sparse baseline.

Three branches with their own keys and values, mixed per head by learned sigmoid gates:
- compressed: blocks of ``block_size`` tokens every ``block_stride`` tokens are mapped to one
  key and one value each (a linear map of the block plus an intra-block position embedding);
  a query sees the blocks that end at or before it;
- selected: the compressed branch's attention, summed over the heads of a kv group and over the
  compression blocks that overlap each selection block of ``select_block`` tokens, scores the
  selection blocks; each query attends to the tokens of its top ``num_selected`` visible blocks
  (the first block of the query's document and its two latest blocks always among them);
- sliding window: the last ``window`` tokens.

This is a correct, dense jnp implementation: every branch builds (B, H, Tq, Tk) or
(B, H, Tq, blocks) arrays, O(T^2) memory and time. It is a quality baseline, not a fast kernel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from dma_jax.decoding.kv_cache import KVCache, kv_cache_append, kv_cache_from_prefill
from dma_jax.nn.rope import apply_rope
from dma_jax.sharding import annotate
from dma_jax.ops.reference import masked_softmax


def _attend(q, k, v, mask, scale):
    """q (B, Tq, H, D); k, v (B, S, Hkv, D); mask (B, H or 1, Tq, S) -> out (B, Tq, H, D), probs."""
    group = q.shape[2] // k.shape[2]
    k, v = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)
    logits = jnp.einsum("bqhd,bshd->bhqs", q.astype(jnp.float32), k.astype(jnp.float32)) * scale
    probs = masked_softmax(logits, mask)
    return jnp.einsum("bhqs,bshd->bqhd", probs, v.astype(jnp.float32)), probs


class NativeSparseAttention(nnx.Module):
    """Call: ``layer(x, *, positions=None, segment_ids=None)``, x (B, T, d_model) -> same shape.

    Defaults follow the NSA paper's setting (arXiv 2502.11089): block_size 32, block_stride 16,
    select_block 64, num_selected 16, window 512 (scale them down for short sequences).
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        *,
        block_size: int = 32,
        block_stride: int = 16,
        select_block: int = 64,
        num_selected: int = 16,
        window: int = 512,
        rope_base: float = 10000.0,
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads={num_heads} must be a multiple of num_kv_heads={num_kv_heads}")
        if select_block % block_stride or block_size % block_stride:
            raise ValueError("select_block and block_size must be multiples of block_stride")
        if num_selected < 3:
            raise ValueError(f"num_selected must be >= 3 (the first and the two latest blocks), got {num_selected}")
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.block_size, self.block_stride = block_size, block_stride
        self.select_block, self.num_selected, self.window = select_block, num_selected, window
        self.rope_base = rope_base
        linear = lambda i, o: nnx.Linear(i, o, use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        kv = num_kv_heads * head_dim
        self.q_proj = linear(d_model, num_heads * head_dim)
        # Keys and values of the three branches: compressed, selected, window.
        self.kv_proj = linear(d_model, 6 * kv)
        self.compress_k = linear(block_size * head_dim, head_dim)
        self.compress_v = linear(block_size * head_dim, head_dim)
        self.block_position = nnx.Param(jnp.zeros((block_size, head_dim), param_dtype))
        self.gate_proj = nnx.Linear(d_model, 3 * num_heads, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.o_proj = linear(num_heads * head_dim, d_model)
        annotate(self, {"q_proj": ("embed", "heads"), "kv_proj": ("embed", "heads"), "compress_k": ("embed", None),
                        "compress_v": ("embed", None), "gate_proj": ("embed", None), "o_proj": ("heads", "embed")})

    def _branch_keys(self, x, positions):
        batch, length = x.shape[:2]
        kv = self.kv_proj(x).reshape(batch, length, 6, self.num_kv_heads, self.head_dim)
        k = apply_rope(kv[:, :, 0::2].reshape(batch, length, 3 * self.num_kv_heads, self.head_dim), positions,
                       self.rope_base).reshape(batch, length, 3, self.num_kv_heads, self.head_dim)
        return k, kv[:, :, 1::2]  # (B, T, 3, Hkv, D) each: [compressed, selected, window]

    def _compress(self, k, v):
        """Block keys/values (B, blocks, Hkv, D) from raw k, v (B, T, Hkv, D); ``blocks`` static."""
        length = k.shape[1]
        blocks = max(0, (length - self.block_size) // self.block_stride + 1)
        if blocks == 0:
            return None, None, 0
        index = jnp.arange(blocks)[:, None] * self.block_stride + jnp.arange(self.block_size)[None, :]
        flat = lambda a: jnp.moveaxis(a[:, index] + self.block_position[...][None, None, :, None, :], 3, 2).reshape(
            a.shape[0], blocks, self.num_kv_heads, self.block_size * self.head_dim)
        return self.compress_k(flat(k)), self.compress_v(flat(v)), blocks

    def _attention(self, x_q, q_positions, rope_positions, k, v, key_positions, key_valid, segments, segment_start):
        """The three branches for queries at ``q_positions`` (B, Tq) over keys at ``key_positions``.

        x_q (B, Tq, d_model); rope_positions (B, Tq): the queries' RoPE positions (they restart
        at each document); k, v (B, S, 3, Hkv, D) with RoPE; key_positions (B, S) = 0..S-1;
        key_valid (B, S); segments: (query segment (B, Tq), key segment (B, S)) or None;
        segment_start (B, Tq): where each query's document starts (its first block is forced).
        """
        batch, tq = x_q.shape[:2]
        heads, group = self.num_heads, self.num_heads // self.num_kv_heads
        scale = self.head_dim**-0.5
        q = apply_rope(self.q_proj(x_q).reshape(batch, tq, heads, self.head_dim), rope_positions, self.rope_base)
        t = q_positions[:, :, None]  # (B, Tq, 1)
        same = jnp.ones((batch, tq, k.shape[1]), bool) if segments is None else segments[0][:, :, None] == segments[1][:, None, :]
        causal = (key_positions[:, None, :] <= t) & key_valid[:, None, :] & same  # (B, Tq, S)

        # Compressed branch: a block is visible once its last token is.
        k_cmp, v_cmp, blocks = self._compress(k[:, :, 0], v[:, :, 0])
        if blocks:
            starts = jnp.arange(blocks) * self.block_stride
            last = starts + self.block_size - 1
            block_ok = jnp.take(causal, last, axis=2) & jnp.take(causal, starts, axis=2)  # whole block usable
            out_cmp, p_cmp = _attend(q, k_cmp, v_cmp, block_ok[:, None], scale)
            # Importance of selection blocks: compression blocks overlapping them, summed over the group.
            sel_blocks = -(-k.shape[1] // self.select_block)
            sel_start = jnp.arange(sel_blocks) * self.select_block
            overlap = (starts[:, None] < sel_start[None, :] + self.select_block) & (last[:, None] >= sel_start[None, :])
            score = jnp.einsum("bhqc,cs->bhqs", p_cmp, overlap.astype(jnp.float32))
            score = score.reshape(batch, self.num_kv_heads, group, tq, sel_blocks).sum(axis=2)
        else:
            out_cmp = jnp.zeros_like(q, jnp.float32)
            sel_blocks = -(-k.shape[1] // self.select_block)
            score = jnp.zeros((batch, self.num_kv_heads, tq, sel_blocks), jnp.float32)

        # Selected branch: top blocks per query (first block and the two latest always in).
        sel_start = jnp.arange(sel_blocks) * self.select_block
        own = t // self.select_block  # (B, Tq, 1)
        visible_block = sel_start[None, None, :] <= t
        first = (segment_start // self.select_block)[:, :, None]
        forced = (jnp.arange(sel_blocks)[None, None, :] == first) | (
            (jnp.arange(sel_blocks)[None, None, :] >= own - 1) & visible_block)
        score = jnp.where(forced[:, None], jnp.inf, jnp.where(visible_block[:, None], score, -jnp.inf))
        count = min(self.num_selected, sel_blocks)
        _, top = jax.lax.top_k(score, count)  # (B, Hkv, Tq, count)
        chosen = jnp.any(jax.nn.one_hot(top, sel_blocks, dtype=bool), axis=-2) & visible_block[:, None]
        token_block = jnp.arange(k.shape[1]) // self.select_block
        token_chosen = jnp.take(chosen, token_block, axis=-1)  # (B, Hkv, Tq, S)
        token_chosen = jnp.repeat(token_chosen, group, axis=1) & causal[:, None]
        out_slc, _ = _attend(q, k[:, :, 1], v[:, :, 1], token_chosen, scale)

        # Sliding window branch.
        recent = causal & (key_positions[:, None, :] > t - self.window)
        out_win, _ = _attend(q, k[:, :, 2], v[:, :, 2], recent[:, None], scale)

        gates = jax.nn.sigmoid(self.gate_proj(x_q).astype(jnp.float32)).reshape(batch, tq, heads, 3)
        mixed = gates[..., 0:1] * out_cmp + gates[..., 1:2] * out_slc + gates[..., 2:3] * out_win
        return self.o_proj(mixed.reshape(batch, tq, heads * self.head_dim).astype(x_q.dtype))

    def __call__(self, x, *, positions=None, segment_ids=None):
        batch, length = x.shape[:2]
        index = jnp.broadcast_to(jnp.arange(length), (batch, length))
        positions = index if positions is None else positions
        k, v = self._branch_keys(x, positions)
        if segment_ids is None:
            segments, start = None, jnp.zeros_like(index)
        else:  # positions count from each document's start
            segments, start = (segment_ids, segment_ids), index - positions
        return self._attention(x, index, positions, k, v, index, jnp.ones((batch, length), bool), segments, start)

    def prefill(self, x, *, lengths, max_len, chunk=1):
        """Right-padded prompts (B, T, d_model) -> (y, cache of every token's branch keys/values)."""
        batch, length = x.shape[:2]
        k, v = self._branch_keys(x, jnp.broadcast_to(jnp.arange(length), (batch, length)))
        flat = lambda a: a.reshape(batch, length, 1, -1)
        return self(x), kv_cache_from_prefill(flat(k), flat(v), max_len, lengths)

    def extend(self, x, *, positions, cache: KVCache, lengths=None):
        """C tokens per sequence at ``positions`` (B, C): the branches recomputed over the cache."""
        batch, chunk = x.shape[:2]
        k, v = self._branch_keys(x, positions)
        cache = kv_cache_append(cache, k.reshape(batch, chunk, 1, -1), v.reshape(batch, chunk, 1, -1), positions, lengths)
        size = cache.position.shape[1]
        shape = (batch, size, 3, self.num_kv_heads, self.head_dim)
        key_positions = jnp.broadcast_to(jnp.arange(size), (batch, size))
        valid = (cache.position >= 0) & (cache.position == key_positions)
        y = self._attention(x, positions, positions, cache.keys.reshape(shape), cache.values.reshape(shape),
                            key_positions, valid, None, jnp.zeros_like(positions))
        return y, cache

    def decode(self, x, *, positions, cache: KVCache):
        """One token per sequence at ``positions`` (B,): recomputes the branches over the cache."""
        return self.extend(x, positions=positions[:, None], cache=cache)
