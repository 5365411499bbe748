"""What the DMA attention kernels compile to on Hopper, found on a CPU: registers, spills, shared
memory and which matrix instructions (wgmma or the older mma.sync), per kernel and tile config.

    pip install triton==3.6.*     # the GPU machine's Triton; here only as a compiler
    python -m benchmarks.kernel_ptx --configs 32,64,4,2:32,64,32,4,2 32,64,8,2:32,64,32,8,2 \\
        --out results/benchmarks/kernel_ptx.json

How: ``jax.export`` lowers forward+backward for CUDA on the CPU (as ``tests/ops/test_gpu_lowering.py``
does), which runs Pallas' Triton lowering. With jaxlib up to 0.10.2 each kernel becomes a custom
call that carries its Triton IR (MLIR bytecode) and launch options in its backend config; that IR
is read back with jaxlib's Triton dialect. Triton then compiles it for sm_90 (no GPU needed) and
its bundled ``ptxas -v`` reports registers and spills. (Later jaxlibs compile the kernels while
lowering, which needs a GPU: there the script says so and stops.) On the GPU machine it is XLA's own copy of Triton that compiles
these kernels, with its own pass pipeline, so read the numbers as what Triton does with our IR,
not as a measurement of the GPU run. They are what to check before spending GPU time on a tile
config: a kernel at 255 registers with spills is not worth timing.

Shapes are ``benchmarks.common``'s: B = 1, H = 32, Hkv = 8, bf16, causal; T and w from the
options (neither changes the kernels' code, only their grids, except through tile sizes).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
from jax import export

from benchmarks.common import HEADS, KV_HEADS, command_line, tile_config, write_json
from dma_jax import PallasConfig, dma_attention
from dma_jax.card import device_card

TRITON_TARGET = "__gpu$xla.gpu.triton"


def _string_bytes(body: str) -> bytes:
    """The bytes of an MLIR string literal's body (``\\XX`` escapes every byte that is not
    printable, quotes and backslashes included)."""
    return re.sub(rb"\\([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), body.encode("latin-1"))


def _ir_text(bytecode: bytes) -> str:
    """Triton IR text from the MLIR bytecode a custom call carries, read with jaxlib's dialect."""
    from jaxlib.mlir import ir
    from jaxlib.triton import dialect

    context = ir.Context()
    dialect.register_dialect(context)
    with context:
        return ir.Module.parse(bytecode).operation.get_asm(enable_debug_info=False)


def triton_modules(config: PallasConfig, length: int, window: int, head_dim: int) -> list[tuple[str, str]]:
    """(kernel name, Triton IR text) of every Pallas kernel in DMA's forward+backward, lowered for CUDA."""

    def loss(q, k, v, bias):
        return jnp.sum(dma_attention(q, k, v, bias, window, implementation=config).astype(jnp.float32))

    q = jax.ShapeDtypeStruct((1, length, HEADS, head_dim), jnp.bfloat16)
    kv = jax.ShapeDtypeStruct((1, length, KV_HEADS, head_dim), jnp.bfloat16)
    bias = jax.ShapeDtypeStruct((1, KV_HEADS, length), jnp.float32)
    exported = export.export(jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3))), platforms=["cuda"],
                             disabled_checks=[export.DisabledSafetyCheck.custom_call(TRITON_TARGET)])(q, kv, kv, bias)
    modules = []
    for line in exported.mlir_module().splitlines():
        ir_body, name = re.search(r'\bir = "([^"]*)"', line), re.search(r'\bname = "([^"]*)"', line)
        if f"@{TRITON_TARGET}(" in line and ir_body:
            modules.append((name.group(1) if name else "kernel", _ir_text(_string_bytes(ir_body.group(1)))))
    if not modules:
        raise SystemExit(f"no Triton IR in the lowered module: jaxlib {jax.__version__} compiles the kernels while "
                         "lowering (a GPU is needed); run this with jax/jaxlib 0.10.x")
    return modules


def kernel_role(name: str, index: int) -> str:
    """forward, queries (backward, query-major) or slots (backward, key-major), by name or order."""
    for role in ("forward", "queries", "slots"):
        if role in name:
            return role
    return ("forward", "queries", "slots")[index] if index < 3 else name


