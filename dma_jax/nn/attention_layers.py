"""Self-attention layers with one call signature: DMA, dense causal (MHA) and sliding window.

All share q/k/v/o projections with GQA, optional per-head RMSNorm of q and k, and RoPE. Parameter
names follow HF's Doge (``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``, ``dt_proj``, ``A``).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
from flax import nnx

from dma_jax.ops.attention import dma_attention
from dma_jax.decoding.dma_cache import cache_append, cache_extend, cache_from_prefill, cached_attention
from dma_jax.decoding.kv_cache import kv_cache_append, kv_cache_from_prefill, kv_cached_attention
from dma_jax.nn.rope import apply_rope
from dma_jax.ops.sequence_parallel import sequence_parallel_attention
from dma_jax.sharding import MeshAxes, annotate, per_device, split_sizes
from dma_jax.validation import check_local_window


@runtime_checkable
class CachedAttention(Protocol):
    """The decoding interface of every attention layer of ``dma_jax.nn``: a model that calls these
    per layer can generate (``dma_jax.decoding.CachedLM``; ``examples/custom_model.py``).

    ``prefill(x, *, lengths, max_len, chunk=1)``: right-padded prompts x (B, T, d_model) of
    ``lengths`` (B,) -> (y (B, T, d_model), cache). ``max_len`` bounds the total length decoding
    will reach (caches that keep every key are sized by it); ``chunk``: the most tokens a later
    ``extend`` will take at once. A DMA layer's cache holds its w live keys, whatever T.

    ``extend(x, *, positions, cache, lengths=None)``: C more tokens per sequence, x (B, C, d_model)
    at ``positions`` (B, C) -> (y, cache); tokens at positions >= ``lengths`` are padding.

    ``decode(x, *, positions, cache)``: one token per sequence, x (B, 1, d_model) at ``positions``
    (B,) -> (y (B, 1, d_model), cache).

    Caches are pytrees (``DMACache``, ``KVCache``), so they pass through ``jit`` and ``lax.scan``.
    """

    def prefill(self, x: jax.Array, *, lengths: jax.Array, max_len: int, chunk: int = 1) -> tuple[jax.Array, Any]:
        ...

    def extend(self, x: jax.Array, *, positions: jax.Array, cache: Any, lengths: jax.Array | None = None) -> tuple[jax.Array, Any]:
        ...

    def decode(self, x: jax.Array, *, positions: jax.Array, cache: Any) -> tuple[jax.Array, Any]:
        ...


def default_positions(x: jax.Array) -> jax.Array:
    batch, length = x.shape[:2]
    return jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))


class _ProjectedAttention(nnx.Module):
    """q, k, v (with RoPE) from x, and the output projection. Subclasses attend."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        *,
        qk_norm: bool = False,
        rope_base: float = 10000.0,
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads={num_heads} must be a multiple of num_kv_heads={num_kv_heads}")
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.rope_base = rope_base
        linear = lambda i, o: nnx.Linear(i, o, use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q_proj = linear(d_model, num_heads * head_dim)
        self.k_proj = linear(d_model, num_kv_heads * head_dim)
        self.v_proj = linear(d_model, num_kv_heads * head_dim)
        self.o_proj = linear(num_heads * head_dim, d_model)
        annotate(self, {"q_proj": ("embed", "heads"), "k_proj": ("embed", "heads"), "v_proj": ("embed", "heads"),
                        "o_proj": ("heads", "embed")})
        norm = lambda: nnx.RMSNorm(head_dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q_norm = norm() if qk_norm else None
        self.k_norm = norm() if qk_norm else None

    def project(self, x, positions):
        """(q (B, T, H, D) with RoPE, k (B, T, Hkv, D) with RoPE, v (B, T, Hkv, D))."""
        batch, length = x.shape[:2]
        q = self.q_proj(x).reshape(batch, length, self.num_heads, self.head_dim)
        k = self.k_proj(x).reshape(batch, length, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).reshape(batch, length, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        positions = default_positions(x) if positions is None else positions
        return apply_rope(q, positions, self.rope_base), apply_rope(k, positions, self.rope_base), v

    def output(self, attended):
        batch, length = attended.shape[:2]
        return self.o_proj(attended.reshape(batch, length, self.num_heads * self.head_dim))


class DynamicMaskAttention(_ProjectedAttention):
    """Trainable dynamic mask attention (DMA): each query keeps the top-``window`` keys by a bias
    learned from the values.

    ``bias = exp(A * softplus(dt_proj(v)))`` ('exp', the paper's) or ``A * softplus(dt_proj(v))``
    ('linear'), with ``dt_proj``: Dense(Hkv*D -> Hb) over the concatenated value heads and ``A``
    of shape (Hb,), zero at init (a constant bias: the layer starts as sliding-window attention).
    ``bias_heads`` Hb is Hkv by default (one selection per kv head, as in Doge2 / HF) or H.

    ``recency`` (not in the paper; None by default): adds ``slope * position`` to every key's
    score, with a learned ``slope`` of shape (Hb,) that starts at ``recency``. The score stays one
    number per key, so selection, kernels and the bounded cache are unchanged; a query's kept set
    then leans to its latest keys, and its logits get an ALiBi-like linear decay with distance.
    It tests whether the recency that trained DMA loses (docs/results.md, perplexity) is what it
    misses.

    Call: ``layer(x, *, positions=None, segment_ids=None, key_mask=None)`` with x (B, T, d_model)
    -> (B, T, d_model); see ``dma_jax.dma_attention`` for the masks. ``implementation`` is passed
    to ``dma_attention`` (None: the Pallas kernels on GPU, XLA elsewhere).

    ``local_window`` l and ``sink_keys`` s (not in the paper; 0 by default): the local-window
    variant, where each query also keeps its last l valid keys and its segment's first s valid keys
    within its ``window`` (``dma_jax.selection.live_ranges``); caches follow it.

    Under a mesh (``jax.set_mesh``) the attention runs once per device over the axes of
    ``mesh_axes``: batch rows, heads and, when the mesh splits ``mesh_axes.sequence``, the sequence
    itself, each device keeping its slice of T and receiving only the keys earlier slices carry
    (``dma_jax.ops.sequence_parallel``).
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        window: int | None,
        *,
        bias_heads: int | None = None,
        bias_kind: str = "exp",
        implementation: str | None = None,
        dt_bias: bool = True,
        recency: float | None = None,
        local_window: int = 0,
        sink_keys: int = 0,
        mesh_axes: MeshAxes = MeshAxes(),
        rngs: nnx.Rngs,
        **kwargs,
    ):
        super().__init__(d_model, num_heads, num_kv_heads, head_dim, rngs=rngs, **kwargs)
        check_local_window(window, local_window, sink_keys, causal=True)
        if (local_window or sink_keys) and window is None:
            raise ValueError(f"local_window={local_window} and sink_keys={sink_keys} need a window (got None)")
        self.mesh_axes, self.local_window, self.sink_keys = mesh_axes, local_window, sink_keys
        if bias_kind not in ("exp", "linear"):
            raise ValueError(f"bias_kind must be 'exp' or 'linear', got {bias_kind!r}")
        bias_heads = num_kv_heads if bias_heads is None else bias_heads
        if bias_heads not in (num_kv_heads, num_heads):
            raise ValueError(f"bias_heads must be num_kv_heads={num_kv_heads} or num_heads={num_heads}, got {bias_heads}")
        self.window, self.bias_kind, self.implementation = window, bias_kind, implementation
        self.dt_proj = nnx.Linear(
            num_kv_heads * head_dim, bias_heads, use_bias=dt_bias, param_dtype=kwargs.get("param_dtype", jnp.float32),
            rngs=rngs,
        )
        annotate(self, {"dt_proj": ("embed", None)})
        self.A = nnx.Param(jnp.zeros((bias_heads,), kwargs.get("param_dtype", jnp.float32)))
        self.recency_slope = None if recency is None else nnx.Param(jnp.full((bias_heads,), recency, jnp.float32))

    @property
    def _variant(self) -> dict:
        """The local-window variant's arguments of ``dma_attention`` and the caches."""
        return dict(local_window=self.local_window, sink_keys=self.sink_keys)

    def key_bias(self, v: jax.Array, positions: jax.Array | None = None) -> jax.Array:
        """float32 (B, Hb, T): one score per key from the values v (B, T, Hkv, D) and, with
        ``recency``, the keys' ``positions`` (B, T) (default 0..T-1)."""
        batch, length = v.shape[:2]
        dt = self.dt_proj(v.reshape(batch, length, -1).astype(jnp.float32))
        score = self.A[...] * jax.nn.softplus(dt)
        if self.bias_kind == "exp":
            score = jnp.exp(score)
        if self.recency_slope is not None:
            positions = default_positions(v) if positions is None else positions
            score = score + self.recency_slope[...] * positions[..., None].astype(jnp.float32)
        return jnp.transpose(score, (0, 2, 1))

    def __call__(self, x, *, positions=None, segment_ids=None, key_mask=None):
        q, k, v = self.project(x, positions)
        sequence_split = split_sizes(self.mesh_axes)[1] > 1  # each device holds its slice of T

        def attend(q, k, v, bias, segment_ids, key_mask):
            kwargs = dict(segment_ids=segment_ids, key_mask=key_mask, implementation=self.implementation,
                          **self._variant)
            if sequence_split:
                return sequence_parallel_attention(q, k, v, bias, self.window, axis_name=self.mesh_axes.sequence,
                                                   **kwargs)
            return dma_attention(q, k, v, bias, self.window, **kwargs)

        # One kernel call per device when a mesh is set (jax.set_mesh); a plain call otherwise.
        bias = self.key_bias(v, positions)
        out = per_device(attend, q, k, v, bias, segment_ids, key_mask, head_axis=(2, 2, 2, 1, None, None),
                         sequence_axis=(1, 1, 1, 2, 1, 1), axes=self.mesh_axes)
        return self.output(out)

    def prefill(self, x, *, lengths, max_len, chunk=1):
        """Right-padded prompts x (B, T, d_model) of ``lengths`` (B,) -> (y, cache of w entries).

        With ``window=None`` the cache has ``max_len`` entries (every key stays kept).
        """
        q, k, v = self.project(x, None)
        bias = self.key_bias(v)
        out = dma_attention(q, k, v, bias, self.window, implementation=self.implementation, **self._variant)
        return self.output(out), cache_from_prefill(k, v, bias, self.window or max_len, lengths, **self._variant)

    def extend(self, x, *, positions, cache, lengths=None):
        """C tokens per sequence: x (B, C, d_model) at ``positions`` (B, C) -> (y, cache).

        Tokens at positions >= ``lengths`` (B,) are padding: never offered to the cache.
        """
        q, k, v = self.project(x, positions)
        out, cache = cache_extend(cache, q, k, v, self.key_bias(v, positions), positions, lengths, **self._variant)
        return self.output(out.astype(x.dtype)), cache

    def decode(self, x, *, positions, cache):
        """One token per sequence: x (B, 1, d_model) at ``positions`` (B,) -> (y, cache)."""
        q, k, v = self.project(x, positions[:, None])
        cache = cache_append(cache, k[:, 0], v[:, 0], self.key_bias(v, positions[:, None])[..., 0], positions,
                             **self._variant)
        return self.output(cached_attention(q[:, 0], cache)[:, None].astype(x.dtype)), cache


def resolve_dense_implementation(implementation, q) -> str | None:
    """What ``jax.nn.dot_product_attention`` gets for ``implementation`` (see
    ``dense_causal_attention``): "auto" is "cudnn" when JAX's default backend is a GPU, q is
    bf16/fp16 and the head dim is a multiple of 8 up to 128, and None (XLA) otherwise."""
    if implementation != "auto":
        return implementation
    head_dim = q.shape[-1]
    on_gpu = jax.default_backend() == "gpu"
    fused = q.dtype in (jnp.bfloat16, jnp.float16) and head_dim % 8 == 0 and head_dim <= 128
    return "cudnn" if on_gpu and fused else None


def dense_causal_attention(q, k, v, *, window, segment_ids, implementation="auto"):
    """Causal attention through ``jax.nn.dot_product_attention``.

    ``implementation``: "auto" (cuDNN where it applies, ``resolve_dense_implementation``), None
    (JAX's default, which is XLA's dense path on every backend in JAX 0.10-0.11: O(T^2) work and
    memory, also for a window, which is a mask over it), "xla", or "cudnn" (NVIDIA GPUs, bf16/fp16
    only: a fused flash kernel; the window is its sliding window).
    ``window``: keys ``t - window < j <= t`` only. ``segment_ids`` become an explicit
    (B, 1, T, T) mask.
    """
    implementation = resolve_dense_implementation(implementation, q)
    with jax.named_scope("dense_causal_attention"):  # benchmarks.step_profile finds its ops by this
        mask = None
        if segment_ids is not None:
            mask = (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]
        local = None if window is None else (window - 1, 0)
        return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=True, local_window_size=local,
                                            implementation=implementation)


class _DenseCausalAttention(_ProjectedAttention):
    """Causal attention to the last ``window`` keys (all keys when None), with a KV cache.

    ``implementation``: "auto" (cuDNN on a GPU where it applies), or ``jax.nn.dot_product_attention``'s
    None, "xla" or "cudnn" (``dense_causal_attention``).
    """

    window: int | None = None

    def __init__(self, *args, implementation: str | None = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        self.implementation = implementation

    def __call__(self, x, *, positions=None, segment_ids=None):
        q, k, v = self.project(x, positions)
        return self.output(dense_causal_attention(q, k, v, window=self.window, segment_ids=segment_ids,
                                            implementation=self.implementation))

    def prefill(self, x, *, lengths, max_len, chunk=1):
        """Right-padded prompts (B, T, d_model) of ``lengths`` (B,) -> (y, KV cache).

        The cache holds ``max_len`` slots (every key) or a ring of ``window + chunk - 1``, enough
        for later ``extend`` calls of up to ``chunk`` tokens.
        """
        q, k, v = self.project(x, None)
        out = dense_causal_attention(q, k, v, window=self.window, segment_ids=None, implementation=self.implementation)
        size = max_len if self.window is None else min(max_len, self.window + chunk - 1)
        return self.output(out), kv_cache_from_prefill(k, v, size, lengths)

    def extend(self, x, *, positions, cache, lengths=None):
        """C tokens per sequence: x (B, C, d_model) at ``positions`` (B, C) -> (y, cache).

        Padding tokens (positions >= ``lengths``) are not written to the cache.
        """
        q, k, v = self.project(x, positions)
        cache = kv_cache_append(cache, k, v, positions, lengths)
        return self.output(kv_cached_attention(q, cache, positions, self.window).astype(x.dtype)), cache

    def decode(self, x, *, positions, cache):
        """One token per sequence: x (B, 1, d_model) at ``positions`` (B,) -> (y, cache)."""
        return self.extend(x, positions=positions[:, None], cache=cache)


class MultiHeadAttention(_DenseCausalAttention):
    """Dense causal self-attention with GQA and RoPE (the "MHA" baseline).

    Call: ``layer(x, *, positions=None, segment_ids=None)`` -> (B, T, d_model).
    """


class SlidingWindowAttention(_DenseCausalAttention):
    """Causal attention to the last ``window`` keys (the "SWA" baseline); its cache is a ring.

    Call: ``layer(x, *, positions=None, segment_ids=None)`` -> (B, T, d_model).
    """

    def __init__(self, d_model, num_heads, num_kv_heads, head_dim, window: int, *, rngs: nnx.Rngs, **kwargs):
        super().__init__(d_model, num_heads, num_kv_heads, head_dim, rngs=rngs, **kwargs)
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
