"""DMA against dense and sparse attention on one GPU, side by side in one run.

    python -m benchmarks.attention --out-dir results/benchmarks [--lengths 4096 32768] [--windows 1024]

B = 1, H = 32, Hkv = 8, D = 128, bf16, causal. For each T: cuDNN dense causal
(``jax.nn.dot_product_attention(implementation="cudnn")``, GQA), the Pallas GPU flash attention
shipped with JAX (``jax.experimental.pallas.ops.gpu.attention.mha``, kv heads repeated, since it
has no GQA), and for each window w: ``dma_attention(implementation="pallas")`` through the public
call, selection included; forward and forward+backward; up to --reference-max also the dense
reference (``dma_attention_reference``) and the gathered-tile XLA path. Medians of --repeats timed runs after
warm-up. Useful TFLOP/s counts 4 * D * H * (sum over queries of the keys they keep) forward, 3.5x
that for forward+backward. Writes attention.json (card, versions, command) and attention.png
(``benchmarks/plot_attention.py``).
Before timing, checks the kernel against the float32 XLA path at the smallest T (--check).
"""

from __future__ import annotations

import argparse
import json
import os

import jax
import jax.numpy as jnp

from benchmarks.common import (
    HEAD_DIM, HEADS, KV_HEADS, TILE_SYNTAX, forward_and_backward, inputs, kept_pairs, median_ms, result_header,
    tile_config, write_json,
)
from benchmarks.plot_attention import plot_results
from dma_jax import PallasConfig, dma_attention, dma_attention_reference, live_ranges
from dma_jax.ops.pallas_gpu import selection_stage as pallas_selection_stage


