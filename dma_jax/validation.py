"""Argument checks shared by every public entry point, with errors that name the argument."""

from __future__ import annotations

import dataclasses
import numbers

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class AttentionDims:
    """Static sizes of one DMA call: q (B, Tq, H, D); k, v (B, Tk, Hkv, D); bias (B, Hb, Tk)."""

    batch: int
    q_len: int
    kv_len: int
    heads: int
    kv_heads: int
    bias_heads: int
    head_dim: int


def _shape(x) -> tuple[int, ...]:
    return tuple(np.shape(x))


def _require_rank(name: str, x, rank: int, layout: str) -> None:
    if np.ndim(x) != rank:
        raise ValueError(f"{name} must have rank {rank} {layout}, got shape {_shape(x)}")


def check_window(window) -> None:
    """window: None (keep every visible key) or an int >= 1."""
    if window is None:
        return
    if isinstance(window, bool) or not isinstance(window, numbers.Integral):
        raise TypeError(f"window must be None or an int >= 1, got {window!r} of type {type(window).__name__}")
    if window < 1:
        raise ValueError(f"window must be >= 1 (or None for no limit), got {window}")


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_bias_values(bias) -> None:
    """Raise on NaN or +inf in a concrete bias (-inf is fine: never kept).

    Under jit this cannot be checked: NaN keys are never kept, and a kept +inf key makes
    its queries' outputs NaN.
    """
    if not _is_concrete(bias):
        return
    if bool(jnp.isnan(bias).any()):
        raise ValueError("bias contains NaN; under jit NaN keys are silently never kept")
    if bool((bias == jnp.inf).any()):
        raise ValueError("bias contains +inf, which makes the softmax NaN; clamp it (-inf is allowed: never kept)")


def check_masks(segment_ids, key_mask, batch: int, q_len: int, kv_len: int) -> None:
    """segment_ids (B, T) integer with Tq == Tk; key_mask (B, Tk) bool."""
    if segment_ids is not None:
        if q_len != kv_len:
            raise ValueError(
                f"segment_ids needs equal query and key lengths, got Tq={q_len}, Tk={kv_len}"
            )
        if _shape(segment_ids) != (batch, kv_len):
            raise ValueError(f"segment_ids must have shape (B, T)={(batch, kv_len)}, got {_shape(segment_ids)}")
        if not jnp.issubdtype(jnp.result_type(segment_ids), jnp.integer):
            raise TypeError(f"segment_ids must be integers, got dtype {jnp.result_type(segment_ids)}")
    if key_mask is not None:
        if _shape(key_mask) != (batch, kv_len):
            raise ValueError(f"key_mask must have shape (B, Tk)={(batch, kv_len)}, got {_shape(key_mask)}")
        if jnp.result_type(key_mask) != jnp.bool_:
            raise TypeError(f"key_mask must be bool, got dtype {jnp.result_type(key_mask)}")


def check_causal(causal) -> None:
    """causal must be a bool: None or 0 must not quietly mean non-causal (queries seeing the future)."""
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal must be True or False, got {causal!r} of type {type(causal).__name__}")


def check_scale(scale) -> None:
    """scale: None (D ** -0.5) or a finite number > 0."""
    if scale is None:
        return
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a float or None, got {scale!r}")
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be finite and > 0 (or None for D ** -0.5), got {scale!r}")


