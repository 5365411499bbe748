"""What XLA's GPU compiler makes of a DMA program, on a machine without a GPU: every kernel of the
compiled entry computation (its HLO name, shape and the JAX operation it comes from), and the
fusions that recompute work: a loop fusion that holds several gathers, or a reduce-window (a
cumulative sum) beside a gather, redoes the producer's work for every element it writes.

    python -m benchmarks.gpu_fusions --program selection --batch 32 --length 2048 --window 512 --segments
    python -m benchmarks.gpu_fusions --program attention --batch 32 --length 2048 --window 512 --heads 8 --kv-heads 8 --segments
    python -m benchmarks.gpu_fusions --program block --attention dma --batch 32 --length 2048 --window 512 --heads 8 --kv-heads 8 --segments
    python -m benchmarks.gpu_fusions --program step --config configs/mqar.py data.seq_len=1024 data.mqar_num_kv_pairs=16 model.window=128

``selection`` is the Pallas path's selection stage (live ranges, slots, both key tables);
``attention`` is the forward and backward of ``dma_attention`` on the Mosaic GPU kernels, as a
Hopper GPU runs them (bf16, D = 128); ``block`` is the forward and backward of one block of
``benchmarks.model_throughput``'s model (d_model = heads x 128, ``--attention`` dma on the Mosaic
GPU kernels or mha on cuDNN) under remat with ``ModelConfig``'s default ``remat_saves``, each
kernel put in a part of the model and a pass as ``benchmarks.step_profile`` does and its written
bytes summed per part and pass, so that what one attention's block launches beside the other's
can be read without a GPU; ``step`` is a whole training step of ``--config`` (with trailing
``key=value`` overrides, as train.py takes them) at its batch shape, split the same way. The programs are compiled for the device that ``--target`` describes
(default ``benchmarks/gpu_specs/h100_sxm.txtpb``), nothing runs.

This needs JAX's CUDA plugin for the installed JAX version, which the CPU install lacks; keep it
in an environment of its own, e.g.

    python -m venv .venv-gpu-aot
    .venv-gpu-aot/bin/pip install "jax[cuda12]==0.10.2" -e ".[train]"
    .venv-gpu-aot/bin/python -m benchmarks.gpu_fusions --program selection ...

(the plugin refuses to start without a GPU unless ``JAX_SKIP_CUDA_CONSTRAINTS_CHECK`` is set,
which this module sets). The report names fusions as a profile of the same program on a GPU does
(``benchmarks.gpu_breakdown``), up to XLA version differences, so a slow kernel of a profile can be
looked up here. Writes ``--out`` (JSON) and prints the kernels and the recomputing fusions.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

DEFAULT_TARGET = Path(__file__).resolve().parent / "gpu_specs" / "h100_sxm.txtpb"
_INSTRUCTION = re.compile(r"\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.+?)\s+([a-z][a-z\-]*)\(")
_LAUNCHES = ("fusion", "custom-call", "sort", "copy", "transpose", "gather", "scatter", "reduce-window", "reduce")


def _computation(text: str, name: str) -> str:
    start = text.index("\n" + name + " ")
    return text[start:text.index("\n}\n", start)]


def _op_name(line: str) -> str:
    match = re.search(r'op_name="([^"]*)"', line)
    return match.group(1) if match else ""


def entry_kernels(hlo_text: str) -> list[dict]:
    """The instructions of the entry computation that launch work: name, opcode, shape, the bytes
    it writes, op_name."""
    entry = hlo_text[hlo_text.index("\nENTRY"):]
    kernels = []
    for line in entry.splitlines()[1:]:
        match = _INSTRUCTION.match(line)
        if match and match.group(3) in _LAUNCHES:
            kernels.append(dict(name=match.group(1), opcode=match.group(3), shape=match.group(2)[:120],
                                output_bytes=output_bytes(match.group(2)), op_name=_op_name(line)))
    return kernels


def recomputing_fusions(hlo_text: str, min_gathers: int = 3) -> list[dict]:
    """Fusions anywhere in the module with at least ``min_gathers`` gathers, or a gather and a
    reduce-window: name, shape, counts, and the op_name of the fusion."""
    found = []
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.match(line)
        if not match or match.group(3) != "fusion":
            continue
        called = re.search(r"calls=(%?[\w.\-]+)", line)
        if not called:
            continue
        body = _computation(hlo_text, called.group(1))
        gathers, windows = body.count(" gather("), body.count(" reduce-window(")
        if gathers >= min_gathers or (gathers and windows):
            found.append(dict(name=match.group(1), shape=match.group(2)[:120], gathers=gathers, reduce_windows=windows,
                              op_name=_op_name(line)))
    return found


def gpu_mesh(target: Path):
    """A one-device mesh of the GPU that ``target`` (a GpuTargetConfigProto in text) describes."""
    os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
    from jax.experimental import topologies

    try:
        topology = topologies.get_topology_desc(platform="cuda", target_config=target.read_text(), topology="1x1x1")
    except NotImplementedError as error:
        raise SystemExit(f"{error}: this needs JAX's CUDA plugin (pip install \"jax[cuda12]==<this jax's version>\" "
                         "in an environment of its own; see this module's docstring)") from error
    return topologies.make_mesh(topology, (1,), ("device",))


_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4, "s32": 4, "u32": 4,
                "f64": 8, "s64": 8, "u64": 8}


def output_bytes(shape: str) -> int:
    """Bytes an instruction writes, from its HLO shape text (``bf16[32,2048]{1,0}`` or a tuple)."""
    total = 0
    for dtype, dims in re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", shape):
        size = _DTYPE_BYTES.get(dtype, 0)
        for dim in filter(None, dims.split(",")):
            size *= int(dim)
        total += size
    return total


def block_part(kernel: dict, part_of) -> str:
    """``step_profile.part_of`` for an HLO instruction: the attention kernels are custom calls
    named by what launches them (``mpmd_map`` for Mosaic GPU, ``triton`` for the Triton lowering,
    ``dot_product_attention`` for cuDNN), not by the kernel names a profile shows."""
    if kernel["opcode"] == "custom-call":
        if "mpmd_map" in kernel["name"] or "triton" in kernel["name"]:
            return "DMA kernels"
        if "dot_product_attention" in kernel["name"]:
            return "cuDNN attention"
    return part_of(kernel["name"], kernel["op_name"])


def block_program(args):
    """(function, abstract arguments) of one model block's forward+backward under remat."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from dma_jax import PallasConfig
    from dma_jax.models import Block, ModelConfig
    from dma_jax.remat import policy

    d_model = args.heads * 128
    config = ModelConfig(
        vocab_size=256, d_model=d_model, num_layers=1, num_heads=args.heads, num_kv_heads=args.kv_heads, head_dim=128,
        attention=args.attention, window=args.window if args.attention != "mha" else None, dtype="bfloat16",
        implementation=PallasConfig(forward_backend="mosaic_gpu", backward_backend="mosaic_gpu"),
        dense_implementation="cudnn", remat=True)
    graphdef, state = nnx.split(Block(config, rngs=nnx.Rngs(0)))

    def loss(state, x, cotangent, positions, segment_ids):
        def run(state, x):
            return nnx.merge(graphdef, state)(x, positions=positions, segment_ids=segment_ids)

        out = jax.checkpoint(run, policy=policy(config.remat_saves))(state, x)
        return jnp.sum(out.astype(jnp.float32) * cotangent)

    abstract = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype)
    rows = (args.batch, args.length)
    return jax.grad(loss, argnums=(0, 1)), [
        jax.tree.map(lambda a: abstract(a.shape, a.dtype), state), abstract((*rows, d_model), jnp.bfloat16),
        abstract((*rows, d_model), jnp.float32), abstract(rows, jnp.int32), abstract(rows, jnp.int32)]


