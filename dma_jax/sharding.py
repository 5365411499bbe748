"""Device meshes, logical-axis sharding rules for the model's parameters, and per-device attention.

The mesh has four axes: ``data`` (pure data parallel), ``fsdp`` (data parallel whose parameters
and optimizer state are sharded), ``sequence`` (the sequence split along T: activations through
the whole block, DMA by ``ops.sequence_parallel``) and ``tensor`` (attention heads and MLP columns
split). The batch is sharded over ``("data", "fsdp")`` and, along T, over ``sequence``. Layers
take the names of these axes from a ``MeshAxes`` (default: these), so they work inside a host
model whose mesh names its axes otherwise.

Parameters get logical axes from their names (``LOGICAL_AXES``), and ``RULES`` map logical axes to
mesh axes, MaxText-style. A dimension that the mesh axis does not divide stays replicated. The
layers also record those names on their parameters (``annotate``: ``logical_axes`` metadata), so a
model that hosts them shards them by its own rules (``logical_partition_specs``).

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
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "sequence", "tensor")
BATCH_AXES = ("data", "fsdp")


@dataclasses.dataclass(frozen=True)
class MeshAxes:
    """The mesh axis names a layer splits over: ``batch`` (one or several axes), ``sequence``
    (T; None: never split) and ``heads`` (attention heads; None: never split)."""

    batch: tuple[str, ...] = BATCH_AXES
    sequence: str | None = "sequence"
    heads: str | None = "tensor"

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


def annotate(module, axes: dict[str, tuple[str | None, ...]], parameter: str = "kernel") -> None:
    """Record logical axis names on parameters: ``axes`` maps a submodule's attribute name to the
    logical axes of its ``parameter``, stored as the variable's ``logical_axes`` metadata (read by
    ``logical_partition_specs``). The layers of ``dma_jax.nn`` and ``DecoderLM`` annotate theirs."""
    for name, logical in axes.items():
        getattr(getattr(module, name), parameter).set_metadata(logical_axes=tuple(logical))


def logical_partition_specs(module, rules: dict[str, str | None]):
    """A ``PartitionSpec`` for every parameter of ``module`` from its ``logical_axes`` metadata and
    a host's ``rules`` (logical axis -> mesh axis name, or None), as {parameter path: spec};
    parameters without annotations are replicated. For models that shard by their own mesh."""
    leaves = jax.tree_util.tree_flatten_with_path(
        nnx.state(module, nnx.Param), is_leaf=lambda x: isinstance(x, nnx.Variable))[0]
    specs = {}
    for path, variable in leaves:
        ndim = np.ndim(variable.get_value())
        logical = tuple(variable.get_metadata().get("logical_axes") or ())
        logical = (None,) * (ndim - len(logical)) + logical  # stacked blocks lead with their layer axis
        specs[path_name(path)] = P(*(rules.get(axis) if axis else None for axis in logical))
    return specs


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Sizes of the mesh axes; one of them may be -1: all the devices left."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    sequence: int = 1

    def shape(self, num_devices: int) -> tuple[int, int, int, int]:
        """(data, fsdp, sequence, tensor) sizes, the order of ``MESH_AXES``."""
        sizes = [self.data, self.fsdp, self.sequence, self.tensor]
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
    """A (data, fsdp, sequence, tensor) mesh over ``devices`` (default: all), with Auto axes."""
    devices = jax.devices() if devices is None else list(devices)
    shape = config.shape(len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


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
    """A (B, T) batch: rows split over ("data", "fsdp"), positions over "sequence"."""
    return NamedSharding(mesh, P(BATCH_AXES, "sequence") if "sequence" in mesh.axis_names else P(BATCH_AXES))


def global_batch(local: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """This process's rows of the global batch -> global arrays sharded over the batch axes."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def split_sizes(axes: MeshAxes = MeshAxes()) -> tuple[int, int, int]:
    """(batch, sequence, heads) split sizes of the ambient mesh (``jax.set_mesh``) along ``axes``;
    (1, 1, 1) without a mesh or when it lacks the batch axes."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not set(axes.batch) <= set(mesh.axis_names):
        return 1, 1, 1
    size = lambda name: mesh.shape.get(name, 1) if name else 1  # noqa: E731
    return math.prod(mesh.shape[a] for a in axes.batch), size(axes.sequence), size(axes.heads)


def per_device(fn: Callable, *args, head_axis: Sequence[int | None] | None = None,
               sequence_axis: Sequence[int | None] | None = None, axes: MeshAxes = MeshAxes()):
    """``fn(*args)`` with every array argument split by batch (dim 0) over the ambient mesh.

    ``head_axis[i]``: the dim of argument i to split over ``axes.heads`` (None: no head dim);
    ``sequence_axis[i]``: the dim to split over ``axes.sequence`` (None: none; then ``fn`` must
    handle its shard of the sequence, as ``ops.sequence_parallel`` does). None arguments pass
    through. Without an ambient mesh (``jax.set_mesh``), or with a mesh whose batch, sequence and
    head axes are all 1, this is ``fn(*args)``. Output: split like argument 0.
    """
    batch_size, sequence, heads = split_sizes(axes)
    if batch_size * sequence * heads == 1:
        return fn(*args)
    head_axis = head_axis or (None,) * len(args)
    sequence_axis = sequence_axis or (None,) * len(args)

    def spec(arg, head_dim, sequence_dim):
        if arg is None:
            return None
        dims = [axes.batch] + [None] * (arg.ndim - 1)
        if head_dim is not None and heads > 1:
            dims[head_dim] = axes.heads
        if sequence_dim is not None and sequence > 1:
            dims[sequence_dim] = axes.sequence
        return P(*dims)

    present = [i for i, a in enumerate(args) if a is not None]
    specs = tuple(spec(args[i], head_axis[i], sequence_axis[i]) for i in present)

    def local(*present_args):
        full = list(args)
        for i, a in zip(present, present_args):
            full[i] = a
        return fn(*full)

    # check_vma=False: Pallas interpret mode's grid loop fails JAX's varying-axes check; every
    # input here is split over the batch axes, so no replicated input needs the check.
    mapped = jax.shard_map(local, in_specs=specs, out_specs=specs[0], check_vma=False)
    return mapped(*(args[i] for i in present))
