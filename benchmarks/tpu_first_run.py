"""First run of the Pallas TPU path on a real TPU: does it compile, is it right, how fast is it.

    python -m benchmarks.tpu_first_run --out-dir results/benchmarks [--lengths 4096 16384] [--window 1024]
    python -m benchmarks.tpu_first_run --interpret --out-dir runs/tpu_check   # anywhere, tiny

Without a TPU it refuses (exit code 2) unless --interpret, which runs only the checks, on tiny
sizes, in TPU interpret mode. Steps, each recorded in tpu_first_run.json as it finishes
(device kind, versions, command; a failing step records its error and the run goes on):

1. checks (``--check-length``, default 1024): ``dma_attention(implementation="pallas_tpu")`` in
   bf16 against the dense reference in float32 (highest matmul precision), forward and all four
   gradients, each error <= 2 x the error of the reference run in bf16 (+ 1e-3 x max |ref|), for
   GQA with Hb = Hkv, Hb = H, packed segments with a key mask, Tq < Tk, and no window; then the
   gradients of two runs compared bitwise (the backward has no atomics);
2. timing at each --lengths (B = 1, H = 32, Hkv = 8, D = 128, bf16, causal, random bias): DMA
   forward and forward+backward through the public call (selection included), against JAX's
   splash attention (causal, GQA through its MQA kernel per kv head) and XLA's
   ``jax.nn.dot_product_attention``; medians after warm-up.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import traceback

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import (
    HEAD_DIM, HEADS, KV_HEADS, forward_and_backward, inputs, kept_pairs, median_ms, result_header, write_json,
)
from dma_jax import PallasTpuConfig, dma_attention, dma_attention_reference

NAMES = ("out", "dq", "dk", "dv", "dbias")


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    q_len: int
    kv_len: int
    bias_heads: int
    window: int | None = 64  # (8 in interpret mode)
    segments: bool = False
    key_mask: bool = False


def checks(length, heads, kv_heads):
    short = max(32, length // 4)
    return [
        Check("gqa_hb_hkv", length, length, kv_heads),
        Check("hb_h", length, length, heads),
        Check("segments_keymask", length, length, kv_heads, segments=True, key_mask=True),
        Check("tq_lt_tk", length // 2, length, kv_heads),
        Check("window_none", short, short, kv_heads, window=None),
    ]


def problem(check, heads, kv_heads, head_dim, seed=3):
    rng = np.random.default_rng(seed)
    normal = lambda *shape: jnp.asarray(rng.standard_normal(shape), jnp.bfloat16)
    q, k, v = normal(1, check.q_len, heads, head_dim), normal(1, check.kv_len, kv_heads, head_dim), normal(1, check.kv_len, kv_heads, head_dim)
    bias = jnp.asarray(2 * rng.standard_normal((1, check.bias_heads, check.kv_len)), jnp.float32)
    kwargs = {}
    if check.segments:
        cuts = np.sort(rng.choice(np.arange(1, check.kv_len), 3, replace=False))
        kwargs["segment_ids"] = jnp.asarray(np.searchsorted(cuts, np.arange(check.kv_len), side="right")[None], jnp.int32)
    if check.key_mask:
        kwargs["key_mask"] = jnp.asarray(rng.random((1, check.kv_len)) > 0.2)
    return (q, k, v, bias), normal(*q.shape), kwargs


def run_check(check, attention_fn, heads, kv_heads, head_dim):
    args, cotangent, kwargs = problem(check, heads, kv_heads, head_dim)

    def value_and_grads(fn, *a):
        out, vjp = jax.vjp(fn, *a)
        return (out,) + vjp(cotangent.astype(out.dtype))

    kernel = jax.jit(lambda *a: value_and_grads(lambda *b: attention_fn(*b, check.window, **kwargs), *a))
    reference = jax.jit(lambda *a: value_and_grads(lambda *b: dma_attention_reference(*b, check.window, **kwargs), *a))
    f32 = lambda x: x.astype(jnp.float32)
    with jax.default_matmul_precision("highest"):
        expected = reference(*(f32(x) for x in args))
    low, got, again = reference(*args), kernel(*args), kernel(*args)
    result = dict(check=check.name, q_len=check.q_len, kv_len=check.kv_len, bias_heads=check.bias_heads, window=check.window)
    for name, e, r, g in zip(NAMES, expected, low, got):
        err, ref_err = float(jnp.abs(f32(g) - e).max()), float(jnp.abs(f32(r) - e).max())
        bound = 2 * ref_err + 1e-3 * float(jnp.abs(e).max())
        result[name] = dict(max_err=err, bf16_reference_max_err=ref_err, ok=bool(np.isfinite(err) and err <= bound))
    result["deterministic"] = all(bool(jnp.array_equal(a, b)) for a, b in zip(got[1:], again[1:]))
    result["ok"] = result["deterministic"] and all(result[name]["ok"] for name in NAMES)
    return result


def splash_gqa(length):
    """Causal splash attention for (1, T, H, D) q and (1, T, Hkv, D) k, v: its MQA kernel per kv head."""
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    group = HEADS // KV_HEADS
    mask = splash.MultiHeadMask([splash.CausalMask((length, length))] * group)
    blocks = splash.BlockSizes(512, 512, 512, 512, 512, 512, 512, 512)
    kernel = splash.make_splash_mqa_single_device(mask, block_sizes=blocks)

    def attend(q, k, v):
        qh = jnp.transpose(q[0].reshape(length, KV_HEADS, group, HEAD_DIM), (1, 2, 0, 3)) * HEAD_DIM**-0.5
        kh, vh = jnp.transpose(k[0], (1, 0, 2)), jnp.transpose(v[0], (1, 0, 2))
        out = jax.vmap(kernel)(qh, kh, vh)  # (Hkv, group, T, D)
        return jnp.transpose(out, (2, 0, 1, 3)).reshape(1, length, HEADS, HEAD_DIM)

    return attend


def time_length(length, window, repeats):
    q, k, v, bias = inputs(length)
    row = dict(T=length, window=window, kept_pairs=kept_pairs(bias, window))
    candidates = {
        "dma_pallas_tpu": lambda q, k, v: dma_attention(q, k, v, bias, window, implementation="pallas_tpu"),
        "splash_causal": splash_gqa(length),
        "xla_dense_causal": lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True),
    }
    for name, fn in candidates.items():
        for kind, timed in (("fwd_ms", jax.jit(fn)), ("fwd_bwd_ms", forward_and_backward(fn))):
            try:
                row[f"{name}_{kind}"] = median_ms(timed, q, k, v, repeats=repeats)
            except Exception as error:  # record and go on: a first run wants every number it can get
                row[f"{name}_{kind}_error"] = f"{type(error).__name__}: {error}"[:2000]
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default=".")
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--check-length", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--interpret", action="store_true", help="off a TPU: tiny checks in TPU interpret mode only")
    args = parser.parse_args(argv)
    on_tpu = jax.default_backend() == "tpu"
    if not on_tpu and not args.interpret:
        print(f"No TPU here (backend {jax.default_backend()!r}): this script checks and times the TPU kernels.\n"
              "Run it on a TPU host, or pass --interpret for a tiny check in TPU interpret mode.", file=sys.stderr)
        sys.exit(2)
    result = dict(**result_header("tpu_first_run", "benchmarks.tpu_first_run", argv), backend=jax.default_backend(),
                  interpret=not on_tpu, checks=[], rows=[])
    if on_tpu:
        attention_fn = functools.partial(dma_attention, implementation="pallas_tpu")
        shapes, check_length = (HEADS, KV_HEADS, HEAD_DIM), args.check_length
    else:
        config = PallasTpuConfig().interpreted(poison_outputs=True)
        attention_fn = functools.partial(dma_attention, implementation=config)
        shapes, check_length = (4, 2, 64), 48
    for check in checks(check_length, *shapes[:2]):
        check = check if on_tpu or check.window is None else dataclasses.replace(check, window=8)
        try:
            result["checks"].append(run_check(check, attention_fn, *shapes))
        except Exception:
            result["checks"].append(dict(check=check.name, ok=False, error=traceback.format_exc()[-4000:]))
        print(json.dumps(result["checks"][-1]), flush=True)
        save(result, args.out_dir)
    for length in args.lengths if on_tpu else []:
        result["rows"].append(time_length(length, args.window, args.repeats))
        print(json.dumps(result["rows"][-1]), flush=True)
        save(result, args.out_dir)
    ok = all(c["ok"] for c in result["checks"])
    print(f"checks {'passed' if ok else 'FAILED'}; results in {os.path.join(args.out_dir, 'tpu_first_run.json')}")
    sys.exit(0 if ok else 1)


def save(result, out_dir):
    write_json(result, os.path.join(out_dir, "tpu_first_run.json"))


if __name__ == "__main__":
    main()
