"""What the token embedding's gradient costs on random tokens against the tokens of real text.

    python -m benchmarks.embedding_grad --config configs/window_sweep.py --out results/benchmarks/embedding_grad.json

The gradient of an embedding lookup adds every position's output gradient into its token's row: a
scatter-add whose writes collide wherever a token repeats, and real text repeats a few tokens
thousands of times in a batch where random tokens rarely repeat. For the config's vocabulary,
d_model and batch, this times the lookup's forward and its gradient with respect to the float32
table (``jax.grad`` of ``sum(lookup(table, tokens) * g)``, g random, one jitted call) for:

* ``bf16 gather``: the table cast to the compute dtype, then gathered, as ``flax.nnx.Embed`` does
  (so its gradient is a scatter-add in bfloat16);
* ``f32 gather``: gathered from the float32 table, then cast (a float32 scatter-add);
* ``one-hot matmul``: ``one_hot(tokens) @ table`` in the compute dtype (a matmul, no scatter).

on uniformly random tokens and on a batch of the config's data. Each row also gives its gradient's
largest error against the same gradient computed entirely in float32, relative to that gradient's
largest entry. Milliseconds per call of many
back-to-back calls with one wait (as a training loop runs them) beside one waited-for call.
Writes --out (JSON: card, command, rows) and prints a table last.
"""

from __future__ import annotations

import argparse
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import result_header, write_json
from dma_jax.data import make_iterator
from dma_jax.evaluation.throughput import random_batch
from dma_jax.timing import amortised_seconds, median_seconds
from dma_jax.training.config import load_config

LOOKUPS = {
    "bf16 gather": lambda table, tokens, dtype: jnp.take(table.astype(dtype), tokens, axis=0),
    "f32 gather": lambda table, tokens, dtype: jnp.take(table, tokens, axis=0).astype(dtype),
    "one-hot matmul": lambda table, tokens, dtype: jax.nn.one_hot(tokens, table.shape[0], dtype=dtype) @ table.astype(dtype),
}


def gradient_fn(lookup, dtype):
    """jit of tokens, table, g -> d sum(lookup(table, tokens) * g) / d table."""
    def loss(table, tokens, g):
        return jnp.sum(lookup(table, tokens, dtype).astype(jnp.float32) * g)

    return jax.jit(jax.grad(loss))


def repeats_of_commonest(tokens: np.ndarray) -> int:
    """How often the commonest token occurs in the batch (the longest chain of colliding writes)."""
    return int(np.bincount(tokens.ravel()).max())


def measure(config, calls: int, repeats: int) -> list[dict]:
    vocab, width = config.model.vocab_size, config.model.d_model
    batch, length = config.data.global_batch_size, config.data.seq_len
    dtype = jnp.dtype(config.model.dtype)
    data = make_iterator(config.data, "train")
    token_sets = {"random": random_batch(np.random.default_rng(0), vocab, batch, length)["inputs"],
                  "data": np.asarray(next(data)["inputs"])}
    table = jax.random.normal(jax.random.key(0), (vocab, width), jnp.float32) * 0.02
    g = jax.random.normal(jax.random.key(1), (batch, length, width), jnp.float32)
    float32_gradient = gradient_fn(LOOKUPS["f32 gather"], jnp.float32)
    exact = {kind: float32_gradient(table, jnp.asarray(tokens), g) for kind, tokens in token_sets.items()}
    rows = []
    for (name, lookup), (kind, tokens) in itertools.product(LOOKUPS.items(), token_sets.items()):
        fn, device_tokens, want = gradient_fn(lookup, dtype), jnp.asarray(tokens), exact[kind]
        error = float(jnp.max(jnp.abs(fn(table, device_tokens, g) - want)) / jnp.max(jnp.abs(want)))
        rows.append({"lookup": name, "tokens": kind, "commonest_token_repeats": repeats_of_commonest(tokens),
                     "relative_error": error,
                     "ms_amortised": amortised_seconds(fn, table, device_tokens, g, calls=calls) * 1e3,
                     "ms_single_call": median_seconds(fn, table, device_tokens, g, repeats=repeats) * 1e3})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/window_sweep.py")
    p.add_argument("--calls", type=int, default=50, help="back-to-back calls of the amortised figure")
    p.add_argument("--repeats", type=int, default=10, help="waited-for calls of the single-call median")
    p.add_argument("--out", default="results/benchmarks/embedding_grad.json")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the config")
    args = p.parse_args(argv)
    config = load_config(args.config, args.overrides)
    rows = measure(config, args.calls, args.repeats)
    result = {**result_header("embedding_grad", "benchmarks.embedding_grad", argv), "config": args.config,
              "overrides": args.overrides, "vocab_size": config.model.vocab_size, "d_model": config.model.d_model,
              "batch": config.data.global_batch_size, "seq_len": config.data.seq_len, "dtype": config.model.dtype,
              "rows": rows}
    write_json(result, args.out)
    print(f"\n{'lookup':16s} {'tokens':8s} {'commonest':>9s} {'rel. error':>10s} {'ms amortised':>13s} {'ms one call':>12s}")
    for row in rows:
        print(f"{row['lookup']:16s} {row['tokens']:8s} {row['commonest_token_repeats']:9d} {row['relative_error']:10.1e} "
              f"{row['ms_amortised']:13.3f} {row['ms_single_call']:12.3f}")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
