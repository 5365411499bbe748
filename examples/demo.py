"""A tour of the op on built-in defaults: picture, correctness check, timing.

    python examples/demo.py [--out DIR] [--seq-len T] [--window W] [...]

(a) draws the kept-key picture of a random bias (``plotting.plot_selection``) into DIR;
(b) checks ``dma_attention`` (default implementation) against ``dma_attention_reference`` on
    a random GQA problem, forward and gradients of q, k, v and bias, and prints a table of
    max abs errors (exit status 1 if any check fails);
(c) prints the JAX backend and devices (a GPU is used automatically when JAX sees one);
(d) times ``live_ranges`` at a long sequence after warm-up.

Defaults are ``DemoConfig`` below; every field has a flag. About 30 s on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

_HELP = {
    "out": "folder for the picture (created if missing)",
    "seed": "seed of every random input",
    "picture_seq_len": "T of the picture",
    "picture_window": "w of the picture",
    "batch": "B of the correctness check",
    "seq_len": "T of the correctness check",
    "heads": "query heads H of the correctness check",
    "kv_heads": "key/value heads Hkv of the check (H must be a multiple); the bias has Hkv heads",
    "head_dim": "head size D of the correctness check",
    "window": "w (keys kept per query) of the correctness check",
    "tolerance": "a check passes iff max|err| <= tolerance * max(1, max|reference|)",
    "timing_batch": "B of the live_ranges timing",
    "timing_bias_heads": "bias heads Hb of the live_ranges timing",
    "timing_seq_len": "T of the live_ranges timing",
    "timing_window": "w of the live_ranges timing",
    "timing_repeats": "timed calls after one warm-up call (the median is printed)",
}


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Sizes and tolerances of the demo; every field has a command-line flag of the same name."""

    out: str = "runs/demo"  # folder for the picture
    seed: int = 0  # root of every random key and the picture's bias

    # (a) picture of one (batch, head) row of the selection
    picture_seq_len: int = 48
    picture_window: int = 8

    # (b) dma_attention vs dma_attention_reference, forward and gradients (GQA: H = 2 Hkv)
    batch: int = 2
    seq_len: int = 256
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 64
    window: int = 32
    tolerance: float = 1e-4  # pass iff max |err| <= tolerance * max(1, max |reference|)

    # (d) timing of live_ranges alone
    timing_batch: int = 1
    timing_bias_heads: int = 8
    timing_seq_len: int = 32768
    timing_window: int = 1024
    timing_repeats: int = 5


