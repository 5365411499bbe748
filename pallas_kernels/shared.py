"""What the GPU and TPU kernels share: the mask value and output shapes inside ``shard_map``."""

from __future__ import annotations

import jax
import jax.numpy as jnp

MASKED = -0.7 * float(jnp.finfo(jnp.float32).max)  # logit of a key a query does not keep


def varying_like(shapes, args):
    """Give output shapes the mesh-axis variance of the inputs (needed inside ``shard_map``).

    Every input of our kernels varies over the same mesh axes (they are all per-device shards of
    one batch), so the variance of the first one that has any is used. JAX 0.10 calls the field
    ``manual_axis_type``; later versions may call it ``vma``; outside shard_map it is empty.
    """
    for arg in args:
        aval = jax.typeof(arg)
        for field in ("manual_axis_type", "vma"):
            variance = getattr(aval, "mat" if field == "manual_axis_type" else field, None)
            if variance:
                try:
                    return [jax.ShapeDtypeStruct(s.shape, s.dtype, **{field: variance}) for s in shapes]
                except TypeError:
                    continue
    return shapes
