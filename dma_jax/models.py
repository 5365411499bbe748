"""A decoder-only language model whose attention layer is chosen by name.

``DecoderLM(config, rngs=...)(tokens, segment_ids=None) -> logits`` (B, T, vocab). Blocks are
pre-norm: ``x + attn(rmsnorm(x))``, then ``x + swiglu(rmsnorm(x))``. With ``segment_ids``
(packed documents) RoPE positions restart at each document and attention stays inside it.
``scan_layers``: the blocks' parameters are stacked along a leading layer axis (``layers/...``
instead of ``blocks/<i>/...``) and the forward pass is one ``nnx.scan``, so compiling a deep model
costs about what one block costs.
Presets: ``ModelConfig.preset(name)`` for the paper's 80M, 200M, 680M and 1.7B shapes
(arXiv 2508.02124, its scaling table) and ``tiny`` for tests.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from dma_jax.ops import IMPLEMENTATIONS
from dma_jax.nn import (
    DynamicMaskAttention,
    MultiHeadAttention,
    MultiHeadLatentAttention,
    NativeSparseAttention,
    SlidingWindowAttention,
)
from dma_jax.remat import SAVES as REMAT_SAVES
from dma_jax.remat import policy as remat_policy
from dma_jax.selection.segments import segment_bounds
from dma_jax.sharding import annotate

ATTENTION_KINDS = ("dma", "mha", "swa", "mla", "nsa")
DENSE_IMPLEMENTATIONS = ("auto", None, "xla", "cudnn")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and options of ``DecoderLM``.

    attention: "dma" | "mha" | "swa" | "mla" | "nsa". window: DMA's kept keys per query, SWA's
    and NSA's sliding window. nsa_*: NSA's compression block and stride, selection block and
    number of selected blocks.
    bias_heads: DMA bias heads (None: num_kv_heads). latent_dim, rope_dim: MLA's latent size
    and decoupled RoPE width (None: head_dim // 2). dtype: compute dtype (params stay float32).
    """

    vocab_size: int = 50304
    d_model: int = 768
    num_layers: int = 12
    num_heads: int = 6
    num_kv_heads: int = 3
    head_dim: int | None = None  # default d_model // num_heads
    mlp_dim: int | None = None  # default: 8/3 d_model rounded up to a multiple of 128
    attention: str = "dma"
    window: int | None = 1024
    bias_heads: int | None = None
    bias_kind: str = "exp"
    latent_dim: int = 192
    rope_dim: int | None = None
    nsa_block_size: int = 32
    nsa_block_stride: int = 16
    nsa_select_block: int = 64
    nsa_num_selected: int = 16
    qk_norm: bool = False
    rope_base: float = 10000.0
    tie_embeddings: bool = True
    residual_scale: bool = False  # learned per-channel residual scales, as in HF's Doge
    dt_bias: bool = True  # DMA's dt_proj has a bias (HF's Doge: only with attention_bias)
    dma_recency: float | None = None  # not the paper's: a learned slope * position in DMA's key score, from this value
    dma_local_window: int = 0  # not the paper's: DMA also keeps each query's last l keys (within its window)
    dma_sink_keys: int = 0  # not the paper's: DMA also keeps the first s keys of each document
    norm_eps: float = 1e-6
    dtype: str = "float32"
    implementation: str | None = None  # DMA's: see dma_jax.dma_attention
    # MHA, SWA, MLA: "auto" (cuDNN's fused kernel on a GPU for bf16/fp16, else XLA) or
    # jax.nn.dot_product_attention's None, "xla", "cudnn"
    dense_implementation: str | None = "auto"
    remat: bool = False  # recompute each block's activations in the backward pass (saves memory)
    # what remat keeps instead of recomputing (dma_jax.remat): "selection" (DMA's selection tables:
    # no selection stage in the backward pass, for a few integers per key; the same as "nothing"
    # for dense attention), "nothing", or "attention" (also the attention outputs and their softmax
    # statistics: no attention forward in the backward pass, for one more (B, T, H, D) activation
    # per layer)
    remat_saves: str = "selection"
    scan_layers: bool = False  # blocks stacked and run by one nnx.scan: compile time stops growing with depth

    def __post_init__(self):
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {self.attention!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}")
        if self.dense_implementation not in DENSE_IMPLEMENTATIONS:
            raise ValueError(f"dense_implementation must be one of {DENSE_IMPLEMENTATIONS}, "
                             f"got {self.dense_implementation!r}")
        if self.remat_saves not in REMAT_SAVES:
            raise ValueError(f"remat_saves must be one of {REMAT_SAVES}, got {self.remat_saves!r}")
        if self.attention in ("swa", "nsa") and self.window is None:
            raise ValueError(f"attention={self.attention!r} needs a window")
        if isinstance(self.implementation, str) or self.implementation is None:
            if self.implementation not in IMPLEMENTATIONS:
                raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {self.implementation!r}")
        if _dtype_name(self.dtype) not in COMPUTE_DTYPES:
            raise ValueError(f"dtype must be one of {COMPUTE_DTYPES} (the compute dtype; parameters stay float32), "
                             f"got {self.dtype!r}")

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim or self.d_model // self.num_heads

    @property
    def resolved_mlp_dim(self) -> int:
        return self.mlp_dim or -(-(8 * self.d_model // 3) // 128) * 128

    @staticmethod
    def preset(name: str, **overrides) -> "ModelConfig":
        """The paper's shapes: "80m", "200m", "680m", "1.7b"; and "tiny" for tests."""
        presets = {
            "tiny": dict(vocab_size=256, d_model=64, num_layers=2, num_heads=4, num_kv_heads=2, window=16, latent_dim=24,
                         nsa_block_size=4, nsa_block_stride=2, nsa_select_block=4, nsa_num_selected=3),
            "80m": dict(d_model=768, num_layers=12, num_heads=6, num_kv_heads=3, window=1024),
            "200m": dict(d_model=1024, num_layers=16, num_heads=8, num_kv_heads=4, window=1024),
            "680m": dict(d_model=1536, num_layers=24, num_heads=12, num_kv_heads=6, window=1024),
            # Qwen3-1.7B shape with DMA attention: head dim 128, q/k norm, tied, rope base 1e6.
            "1.7b": dict(vocab_size=151936, d_model=2048, num_layers=28, num_heads=16, num_kv_heads=8, head_dim=128,
                         mlp_dim=6144, qk_norm=True, tie_embeddings=True, rope_base=1e6, window=2048),
        }
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(presets)}")
        return ModelConfig(**{**presets[name], **overrides})


def _dtype_name(dtype) -> str | None:
    try:
        return jnp.dtype(dtype).name
    except TypeError:
        return None


def make_attention(config: ModelConfig, rngs: nnx.Rngs) -> nnx.Module:
    """The attention layer named by ``config.attention``."""
    shape = (config.d_model, config.num_heads, config.num_kv_heads, config.resolved_head_dim)
    common = dict(qk_norm=config.qk_norm, rope_base=config.rope_base, dtype=jnp.dtype(config.dtype), rngs=rngs)
    if config.attention == "dma":
        return DynamicMaskAttention(
            *shape, config.window, bias_heads=config.bias_heads, bias_kind=config.bias_kind,
            implementation=config.implementation, dt_bias=config.dt_bias, recency=config.dma_recency,
            local_window=config.dma_local_window, sink_keys=config.dma_sink_keys, **common,
        )
    if config.attention == "swa":
        return SlidingWindowAttention(*shape, config.window, implementation=config.dense_implementation, **common)
    if config.attention == "nsa":
        return NativeSparseAttention(
            *shape, block_size=config.nsa_block_size, block_stride=config.nsa_block_stride,
            select_block=config.nsa_select_block, num_selected=config.nsa_num_selected, window=config.window,
            rope_base=config.rope_base, dtype=jnp.dtype(config.dtype), rngs=rngs,
        )
    if config.attention == "mla":
        return MultiHeadLatentAttention(
            config.d_model, config.num_heads, config.resolved_head_dim, config.latent_dim, config.rope_dim,
            rope_base=config.rope_base, implementation=config.dense_implementation, dtype=jnp.dtype(config.dtype),
            rngs=rngs,
        )
    return MultiHeadAttention(*shape, implementation=config.dense_implementation, **common)


class SwiGLU(nnx.Module):
    """``down(silu(gate(x)) * up(x))``."""

    def __init__(self, d_model: int, hidden: int, *, dtype, rngs: nnx.Rngs):
        linear = lambda i, o: nnx.Linear(i, o, use_bias=False, dtype=dtype, rngs=rngs)
        self.gate_proj, self.up_proj, self.down_proj = linear(d_model, hidden), linear(d_model, hidden), linear(hidden, d_model)
        annotate(self, {"gate_proj": ("embed", "mlp"), "up_proj": ("embed", "mlp"), "down_proj": ("mlp", "embed")})

    def __call__(self, x):
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nnx.Module):
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        dtype = jnp.dtype(config.dtype)
        self.attn_norm = nnx.RMSNorm(config.d_model, epsilon=config.norm_eps, dtype=dtype, rngs=rngs)
        self.attn = make_attention(config, rngs)
        self.mlp_norm = nnx.RMSNorm(config.d_model, epsilon=config.norm_eps, dtype=dtype, rngs=rngs)
        self.mlp = SwiGLU(config.d_model, config.resolved_mlp_dim, dtype=dtype, rngs=rngs)
        ones = lambda: nnx.Param(jnp.ones((config.d_model,), jnp.float32)) if config.residual_scale else None
        self.attn_residual, self.mlp_residual = ones(), ones()

    def _add(self, scale, residual, update):
        return update + (residual if scale is None else scale[...].astype(residual.dtype) * residual)

    def _mlp(self, x):
        return self._add(self.mlp_residual, x, self.mlp(self.mlp_norm(x)))

    def __call__(self, x, *, positions, segment_ids):
        x = self._add(self.attn_residual, x, self.attn(self.attn_norm(x), positions=positions, segment_ids=segment_ids))
        return self._mlp(x)

    def prefill(self, x, *, lengths, max_len, chunk):
        attended, cache = self.attn.prefill(self.attn_norm(x), lengths=lengths, max_len=max_len, chunk=chunk)
        return self._mlp(self._add(self.attn_residual, x, attended)), cache

    def extend(self, x, *, positions, cache, lengths):
        attended, cache = self.attn.extend(self.attn_norm(x), positions=positions, cache=cache, lengths=lengths)
        return self._mlp(self._add(self.attn_residual, x, attended)), cache

    def decode(self, x, *, positions, cache):
        attended, cache = self.attn.decode(self.attn_norm(x), positions=positions, cache=cache)
        return self._mlp(self._add(self.attn_residual, x, attended)), cache


