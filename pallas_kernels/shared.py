"""What the GPU and TPU kernels share: the mask value, output shapes inside ``shard_map``, and the
power-of-two padding that tile and row sizes take."""

from __future__ import annotations

import jax
import jax.numpy as jnp

MASKED = -0.7 * float(jnp.finfo(jnp.float32).max)  # logit of a key a query does not keep


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1)."""
    return 1 << max(0, (n - 1).bit_length())


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


def _varying_axes(x) -> frozenset:
    """Mesh axes over which ``x`` varies inside ``shard_map`` (JAX 0.10: ``aval.mat.varying``;
    later versions may use ``aval.vma``); empty outside shard_map."""
    aval = jax.typeof(x)
    mat = getattr(aval, "mat", None)
    if mat is not None and hasattr(mat, "varying"):
        return frozenset(mat.varying)
    return frozenset(getattr(aval, "vma", None) or ())


def vary_like(values, args):
    """``values`` cast to vary over every mesh axis that some of ``args`` varies over.

    Kernels whose launch does not carry the variance of their inputs (Mosaic GPU's
    ``plgpu.kernel`` turns the check off and returns invariant outputs) need this inside
    ``shard_map``: a custom VJP's gradients must have the variance of its inputs."""
    axes = frozenset().union(*(_varying_axes(a) for a in args))
    if not axes:
        return values
    cast = lambda v: jax.lax.pcast(v, tuple(sorted(axes - _varying_axes(v))), to="varying")  # noqa: E731
    return type(values)(cast(v) if v is not None and axes - _varying_axes(v) else v for v in values)
