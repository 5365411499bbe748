"""What a result was measured on: the card stored beside every benchmark and experiment result."""

from __future__ import annotations

import platform

import jax


def device_card() -> dict:
    """{"device_kind", "device_count", "jax", "python"} of this process's JAX backend."""
    return {"device_kind": jax.devices()[0].device_kind, "device_count": jax.device_count(), "jax": jax.__version__,
            "python": platform.python_version()}