def positions_in_segments(segment_ids: jax.Array) -> jax.Array:
    """int32 (B, T): each token's index within its run of equal segment ids."""
    first, _ = segment_bounds(segment_ids)
    return jnp.arange(segment_ids.shape[1], dtype=jnp.int32) - first


class DecoderLM(nnx.Module):
    """Decoder-only LM: token embedding, ``num_layers`` blocks, final RMSNorm, LM head.

    Call: ``model(tokens, segment_ids=None)`` with tokens int (B, T) -> float32 logits
    (B, T, vocab_size).
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        dtype = jnp.dtype(config.dtype)
        self.embed = nnx.Embed(config.vocab_size, config.d_model, dtype=dtype, rngs=rngs)
        if config.scan_layers:
            @nnx.split_rngs(splits=config.num_layers)
            @nnx.vmap(in_axes=(0,), out_axes=0)
            def stacked_blocks(rngs):
                return Block(config, rngs=rngs)

            self.layers, self.blocks = stacked_blocks(rngs), None
        else:
            self.layers, self.blocks = None, nnx.List([Block(config, rngs=rngs) for _ in range(config.num_layers)])
        self.final_norm = nnx.RMSNorm(config.d_model, epsilon=config.norm_eps, dtype=dtype, rngs=rngs)
        self.lm_head = None if config.tie_embeddings else nnx.Linear(
            config.d_model, config.vocab_size, use_bias=False, dtype=dtype, rngs=rngs
        )
        annotate(self, {"embed": ("vocab", "embed")}, parameter="embedding")
        if self.lm_head is not None:
            annotate(self, {"lm_head": ("embed", "vocab")})

    def __call__(self, tokens: jax.Array, segment_ids: jax.Array | None = None) -> jax.Array:
        """int (B, T) tokens (and optional (B, T) segment ids) -> float32 (B, T, vocab) logits."""
        return self.head_logits(self.hidden_states(tokens, segment_ids))

    def hidden_states(self, tokens: jax.Array, segment_ids: jax.Array | None = None) -> jax.Array:
        """(B, T, d_model) in the compute dtype: the last block's output after the final norm,
        what ``head_logits`` turns into logits (a loss can run the head a piece at a time)."""
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be (B, T) integers, got shape {tokens.shape}")
        if segment_ids is None:
            positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
        else:
            positions = positions_in_segments(segment_ids)
        x = self.embed_tokens(tokens)
        run_block = lambda block, x, positions, segment_ids: block(x, positions=positions, segment_ids=segment_ids)
        if self.config.remat:
            run_block = nnx.remat(run_block, policy=remat_policy(self.config.remat_saves))
        if self.layers is not None:
            scanned = nnx.scan(lambda x, block, p, s: run_block(block, x, p, s), in_axes=(nnx.Carry, 0, None, None),
                               out_axes=nnx.Carry)
            return self.final_norm(scanned(x, self.layers, positions, segment_ids))
        for block in self.blocks:
            x = run_block(block, x, positions, segment_ids)
        return self.final_norm(x)

    def embed_tokens(self, tokens: jax.Array) -> jax.Array:
        """int tokens (...) -> (..., d_model) rows of the embedding in the compute dtype.

        Gathers from the float32 table and casts the rows, so the values equal ``nnx.Embed``'s
        (which casts the whole table first) while the gradient's scatter-add of repeated tokens
        accumulates in float32.
        """
        return jnp.take(self.embed.embedding[...], tokens, axis=0).astype(self.embed.dtype)

    def block_list(self) -> list[Block]:
        """The blocks in order, one module each (slices of the stacked parameters when scanned)."""
        if self.layers is None:
            return list(self.blocks)
        graphdef, state = nnx.split(self.layers)
        return [nnx.merge(graphdef, jax.tree.map(lambda x, i=i: x[i], state)) for i in range(self.config.num_layers)]

    def head_logits(self, hidden: jax.Array) -> jax.Array:
        """(..., d_model) ``hidden_states`` -> float32 (..., vocab) logits (tied embedding or LM head)."""
        logits = self.embed.attend(hidden) if self.lm_head is None else self.lm_head(hidden)
        return logits.astype(jnp.float32)

    def _logits(self, x):
        return self.head_logits(self.final_norm(x))

    def prefill(self, tokens: jax.Array, lengths: jax.Array, max_len: int, chunk: int | None = None):
        """Right-padded prompts (B, T) of ``lengths`` (B,) -> (logits (B, T, vocab), caches).

        ``max_len``: the longest total length decoding will reach (sizes MHA caches). ``chunk``:
        run the prompt ``chunk`` tokens at a time (first chunk in one pass, then each later chunk
        against the caches), so attention never sees more than the caches plus one chunk.
        """
        length = tokens.shape[1]
        chunk = length if chunk is None else min(chunk, length)
        x = self.embed_tokens(tokens[:, :chunk])
        later_chunk = chunk if chunk < length else 1  # what the caches must take in one step
        caches = []
        blocks = self.block_list()
        for block in blocks:
            x, cache = block.prefill(x, lengths=jnp.minimum(lengths, chunk), max_len=max_len, chunk=later_chunk)
            caches.append(cache)
        logits = [self._logits(x)]
        for start in range(chunk, length, chunk):
            piece = tokens[:, start : start + chunk]
            positions = jnp.broadcast_to(start + jnp.arange(piece.shape[1], dtype=jnp.int32), piece.shape)
            x = self.embed_tokens(piece)
            for i, block in enumerate(blocks):
                x, caches[i] = block.extend(x, positions=positions, cache=caches[i], lengths=lengths)
            logits.append(self._logits(x))
        return jnp.concatenate(logits, axis=1), caches

    def decode(self, tokens: jax.Array, positions: jax.Array, caches):
        """One token per sequence, tokens and positions (B,) -> (logits (B, vocab), caches)."""
        x = self.embed_tokens(tokens[:, None])
        new_caches = []
        for block, cache in zip(self.block_list(), caches):
            x, cache = block.decode(x, positions=positions, cache=cache)
            new_caches.append(cache)
        return self._logits(x)[:, 0], new_caches