def check_local_window(window, local_window, sink_keys, causal: bool) -> None:
    """local_window and sink_keys: ints >= 0, together at most the window, causal attention only."""
    for name, value in (("local_window", local_window), ("sink_keys", sink_keys)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    if not (local_window or sink_keys):
        return
    if not causal:
        raise ValueError("local_window and sink_keys need causal attention (they keep a query's recent keys)")
    if window is not None and local_window + sink_keys > window:
        raise ValueError(f"local_window={local_window} plus sink_keys={sink_keys} exceed window={window}")


def check_selection_args(bias, window, q_len: int, causal: bool, segment_ids, key_mask, local_window=0,
                         sink_keys=0) -> None:
    """Checks for ``selection_mask``: bias (B, Hb, Tk) float, Tq <= Tk when causal."""
    check_causal(causal)
    _require_rank("bias", bias, 3, "(B, Hb, Tk)")
    if _shape(bias)[1] < 1:
        raise ValueError(f"bias must have at least one head, got shape {_shape(bias)}")
    if not jnp.issubdtype(jnp.result_type(bias), jnp.floating):
        raise TypeError(f"bias must be a float array, got dtype {jnp.result_type(bias)}")
    check_window(window)
    check_local_window(window, local_window, sink_keys, causal)
    batch, _, kv_len = _shape(bias)
    if causal and q_len > kv_len:
        raise ValueError(
            f"causal attention needs Tq <= Tk (queries are the last Tq positions), got Tq={q_len}, Tk={kv_len}"
        )
    check_masks(segment_ids, key_mask, batch, q_len, kv_len)
    check_bias_values(bias)


def check_contiguous_segments(segment_ids) -> None:
    """Raise if a concrete segment id occurs in more than one run of a row."""
    if segment_ids is None or not _is_concrete(segment_ids):
        return
    ids = np.asarray(segment_ids)
    for row, row_ids in enumerate(ids):
        starts = np.concatenate([[True], row_ids[1:] != row_ids[:-1]])
        if np.unique(row_ids).size != int(starts.sum()):
            raise ValueError(
                f"segment_ids row {row} reuses an id after another segment; the sparse paths need "
                "each segment to be one contiguous run (packed documents): relabel the runs"
            )


def check_attention_args(q, k, v, bias, window, causal, segment_ids, key_mask, scale, local_window=0,
                         sink_keys=0) -> AttentionDims:
    """Validate a DMA call and return its sizes. See ``dma_attention`` for the contract."""
    _require_rank("q", q, 4, "(B, Tq, H, D)")
    _require_rank("k", k, 4, "(B, Tk, Hkv, D)")
    _require_rank("v", v, 4, "(B, Tk, Hkv, D)")
    _require_rank("bias", bias, 3, "(B, Hb, Tk)")
    for name, x, axes in (("q", q, ((2, "H"), (3, "D"))), ("k", k, ((2, "Hkv"), (3, "D"))), ("bias", bias, ((1, "Hb"),))):
        for axis, label in axes:
            if _shape(x)[axis] < 1:
                raise ValueError(f"{name} has {label} = 0 (shape {_shape(x)}): {label} must be >= 1")
    batch, q_len, heads, head_dim = _shape(q)
    if _shape(k) != _shape(v):
        raise ValueError(f"k and v must have the same shape (B, Tk, Hkv, D), got k {_shape(k)} and v {_shape(v)}")
    k_batch, kv_len, kv_heads, k_dim = _shape(k)
    b_batch, bias_heads, b_len = _shape(bias)
    if k_batch != batch or b_batch != batch:
        raise ValueError(f"batch sizes differ: q {_shape(q)}, k {_shape(k)}, bias {_shape(bias)}")
    if k_dim != head_dim:
        raise ValueError(f"head dims differ: q {_shape(q)} has D={head_dim}, k {_shape(k)} has D={k_dim}")
    if b_len != kv_len:
        raise ValueError(f"bias {_shape(bias)} must have Tk={kv_len} keys like k {_shape(k)}")
    if heads % kv_heads:
        raise ValueError(f"H={heads} query heads (q {_shape(q)}) must be a multiple of Hkv={kv_heads} (k {_shape(k)})")
    if heads % bias_heads or bias_heads % kv_heads:
        raise ValueError(
            f"bias heads Hb={bias_heads} (bias {_shape(bias)}) must divide H={heads} and be a multiple of "
            f"Hkv={kv_heads}; use Hb = Hkv (shared selection per kv head) or Hb = H"
        )
    dtypes = {name: jnp.result_type(x) for name, x in (("q", q), ("k", k), ("v", v))}
    if len(set(dtypes.values())) != 1:
        raise TypeError(f"q, k and v must share one dtype, got {dtypes}")
    if not jnp.issubdtype(dtypes["q"], jnp.floating):
        raise TypeError(f"q, k and v must be floating point, got {dtypes['q']}")
    check_scale(scale)
    check_selection_args(bias, window, q_len, causal, segment_ids, key_mask, local_window, sink_keys)
    return AttentionDims(batch, q_len, kv_len, heads, kv_heads, bias_heads, head_dim)