def compile_report(ir_text: str, num_warps: int, num_stages: int, arch: int = 90) -> dict:
    """Compile Triton IR for sm_``arch``; count matrix instructions and read ptxas' register report."""
    import triton
    from triton.backends.compiler import GPUTarget

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.ttir"
        path.write_text(ir_text)
        kernel = triton.compile(str(path), target=GPUTarget("cuda", arch, 32),
                                options={"num_warps": num_warps, "num_stages": num_stages})
        ptx = kernel.asm["ptx"]
        (Path(tmp) / "kernel.ptx").write_text(ptx)
        ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
        done = subprocess.run([str(ptxas), f"-arch=sm_{arch}a", "-v", str(Path(tmp) / "kernel.ptx"), "-o",
                               str(Path(tmp) / "kernel.cubin")], capture_output=True, text=True)
    report = done.stdout + done.stderr
    number = lambda pattern: int(m.group(1)) if (m := re.search(pattern, report)) else None  # noqa: E731
    return {"num_warps": num_warps, "num_stages": num_stages, "registers": number(r"Used (\d+) registers"),
            "spill_store_bytes": number(r"(\d+) bytes spill stores"), "spill_load_bytes": number(r"(\d+) bytes spill loads"),
            "shared_bytes": kernel.metadata.shared, "wgmma": len(re.findall(r"wgmma\.mma_async", ptx)),
            "mma_sync": len(re.findall(r"\bmma\.sync", ptx)), "cp_async": len(re.findall(r"cp\.async\.(?:ca|cg)", ptx)),
            "ptxas_ok": done.returncode == 0}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=["default"],
                   help="tile configs as in benchmarks.attention ('bq,bk,warps,stages:bq_bwd,bk_bwd,slots,warps,"
                        "stages'), or 'default'")
    p.add_argument("--length", type=int, default=4096)
    p.add_argument("--window", type=int, default=1024)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--arch", type=int, default=90, help="compute capability to compile for (90: H100/H200)")
    p.add_argument("--out", default=None, help="JSON file to write (card, versions, command, rows)")
    args = p.parse_args(argv)
    try:
        import triton
    except ImportError:
        raise SystemExit("benchmarks.kernel_ptx needs Triton as a compiler: pip install 'triton==3.6.*'")

    rows = []
    for text in args.configs:
        config = PallasConfig() if text == "default" else tile_config(text)
        for index, (name, ir_text) in enumerate(triton_modules(config, args.length, args.window, args.head_dim)):
            role = kernel_role(name, index)
            options = {"forward": config.options, "slots": config.options_slots or config.options_bwd}.get(
                role, config.options_bwd)
            row = {"config": text, "kernel": role, "ir_name": name}
            try:
                row.update(compile_report(ir_text, options.num_warps, options.num_stages, args.arch))
            except Exception as e:  # e.g. a tile too large for the chip: record it, go on
                row.update(num_warps=options.num_warps, num_stages=options.num_stages, error=repr(e)[:400])
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {"card": {**device_card(), "triton": triton.__version__, "compiled_for": f"sm_{args.arch}"},
              "command": command_line("benchmarks.kernel_ptx", argv),
              "length": args.length, "window": args.window, "head_dim": args.head_dim, "rows": rows}
    if args.out:
        write_json(result, args.out)
    width = max([28] + [len(r["config"]) + 2 for r in rows])
    print(f"\n{'config':<{width}}{'kernel':<9}{'warps':>6}{'regs':>6}{'spill B':>9}{'smem KB':>9}{'wgmma':>7}{'mma.sync':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['config']:<{width}}{r['kernel']:<9}{r['num_warps']:>6}  failed: {r['error'][:60]}")
            continue
        print(f"{r['config']:<{width}}{r['kernel']:<9}{r['num_warps']:>6}{r['registers'] or '?':>6}"
              f"{r['spill_store_bytes'] or 0:>9}{r['shared_bytes'] / 1024:>9.1f}{r['wgmma']:>7}{r['mma_sync']:>9}")
    return result


if __name__ == "__main__":
    main()