def parse_args(argv=None):
    """Parse flags into a ``DemoConfig``."""
    defaults = DemoConfig()
    parser = argparse.ArgumentParser(
        prog="python examples/demo.py",
        description="Dynamic mask attention demo: picture, correctness check against the reference, timing.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for field in dataclasses.fields(defaults):
        flag = "--" + field.name.replace("_", "-")
        kind = type(getattr(defaults, field.name))
        metavar = {"out": "DIR", "seq_len": "T", "window": "W"}.get(field.name)
        parser.add_argument(
            flag, dest=field.name, type=kind, default=getattr(defaults, field.name),
            metavar=metavar, help=_HELP.get(field.name, field.name),
        )
    args = parser.parse_args(argv)
    return dataclasses.replace(defaults, **vars(args))


def describe_devices() -> str:
    devices = jax.devices()
    kinds = sorted({d.device_kind for d in devices})
    return f"JAX {jax.__version__}, backend {jax.default_backend()}, {len(devices)} device(s): {', '.join(kinds)}"


def random_bias(key, shape, step: float = 0.25) -> jax.Array:
    """Normal bias rounded to multiples of ``step``, so that many keys tie."""
    return jnp.round(jax.random.normal(key, shape) / step) * step


def draw_picture(config) -> str:
    from dma_jax.plotting import plot_selection

    rng = np.random.default_rng(config.seed)
    bias = np.round(rng.normal(size=config.picture_seq_len) * 2.0) / 2.0
    path = os.path.join(config.out, "selection.png")
    return plot_selection(bias.astype(np.float32), config.picture_window, path=path)


def check_against_reference(config) -> list[tuple[str, float, float, float, bool]]:
    """Rows (name, max|err|, max|reference|, allowed, passed) for out, dq, dk, dv, dbias."""
    from dma_jax import dma_attention, dma_attention_reference

    c = config
    keys = jax.random.split(jax.random.key(c.seed), 5)
    q = jax.random.normal(keys[0], (c.batch, c.seq_len, c.heads, c.head_dim), jnp.float32)
    k = jax.random.normal(keys[1], (c.batch, c.seq_len, c.kv_heads, c.head_dim), jnp.float32)
    v = jax.random.normal(keys[2], (c.batch, c.seq_len, c.kv_heads, c.head_dim), jnp.float32)
    bias = random_bias(keys[3], (c.batch, c.kv_heads, c.seq_len))
    cotangent = jax.random.normal(keys[4], q.shape, jnp.float32)

    def run(attention):
        def loss(q, k, v, bias):
            out = attention(q, k, v, bias, c.window)
            return jnp.vdot(out, cotangent), out

        (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True)(q, k, v, bias)
        return (out, *grads)

    # Full float32 matmuls: GPUs would otherwise use TF32 and blur the comparison.
    with jax.default_matmul_precision("highest"):
        got = run(dma_attention)
        want = run(dma_attention_reference)
    rows = []
    for name, a, b in zip(("out", "dq", "dk", "dv", "dbias"), got, want):
        err = float(jnp.max(jnp.abs(a - b)))
        scale = float(jnp.max(jnp.abs(b)))
        allowed = c.tolerance * max(1.0, scale)
        rows.append((name, err, scale, allowed, bool(err <= allowed)))  # NaN err fails
    return rows


def time_live_ranges(config) -> tuple[float, float]:
    """Median seconds of one ``live_ranges`` call after warm-up, and mean keys ever kept per row."""
    from dma_jax import live_ranges
    from dma_jax.timing import median_seconds

    c = config
    shape = (c.timing_batch, c.timing_bias_heads, c.timing_seq_len)
    bias = jax.random.normal(jax.random.key(c.seed + 1), shape, jnp.float32)
    ends = live_ranges(bias, c.timing_window).block_until_ready()  # warm-up: compile
    seconds = median_seconds(live_ranges, bias, c.timing_window, repeats=max(1, c.timing_repeats), warmup=0)
    ever_kept = float(jnp.mean(jnp.sum(ends > jnp.arange(c.timing_seq_len), axis=-1)))
    return seconds, ever_kept


def main(argv=None) -> int:
    """Run the demo; returns the exit status (0: every check passed)."""
    config = parse_args(argv)
    started = time.perf_counter()
    print(f"[devices] {describe_devices()}")

    path = draw_picture(config)
    print(f"[picture] T={config.picture_seq_len}, w={config.picture_window}: wrote {path}")

    c = config
    print(
        f"[check] dma_attention (default implementation) vs dma_attention_reference, float32: "
        f"B={c.batch}, T={c.seq_len}, H={c.heads}, Hkv={c.kv_heads}, Hb={c.kv_heads}, D={c.head_dim}, w={c.window}"
    )
    rows = check_against_reference(config)
    print(f"  {'quantity':8s} {'max|err|':>10s} {'max|ref|':>10s} {'allowed':>10s}  result")
    for name, err, scale, allowed, passed in rows:
        print(f"  {name:8s} {err:10.3e} {scale:10.3e} {allowed:10.3e}  {'pass' if passed else 'FAIL'}")
    passed = all(row[-1] for row in rows)

    seconds, ever_kept = time_live_ranges(config)
    w, t = c.timing_window, c.timing_seq_len
    estimate = w * (1 + math.log(t / w)) if t > w else t
    print(
        f"[timing] live_ranges B={c.timing_batch}, Hb={c.timing_bias_heads}, T={t}, w={w}: "
        f"median {seconds * 1e3:.2f} ms over {max(1, c.timing_repeats)} calls after warm-up "
        f"({jax.default_backend()}); keys ever kept per row: {ever_kept:.0f} of {t} "
        f"(w(1 + ln(T/w)) = {estimate:.0f})"
    )
    print(f"[done] {'all checks passed' if passed else 'SOME CHECKS FAILED'} in {time.perf_counter() - started:.1f} s")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