def selection_stage(window, length, config, *, per_bias=HEADS // KV_HEADS, segment_ids=None):
    """bias -> the whole selection stage of the Pallas path (live ranges, slots, both key tables), causal, at
    this benchmark's head shapes (``per_bias`` query heads per bias head) unless told otherwise."""
    config = config.resolve(head_dim=HEAD_DIM, per_bias=per_bias, dtype=jnp.bfloat16)
    return lambda b: pallas_selection_stage(b, window, length, causal=True, segment_ids=segment_ids, key_mask=None,
                                            config=config)


def selection_ms(bias, window, config, repeats) -> dict:
    """Milliseconds of the selection alone: live ranges, and the whole selection stage of the
    Pallas path (live ranges, slots, both key tables)."""
    stage = selection_stage(window, bias.shape[-1], config)
    return dict(
        live_ranges_ms=median_ms(jax.jit(lambda b: live_ranges(b, window)), bias, repeats=repeats),
        selection_stage_ms=median_ms(jax.jit(stage), bias, repeats=repeats),
    )


def check(length, window):
    """Kernel vs the float32 XLA path: forward and all four gradients, FlashAttention-style bound."""
    q, k, v, bias = inputs(length, seed=1)
    cotangent = jax.random.normal(jax.random.key(7), q.shape, jnp.float32)
    f32 = lambda x: x.astype(jnp.float32)
    xla = lambda *a: dma_attention(*a, window, implementation="xla")
    pallas = lambda *a: dma_attention(*a, window, implementation="pallas")

    def value_and_grads(fn, *a):
        out, vjp = jax.vjp(fn, *a)
        return (out,) + vjp(cotangent.astype(out.dtype))

    with jax.default_matmul_precision("highest"):
        expected = jax.jit(lambda *a: value_and_grads(xla, *a))(f32(q), f32(k), f32(v), bias)
    bf16_ref = jax.jit(lambda *a: value_and_grads(xla, *a))(q, k, v, bias)
    got = jax.jit(lambda *a: value_and_grads(pallas, *a))(q, k, v, bias)
    result = dict(T=length, window=window)
    for name, e, r, g in zip(("out", "dq", "dk", "dv", "dbias"), expected, bf16_ref, got):
        err = float(jnp.abs(f32(g) - e).max())
        ref_err = float(jnp.abs(f32(r) - e).max())
        result[name] = dict(max_err=err, bf16_xla_max_err=ref_err, ok=bool(err <= 2 * ref_err + 1e-3 * float(jnp.abs(e).max())))
    result["ok"] = all(v["ok"] for v in result.values() if isinstance(v, dict))
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192, 16384, 32768, 65536, 131072])
    p.add_argument("--windows", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--no-baselines", action="store_true", help="skip cuDNN and Pallas flash attention")
    p.add_argument("--no-backward", action="store_true")
    p.add_argument("--check", action="store_true", help="check the kernel at the smallest T first")
    p.add_argument("--reference-max", type=int, default=8192,
                   help="also time the dense reference (dma_attention_reference) and the XLA path up to this T")
    p.add_argument("--out-dir", default=".")
    p.add_argument(
        "--configs", nargs="+", default=None,
        help=f"tile configs to compare instead of the default, each {TILE_SYNTAX} "
             "(forward : backward : flags, see benchmarks.common.tile_config)",
    )
    args = p.parse_args(argv)
    result = dict(
        **result_header("attention", "benchmarks.attention", argv),
        shape=dict(B=1, H=HEADS, Hkv=KV_HEADS, D=HEAD_DIM, dtype="bfloat16", causal=True), rows=[], checks=[],
    )
    if args.check:
        for window in args.windows:
            result["checks"].append(check(min(args.lengths), window))
            print("check", result["checks"][-1], flush=True)
    from jax.experimental.pallas.ops.gpu import attention as pallas_flash

    cudnn = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")
    group = HEADS // KV_HEADS
    flash = lambda q, k, v: pallas_flash.mha(q, jnp.repeat(k, group, 2), jnp.repeat(v, group, 2), None, causal=True,
                                             sm_scale=HEAD_DIM**-0.5)
    for length in args.lengths:
        q, k, v, bias = inputs(length)
        dense_flops = 4 * HEAD_DIM * HEADS * length * (length + 1) / 2
        if not args.no_baselines:
            for name, fn in (("cudnn", cudnn), ("pallas_flash", flash)):
                row = dict(kind=name, T=length, window=None, useful_flops_fwd=dense_flops)
                try:
                    row["fwd_ms"] = median_ms(jax.jit(fn), q, k, v, repeats=args.repeats)
                    if not args.no_backward and name == "cudnn":
                        row["fwd_bwd_ms"] = median_ms(forward_and_backward(fn), q, k, v, repeats=args.repeats)
                except Exception as e:  # record, keep going
                    row["error"] = repr(e)[:300]
                result["rows"].append(row)
                print(json.dumps(row), flush=True)
        if length <= args.reference_max:
            for window in args.windows:
                dense_paths = (("reference", lambda q, k, v, b, w=window: dma_attention_reference(q, k, v, b, w)),
                               ("dma_xla", lambda q, k, v, b, w=window: dma_attention(q, k, v, b, w, implementation="xla")))
                for name, fn in dense_paths:
                    row = dict(kind=name, T=length, window=window, useful_flops_fwd=4 * HEAD_DIM * group * kept_pairs(bias, window))
                    try:
                        row["fwd_ms"] = median_ms(jax.jit(fn), q, k, v, bias, repeats=args.repeats)
                        if not args.no_backward:
                            row["fwd_bwd_ms"] = median_ms(forward_and_backward(fn), q, k, v, bias, repeats=args.repeats)
                    except Exception as e:  # out of memory at large T: record, keep going
                        row["error"] = repr(e)[:300]
                    result["rows"].append(row)
                    print(json.dumps(row), flush=True)
        for window, config_text in [(w, c) for w in args.windows for c in (args.configs or [None])]:
            flops = 4 * HEAD_DIM * group * kept_pairs(bias, window)
            config = PallasConfig() if config_text is None else tile_config(config_text)
            fn = lambda q, k, v, b, w=window, c=config: dma_attention(q, k, v, b, w, implementation=c)
            row = dict(kind="dma_pallas", T=length, window=window, useful_flops_fwd=flops, config=config_text or "default")
            try:
                row["fwd_ms"] = median_ms(jax.jit(fn), q, k, v, bias, repeats=args.repeats)
                if not args.no_backward:
                    row["fwd_bwd_ms"] = median_ms(forward_and_backward(fn), q, k, v, bias, repeats=args.repeats)
                row.update(selection_ms(bias, window, config, args.repeats))
            except Exception as e:
                row["error"] = repr(e)[:300]
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
            save(result, args.out_dir)
    finish(result, args.out_dir)


def save(result, out_dir):
    for row in result["rows"]:
        if "fwd_ms" in row:
            row["tflops_fwd"] = row["useful_flops_fwd"] / row["fwd_ms"] / 1e9
        if "fwd_bwd_ms" in row:
            row["tflops_fwd_bwd"] = 3.5 * row["useful_flops_fwd"] / row["fwd_bwd_ms"] / 1e9
    write_json(result, os.path.join(out_dir, "attention.json"))


def finish(result, out_dir):
    save(result, out_dir)
    plot_results([result], os.path.join(out_dir, "attention.png"))
    print(f"\n{'kind':<13}{'T':>7}{'w':>6}{'fwd ms':>9}{'f+b ms':>9}{'ranges':>8}{'stage':>8}{'TF/s fwd':>9}  config")
    for row in result["rows"]:
        fmt = lambda key, spec: format(row[key], spec) if key in row else "-".rjust(int(spec.split('.')[0]))
        print(f"{row['kind']:<13}{row['T']:>7}{str(row['window'] or '-'):>6}{fmt('fwd_ms', '9.3f')}"
              f"{fmt('fwd_bwd_ms', '9.3f')}{fmt('live_ranges_ms', '8.3f')}{fmt('selection_stage_ms', '8.3f')}"
              f"{fmt('tflops_fwd', '9.1f')}"
              + f"  {row.get('config', '')}" + (f"  ERROR {row['error'][:80]}" if "error" in row else ""))


if __name__ == "__main__":
    main()
