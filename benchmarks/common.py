"""What the benchmark scripts share: shapes, inputs, timing, the tile-config syntax, JSON output.

The attention shapes are the performance targets': B = 1, H = 32, Hkv = 8, D = 128, bf16, causal.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dma_jax import PallasConfig, live_ranges
from dma_jax.card import device_card
from dma_jax.timing import median_seconds
from pallas_kernels.gpu.common import KernelOptions

HEADS, KV_HEADS, HEAD_DIM, DTYPE = 32, 8, 128, jnp.bfloat16


def inputs(length, seed=0, *, heads=HEADS, kv_heads=KV_HEADS, head_dim=HEAD_DIM, dtype=DTYPE, batch=1):
    """Random q (B, T, H, D), k, v (B, T, Hkv, D) in ``dtype`` and a float32 bias (B, Hkv, T)."""
    keys = jax.random.split(jax.random.key(seed + length), 4)
    q = jax.random.normal(keys[0], (batch, length, heads, head_dim), dtype)
    k = jax.random.normal(keys[1], (batch, length, kv_heads, head_dim), dtype)
    v = jax.random.normal(keys[2], (batch, length, kv_heads, head_dim), dtype)
    bias = jax.random.normal(keys[3], (batch, kv_heads, length), jnp.float32)
    return q, k, v, bias


def median_ms(fn, *args, repeats):
    """Median milliseconds of one waited-for call ``fn(*args)`` after warm-up."""
    return median_seconds(fn, *args, repeats=repeats) * 1e3


def forward_and_backward(fn):
    """jit of the gradients of q, k and v of a scalar loss on ``fn(q, k, v, *rest)``."""

    def loss(q, k, v, *rest):
        return jnp.sum(fn(q, k, v, *rest).astype(jnp.float32) * 0.01)

    return jax.jit(jax.grad(loss, argnums=tuple(range(3))))


def kept_pairs(bias, window):
    """Sum over queries of kept keys (all heads of one kv head share a count), per kv head."""
    ends = np.asarray(live_ranges(bias, window), np.int64)
    return int((ends - np.arange(ends.shape[-1])).sum())


TILE_SYNTAX = "'bq,bk,warps,stages:bq_bwd,bk_bwd,slots,warps,stages[:seq|tiles,tslots|plainslots,slots=W/S]'"


def tile_config(text: str) -> PallasConfig:
    """``PallasConfig`` from 'bq,bk,warps,stages:bq_bwd,bk_bwd,slots,warps,stages[:flags]' (``--configs``).

    flags, comma-separated, each turning a ``PallasConfig`` default on or off: 'seq' / 'tiles'
    (``sequence_layout``: the forward reads q and writes its output in the (B, T, H, D) layout, or in
    tiles), 'tslots' / 'plainslots' (``slot_sums_transposed``: the key-major pass accumulates dK^T,
    dV^T, or dK, dV), 'slots=W/S' (that kernel's warps and stages, ``options_slots``).
    """
    try:
        fwd, bwd, *rest = text.split(":")
        if len(rest) > 1:
            raise ValueError("too many ':'")
        fwd, bwd = ([int(x) for x in part.split(",")] for part in (fwd, bwd))
        if len(fwd) != 4 or len(bwd) != 5:
            raise ValueError("wrong number of fields")
        extra = {}
        for flag in rest[0].split(",") if rest else []:
            if flag in ("seq", "tiles"):
                extra["sequence_layout"] = flag == "seq"
            elif flag in ("tslots", "plainslots"):
                extra["slot_sums_transposed"] = flag == "tslots"
            elif flag.startswith("slots="):
                warps, stages = (int(x) for x in flag[len("slots="):].split("/"))
                extra["options_slots"] = KernelOptions(num_warps=warps, num_stages=stages)
            else:
                raise ValueError(f"unknown flag {flag!r}")
        return PallasConfig(block_q=fwd[0], block_k=fwd[1], block_q_bwd=bwd[0], block_k_bwd=bwd[1], block_slots=bwd[2],
                            options=KernelOptions(num_warps=fwd[2], num_stages=fwd[3]),
                            options_bwd=KernelOptions(num_warps=bwd[3], num_stages=bwd[4]), **extra)
    except (ValueError, IndexError) as e:
        raise SystemExit(f"bad tile config {text!r} ({e}): want {TILE_SYNTAX}")


def command_line(module: str, argv=None) -> str:
    """How this benchmark was started, as a command to run from the repository root."""
    return " ".join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def result_header(benchmark: str, module: str, argv=None) -> dict:
    """The fields every benchmark JSON starts with: its name, the card and the command, and the
    ``DMA_*`` environment variables that change the kernels' defaults (``dma_jax.PallasConfig``)
    and ``XLA_FLAGS`` (e.g. ``--xla_gpu_deterministic_ops=true``) where any is set, as a prefix of
    the command."""
    overrides = " ".join(f"{name}={shlex.quote(value)}" for name, value in sorted(os.environ.items())
                         if name.startswith("DMA_") or name == "XLA_FLAGS")
    command = command_line(module, argv)
    return dict(benchmark=benchmark, card=device_card(), command=f"{overrides} {command}" if overrides else command)


def add_output_arguments(p, default: str) -> None:
    """``--out`` (the results JSON; the plot goes beside it as ``.png``) and ``--plot-only``."""
    p.add_argument("--out", default=default)
    p.add_argument("--plot-only", action="store_true", help="redraw the PNG from --out, run nothing")


def png_beside(out) -> str:
    """The plot's path: ``out`` with ``.png`` for its suffix."""
    return str(Path(out).with_suffix(".png"))


def replot(args, plot) -> dict:
    """``--plot-only``: draw ``plot(result, png)`` from the stored ``args.out`` and return the result."""
    result = json.loads(Path(args.out).read_text())
    plot(result, png_beside(args.out))
    return result


def write_json(result: dict, path) -> Path:
    """Write ``result`` as indented JSON, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return path


def card_label(result: dict) -> str:
    """'<device kind>, JAX <version>' of a result, whose card is a ``device_card`` dict or, in
    older results, a device-kind string beside a 'jax' field."""
    card = result["card"]
    if isinstance(card, dict):
        return f"{card['device_kind']}, JAX {card['jax']}"
    return f"{card}, JAX {result.get('jax', '?')}"