def step_program(args, mesh):
    """Optimised HLO text of one training step of ``args.config`` (with ``args.overrides``),
    compiled for ``mesh``'s device under a mesh with the config's axes, for abstract state and
    a batch of the config's shape."""
    import jax
    import jax.numpy as jnp

    from dma_jax.sharding import make_mesh
    from dma_jax.training.config import load_config
    from dma_jax.training.step import config_train_step

    config = load_config(args.config, args.overrides)
    mesh = make_mesh(config.mesh, devices=list(mesh.devices.flat))
    rows = (config.data.global_batch_size, config.data.seq_len)
    batch = {name: jax.ShapeDtypeStruct(rows, jnp.float32 if name == "loss_mask" else jnp.int32)
             for name in ("inputs", "targets", "segment_ids", "loss_mask")}
    with jax.set_mesh(mesh):
        _, state, _, step = config_train_step(config, mesh, abstract=True)
        return step.lower(state, batch).compile().as_text()


def program(args):
    """(function, abstract arguments: ``jax.ShapeDtypeStruct`` pytrees) of ``args.program`` at the
    flags' shape."""
    import jax
    import jax.numpy as jnp

    from benchmarks.attention import selection_stage
    from dma_jax import PallasConfig, dma_attention

    if args.program == "block":
        return block_program(args)
    batch, length, heads, kv_heads = args.batch, args.length, args.heads, args.kv_heads
    abstract = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype)
    bias = abstract((batch, kv_heads, length), jnp.float32)
    segments = abstract((batch, length), jnp.int32) if args.segments else None
    if args.program == "selection":
        def run(b, s=None):
            return selection_stage(args.window, length, PallasConfig(), per_bias=heads // kv_heads, segment_ids=s)(b)

        return run, [bias] + ([segments] if segments else [])
    config = PallasConfig(forward_backend="mosaic_gpu", backward_backend="mosaic_gpu")

    def loss(q, k, v, b, s=None):
        out = dma_attention(q, k, v, b, args.window, segment_ids=s, implementation=config)
        return jnp.sum(out.astype(jnp.float32) ** 2)

    q, kv = abstract((batch, length, heads, 128), jnp.bfloat16), abstract((batch, length, kv_heads, 128), jnp.bfloat16)
    return jax.grad(loss, argnums=(0, 1, 2, 3)), [q, kv, kv, bias] + ([segments] if segments else [])


def compile_for_gpu(fn, arguments, mesh) -> str:
    """Optimised HLO text of ``fn`` compiled for ``mesh``'s device, for abstract arguments
    (pytrees of ``jax.ShapeDtypeStruct``)."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    replicated = NamedSharding(mesh, PartitionSpec())
    specs = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated), arguments)
    return jax.jit(fn).lower(*specs).compile().as_text()


def main(argv=None) -> dict:
    from benchmarks.common import result_header, write_json

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--program", choices=["selection", "attention", "block", "step"], default="selection")
    p.add_argument("--config", default="configs/mqar.py", help="the training config (--program step)")
    p.add_argument("--attention", choices=["dma", "mha"], default="dma", help="the block's attention (--program block)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--length", type=int, default=4096)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--window", type=int, default=1024)
    p.add_argument("--segments", action="store_true", help="segment ids as an argument, as a model's batches carry")
    p.add_argument("--target", type=Path, default=DEFAULT_TARGET, help="GpuTargetConfigProto (text) of the GPU")
    p.add_argument("--min-gathers", type=int, default=3)
    p.add_argument("--out", default="gpu_fusions.json")
    p.add_argument("--hlo-out", default=None, help="also write the optimised HLO text here")
    p.add_argument("overrides", nargs="*", help="key=value overrides of --config (--program step)")
    args = p.parse_args(argv)
    if args.overrides and args.program != "step":
        p.error("key=value overrides apply to --program step only")
    mesh = gpu_mesh(args.target)
    if args.program == "step":
        text = step_program(args, mesh)
    else:
        fn, arguments = program(args)
        text = compile_for_gpu(fn, arguments, mesh)
    if args.hlo_out:
        Path(args.hlo_out).write_text(text)
    kernels = entry_kernels(text)
    if args.program in ("block", "step"):
        from benchmarks.step_profile import part_of, pass_of

        for kernel in kernels:
            kernel.update(part=block_part(kernel, part_of), **{"pass": pass_of(kernel["op_name"])})
    result = dict(**result_header("gpu_fusions", "benchmarks.gpu_fusions", argv), target=args.target.name,
                  settings={k: str(v) for k, v in vars(args).items() if k != "target"}, kernels=kernels,
                  recomputing=recomputing_fusions(text, args.min_gathers))
    if args.program in ("block", "step"):
        written = {}
        for kernel in kernels:
            key = f"{kernel['part']} / {kernel['pass']}"
            written[key] = written.get(key, 0) + kernel["output_bytes"] / 2**20
        result["written_mib"] = dict(sorted(written.items()))
        result["written_mib_total"] = sum(written.values())
    write_json(result, args.out)
    print(f"{len(result['kernels'])} kernels in the entry computation:")
    for kernel in result["kernels"]:
        print(f"  {kernel['name'][:36]:36s} {kernel['opcode']:12s} {kernel['shape'][:60]:60s} "
              f"{kernel.get('part', '')[:20]:20s} {kernel['op_name'][-50:]}")
    for key, mib in result.get("written_mib", {}).items():
        print(f"  writes {mib:9.1f} MiB  {key}")
    if "written_mib_total" in result:
        print(f"  writes {result['written_mib_total']:9.1f} MiB  in all")
    print(f"\nfusions that recompute (>= {args.min_gathers} gathers, or a gather beside a reduce-window): "
          f"{len(result['recomputing'])}")
    for fusion in result["recomputing"]:
        print(f"  {fusion['name'][:36]:36s} gathers {fusion['gathers']:3d}  reduce-windows {fusion['reduce_windows']:2d}  "
              f"{fusion['shape'][:60]}")
    return result


if __name__ == "__main__":
    main()
