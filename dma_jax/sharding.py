"""Device meshes, logical-axis sharding rules for the model's parameters, and per-device attention.

The mesh has three axes: ``data`` (pure data parallel), ``fsdp`` (data parallel whose parameters
and optimizer state are sharded) and ``tensor`` (attention heads and MLP columns split). The
batch is sharded over ``("data", "fsdp")``.

Parameters get logical axes from their names (``LOGICAL_AXES``), and ``RULES`` map logical axes to
mesh axes, MaxText-style. A dimension that the mesh axis does not divide stays replicated.

Attention kernels are custom calls that XLA cannot partition, so ``per_device`` runs a function
under ``shard_map`` over the batch (and heads) axes of the mesh set with ``jax.set_mesh``; outside
a mesh it calls the function as is.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# (regex on the parameter path "a/b/c", logical axes of its dims). First match wins.
LOGICAL_AXES: tuple[tuple[str, tuple[str | None, ...]], ...] = (
    (r"embed/embedding$", ("vocab", "embed")),
    (r"lm_head/kernel$", ("embed", "vocab")),
    (r"attn/(q_proj|k_proj|v_proj|kv_proj)/kernel$", ("embed", "heads")),
    (r"attn/o_proj/kernel$", ("heads", "embed")),
    (r"mlp/(gate_proj|up_proj)/kernel$", ("embed", "mlp")),
    (r"mlp/down_proj/kernel$", ("mlp", "embed")),
    (r"attn/(kv_down|compress_k|compress_v|gate_proj|dt_proj)/kernel$", ("embed", None)),
    (r"attn/(k_up|v_up)/kernel$", (None, "heads")),
)

# logical axis -> mesh axis
RULES: dict[str, str] = {"embed": "fsdp", "vocab": "tensor", "heads": "tensor", "mlp": "tensor"}


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Sizes of the mesh axes; one of them may be -1: all the devices left."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1

    def shape(self, num_devices: int) -> tuple[int, int, int]:
        sizes = [self.data, self.fsdp, self.tensor]
        for name, size in zip(MESH_AXES, sizes):
            if size == 0 or size < -1:
                raise ValueError(f"mesh.{name} must be positive or -1, got {size}")
        if sizes.count(-1) > 1:
            raise ValueError(f"at most one mesh axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
        known = math.prod(s for s in sizes if s != -1)
        if -1 in sizes:
            if num_devices % known:
                raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} does not divide {num_devices} devices")
            sizes[sizes.index(-1)] = num_devices // known
        if math.prod(sizes) != num_devices:
            raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, have {num_devices}")
        return tuple(sizes)


def make_mesh(config: MeshConfig, devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """A (data, fsdp, tensor) mesh over ``devices`` (default: all), with Auto axes."""
    devices = jax.devices() if devices is None else list(devices)
    shape = config.shape(len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def path_name(path) -> str:
    """'blocks/0/attn/q_proj/kernel' from a pytree key path."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
    return "/".join(p for p in parts if p not in ("value", "raw_value"))


def logical_axes(name: str, ndim: int) -> tuple[str | None, ...]:
    """Logical axes of a parameter; stacked blocks (``layers/...``) lead with an unsharded layer axis."""
    stacked = re.search(r"(?:^|/)layers/(.+)$", name)  # also optimizer moments: opt_state/.../layers/...
    if stacked and ndim >= 1:
        return (None,) + logical_axes(stacked.group(1), ndim - 1)
    for pattern, axes in LOGICAL_AXES:
        if re.search(pattern, name) and len(axes) == ndim:
            return axes
    return (None,) * ndim


def partition_spec(name: str, shape: tuple[int, ...], mesh: jax.sharding.Mesh) -> P:
    """Mesh axes of one parameter, replicating any dim that its mesh axis does not divide."""
    spec = []
    for axis, size in zip(logical_axes(name, len(shape)), shape):
        mesh_axis = RULES.get(axis) if axis else None
        if mesh_axis is None or mesh.shape[mesh_axis] == 1 or size % mesh.shape[mesh_axis]:
            spec.append(None)
        else:
            spec.append(mesh_axis)
    return P(*spec)


def tree_shardings(tree, mesh: jax.sharding.Mesh):
    """NamedShardings for every array leaf of a parameter-shaped pytree (params or optimizer state).

    Optimizer moments share their parameter's path suffix, so they get the same spec. Scalars are
    replicated.
    """

    def one(path, leaf):
        shape = tuple(getattr(leaf, "shape", ()))
        return NamedSharding(mesh, partition_spec(path_name(path), shape, mesh) if shape else P())

    return jax.tree_util.tree_map_with_path(one, tree)


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Rows of a (B, ...) batch split over ("data", "fsdp")."""
    return NamedSharding(mesh, P(BATCH_AXES))


def global_batch(local: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """This process's rows of the global batch -> global arrays sharded over the batch axes."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def per_device(fn: Callable, *args, head_axis: Sequence[int | None] | None = None):
    """``fn(*args)`` with every array argument split by batch (dim 0) over the ambient mesh.

    ``head_axis[i]``: the dim of argument i to split over ``tensor`` (None: no head dim). None
    arguments pass through. Without an ambient mesh (``jax.set_mesh``), or with a mesh whose batch
    and tensor axes are all 1, this is ``fn(*args)``. Output: split like argument 0.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not set(BATCH_AXES) <= set(mesh.axis_names):
        return fn(*args)
    batch_size = math.prod(mesh.shape[a] for a in BATCH_AXES)
    tensor = mesh.shape.get("tensor", 1)
    if batch_size * tensor == 1:
        return fn(*args)
    head_axis = head_axis or (None,) * len(args)

    def spec(arg, axis):
        if arg is None:
            return None
        dims = [BATCH_AXES] + [None] * (arg.ndim - 1)
        if axis is not None and tensor > 1:
            dims[axis] = "tensor"
        return P(*dims)

    present = [i for i, a in enumerate(args) if a is not None]
    specs = tuple(spec(args[i], head_axis[i]) for i in present)

    def local(*present_args):
        full = list(args)
        for i, a in zip(present, present_args):
            full[i] = a
        return fn(*full)

    # check_vma=False: Pallas interpret mode's grid loop fails JAX's varying-axes check; every
    # input here is split over the batch axes, so no replicated input needs the check.
    mapped = jax.shard_map(local, in_specs=specs, out_specs=specs[0], check_vma=False)
    return mapped(*(args[i] for i in present))
