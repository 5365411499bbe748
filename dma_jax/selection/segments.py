"""Packed segments: where each position's run of equal segment ids starts and ends."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def segment_bounds(segment_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """First position and one past the last position of each position's segment, int32, shaped
    like ``segment_ids`` (..., T); segments are runs of equal ids along the last axis."""
    length = segment_ids.shape[-1]
    positions = jnp.arange(length, dtype=jnp.int32)
    change = segment_ids[..., 1:] != segment_ids[..., :-1]
    edge = jnp.ones(segment_ids.shape[:-1] + (1,), bool)
    starts_here = jnp.concatenate([edge, change], axis=-1)
    ends_here = jnp.concatenate([change, edge], axis=-1)
    first = jax.lax.cummax(jnp.where(starts_here, positions, 0), axis=segment_ids.ndim - 1)
    end = jax.lax.cummin(jnp.where(ends_here, positions + 1, length), axis=segment_ids.ndim - 1, reverse=True)
    return first, end
