"""DMA in the dense regime, on a fused dense attention kernel (cuDNN on NVIDIA GPUs).

When a query may keep at least as many keys as it can see (``window`` None or ``>= Tk``), every
query keeps every visible valid key, and DMA is dense attention plus a per-key additive bias:
``scale * q.k_j + b_j``. That is exactly ``scale * [q, e] . [k_j, c_j]`` with the bias folded into
extra head-dimension columns, so ``jax.nn.dot_product_attention`` computes it (and autodiff gives
the bias its gradient through those columns):

- ``c_j`` holds ``b_j / scale`` split into a high and a low part in the input dtype (``hi`` =
  round(b / scale), ``lo`` = round(b / scale - hi)), so a bf16 bias keeps about 16 bits instead of
  8; ``e`` is 1 in both columns. With one bias per query head (Hb = H) and GQA, each kv head
  carries the R = H / Hkv heads' columns and ``e`` is a one-hot that picks the query head's pair.
- Invalid keys (-inf bias, ``key_mask`` False) get a finite logit 3e4 below the lowest valid bias
  of their row (clamped to what fp16 holds: still below -1000 at D = 256), so their weight is 0
  in float32; -inf, or the dtype's extremes, would make the backward NaN (0 * inf, or XLA's
  rewrites of the softmax). Queries that see no valid key at all are set to zero afterwards, as
  DMA defines them.
- The head dimension is zero-padded to a multiple of 8 (cuDNN's granularity); v gets zero columns,
  dropped from the output.

``dma_attention`` takes this path by itself (``implementation=None`` on a GPU) for Tq = Tk
(training, prefill), except for ``segment_ids`` (the dense kernel takes them as an explicit
(B, 1, T, T) mask beside its causal one, as the model's dense layers pass them; on an H100 the GPU
test's dk error was 2.5x a bf16 reference's at T = 2048 with a key mask, over its 2x bound, so
only an explicit ``DenseConfig`` runs them), Tq < Tk
(chunked prefill and decoding: the GPU test failed its error bound on an H100 with Tq 500 < Tk
1500 and with one query over 1500 keys and a key mask; an explicit ``DenseConfig`` still runs
them), head dims above 256 after padding, and float32/float64 inputs (cuDNN's fused attention
runs in 16 bits); ``why_not_dense`` says which.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax

from dma_jax.selection.ranges import valid_keys

_HEAD_DIM_MULTIPLE = 8
_MAX_HEAD_DIM = 256
_GAP = 3e4  # an invalid key's logit lies this far below the row's lowest valid bias: exp() is 0


@dataclasses.dataclass(frozen=True)
class DenseConfig:
    """The dense-regime path: ``backend`` is ``jax.nn.dot_product_attention``'s implementation,
    "cudnn" (NVIDIA GPUs, 16-bit inputs) or "xla" (anywhere: the same folded inputs, for tests)."""

    backend: str = "cudnn"

    def __post_init__(self):
        if self.backend not in ("cudnn", "xla"):
            raise ValueError(f"DenseConfig.backend must be 'cudnn' or 'xla', got {self.backend!r}")


def is_dense_regime(window, kv_len: int) -> bool:
    """Whether every query keeps every key it can see: no window, or one of at least Tk keys."""
    return window is None or window >= kv_len


def why_not_dense(q, k, bias, window, *, segment_ids, backend: str = "cudnn", automatic: bool = False) -> str | None:
    """None when the call can run on the dense path with ``backend``, else the reason it cannot.
    ``automatic``: the stricter rule of ``dma_attention``'s own choice (no ``segment_ids``)."""
    kv_len, kv_heads, bias_heads = k.shape[1], k.shape[2], bias.shape[1]
    if not is_dense_regime(window, kv_len):
        return f"window {window} < Tk = {kv_len}: queries keep a subset of their keys"
    if automatic and segment_ids is not None:
        return ("segment_ids: the dense kernel takes them as an explicit (B, 1, T, T) mask, and on an H100 its dk "
                "error was 2.5x a bf16 reference's (T 2048, with a key mask)")
    if automatic and q.shape[1] < kv_len:
        return (f"Tq = {q.shape[1]} < Tk = {kv_len}: on an H100 the GPU test failed its error bound with Tq 500 < "
                "Tk 1500 (the bottom-right causal mask as an explicit mask: 3.9x a bf16 reference's output error) "
                "and with one query over 1500 keys and a key mask")
    folded = _padded_dim(q.shape[-1] + 2 * (bias_heads // kv_heads))
    if folded > _MAX_HEAD_DIM:
        return f"head dim {q.shape[-1]} plus the bias columns pads to {folded} > {_MAX_HEAD_DIM}"
    if backend == "cudnn" and jnp.dtype(q.dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        return f"cuDNN's fused attention takes bf16/fp16, not {jnp.dtype(q.dtype).name}"
    return None


def _padded_dim(dim: int) -> int:
    return -(-dim // _HEAD_DIM_MULTIPLE) * _HEAD_DIM_MULTIPLE


def fold_bias(q, k, v, bias, *, scale, key_mask=None):
    """The folded inputs: (q', k', v') with D' = D + 2·(Hb / Hkv) columns padded to a multiple of 8.

    q (B, Tq, H, D), k, v (B, Tk, Hkv, D), bias float (B, Hb, Tk). ``scale * q'.k'`` equals
    ``scale * q.k + b`` for valid keys (up to the bias's rounding to two parts in q's dtype) and
    is at least 1000 below every valid logit for invalid ones. Differentiable in all four inputs. Also returns ``valid``
    (B, Hb, Tk).
    """
    batch, q_len, heads, dim = q.shape
    kv_heads, bias_heads = k.shape[2], bias.shape[1]
    per_kv = bias_heads // kv_heads  # bias heads folded into each kv head
    valid = lax.stop_gradient(valid_keys(bias, key_mask))
    finite = jnp.where(valid, bias.astype(jnp.float32), 0.0)
    # An invalid key's logit: _GAP below the row's lowest valid bias, in a column q's dtype can hold.
    floor = lax.stop_gradient(jnp.min(jnp.where(valid, finite, jnp.inf), axis=-1, keepdims=True))
    floor = jnp.where(jnp.isfinite(floor), floor, 0.0) - _GAP
    invalid_column = jnp.maximum(floor / scale, -0.25 * float(jnp.finfo(q.dtype).max))
    folded = jnp.where(valid, finite / scale, invalid_column)
    hi = folded.astype(q.dtype)
    lo = lax.stop_gradient(folded - hi.astype(jnp.float32)).astype(q.dtype)  # the gradient flows through hi
    # (B, Hb, Tk) -> (B, Tk, Hkv, per_kv, 2): the columns of each kv head, a (hi, lo) pair per bias head
    pairs = jnp.stack([hi, lo], axis=-1).reshape(batch, kv_heads, per_kv, -1, 2)
    k_columns = jnp.transpose(pairs, (0, 3, 1, 2, 4)).reshape(batch, -1, kv_heads, 2 * per_kv)
    # query head h (bias head h // (H / Hb)) reads its pair: a one-hot over the kv head's 2·per_kv columns
    slot = (jnp.arange(heads) // (heads // bias_heads)) % per_kv
    q_columns = jnp.repeat(jax.nn.one_hot(slot, per_kv, dtype=q.dtype), 2, axis=-1)  # (H, 2·per_kv)
    q_columns = jnp.broadcast_to(q_columns, (batch, q_len, heads, 2 * per_kv))
    width = _padded_dim(dim + 2 * per_kv)
    pad = lambda x, used: jnp.pad(x, ((0, 0),) * 3 + ((0, width - used),))  # noqa: E731
    q_folded = pad(jnp.concatenate([q, q_columns], axis=-1), dim + 2 * per_kv)
    k_folded = pad(jnp.concatenate([k, k_columns], axis=-1), dim + 2 * per_kv)
    return q_folded, k_folded, pad(v, dim), valid


def dense_attention(q, k, v, bias, window, *, causal, scale, segment_ids, key_mask, config=DenseConfig(),
                    local_window=0, sink_keys=0):
    """DMA in the dense regime (``is_dense_regime``); arguments as ``dma_attention`` (already
    checked). Returns (B, Tq, H, D) in q's dtype."""
    del window, local_window, sink_keys  # every visible key is kept
    batch, q_len, heads, dim = q.shape
    kv_len = k.shape[1]
    scale = dim**-0.5 if scale is None else float(scale)
    q_folded, k_folded, v_padded, valid = fold_bias(q, k, v, bias, scale=scale, key_mask=key_mask)
    mask, is_causal = None, causal
    if segment_ids is not None:  # (B, 1, T, T), beside cuDNN's own causal mask when Tq = Tk
        mask = (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]
    if causal and q_len == 1 and mask is None:  # one query (decoding) sees every key: no mask at all
        is_causal = False
    elif causal and q_len < kv_len:  # bottom-right alignment: an explicit mask
        visible = jnp.arange(kv_len)[None, :] <= jnp.arange(q_len)[:, None] + (kv_len - q_len)
        mask, is_causal = visible[None, None] if mask is None else mask & visible[None, None], False
    out = jax.nn.dot_product_attention(q_folded, k_folded, v_padded, scale=scale, mask=mask, is_causal=is_causal,
                                       implementation=None if config.backend == "xla" else "cudnn")[..., :dim]
    # A query whose visible keys are all invalid keeps nothing: DMA's output is 0 there.
    valid = jnp.repeat(valid, heads // valid.shape[1], axis=1)  # (B, H, Tk)
    if segment_ids is not None:
        same = segment_ids[:, :, None] == segment_ids[:, None, :]  # (B, Tq, Tk)
        reach = same & (jnp.arange(kv_len)[None, None, :] <= jnp.arange(q_len)[None, :, None]) if causal else same
        seen = jnp.einsum("bqk,bhk->bqh", reach.astype(jnp.float32), valid.astype(jnp.float32)) > 0
    elif causal:
        seen = jnp.transpose(lax.cummax(valid.astype(jnp.int32), axis=2)[:, :, kv_len - q_len:] > 0, (0, 2, 1))
    else:
        seen = jnp.broadcast_to(valid.any(axis=2)[:, None, :], (batch, q_len, heads))
    return jnp.where(seen[..., None], out, jnp.zeros((), out.dtype)).astype(q.dtype)
