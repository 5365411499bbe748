"""Time the sort that ranks each row's keys for the selection (``ranges.rank_order``), in two forms
that give the same order, and record them as JSON.

    python -m benchmarks.rank_sort --lengths 4096 32768 --rows 8 --out results/benchmarks/rank_sort.json

``three_keys``: ``lax.sort`` by (invalid, -bias, -index) with the index as payload.
``one_key``: one float key, -bias where valid and +inf where not, sorted stably on the reversed
row, so that ties keep descending index order. A valid key's -bias is never +inf (a bias of -inf
makes a key invalid) and never NaN, so both forms give the same order; the script checks that.

Random normal bias with ties (rounded to 1/8) and about one key in eight invalid, ``--rows`` rows
(B x Hb) of each length. Each time is the median of single waited-for calls beside the amortised
time of ``--calls`` back-to-back calls.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from benchmarks.common import median_ms, result_header, write_json
from dma_jax.timing import amortised_seconds


def _score(bias, valid):
    return jnp.where(valid & (bias != 0), bias, jnp.zeros_like(bias))  # -0.0 and 0.0 tie


def three_keys(bias, valid):
    """int32 (rows, T): each row's key indices by (valid first, bias descending, index descending)."""
    index = jnp.arange(bias.shape[-1], dtype=jnp.int32)

    def row(score, valid):
        return lax.sort(((~valid).astype(jnp.int32), -score, -index, index), num_keys=3)[-1]

    return jax.vmap(row)(_score(bias, valid), valid)


def one_key(bias, valid):
    """The same order as ``three_keys`` from one float key and a stable sort of the reversed row."""
    index = jnp.arange(bias.shape[-1], dtype=jnp.int32)[::-1]
    key = jnp.where(valid, -_score(bias, valid), jnp.inf)[:, ::-1]
    return jax.vmap(lambda key: lax.sort((key, index), num_keys=1, is_stable=True)[-1])(key)


FORMS = {"three_keys": three_keys, "one_key": one_key}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 32768])
    parser.add_argument("--rows", type=int, default=8, help="rows sorted at once (B x Hb)")
    parser.add_argument("--repeats", type=int, default=20, help="single waited-for calls (median)")
    parser.add_argument("--calls", type=int, default=200, help="back-to-back calls for the amortised time")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    rows = []
    for length in args.lengths:
        keys = jax.random.split(jax.random.key(length), 2)
        bias = jnp.round(jax.random.normal(keys[0], (args.rows, length)) * 8) / 8
        valid = jax.random.uniform(keys[1], (args.rows, length)) > 0.125
        orders = {}
        for name, form in FORMS.items():
            fn = jax.jit(form)
            orders[name] = np.asarray(fn(bias, valid))
            rows.append(dict(T=length, rows=args.rows, form=name, single_ms=median_ms(fn, bias, valid, repeats=args.repeats),
                             amortised_ms=amortised_seconds(fn, bias, valid, calls=args.calls) * 1e3))
            print(f"T={length:>6} {name:>10}: single {rows[-1]['single_ms']:.3f} ms, "
                  f"amortised {rows[-1]['amortised_ms']:.3f} ms", flush=True)
        if not all(np.array_equal(orders["three_keys"], order) for order in orders.values()):
            raise SystemExit(f"T={length}: the forms give different orders")
    result = dict(**result_header("rank_sort", "benchmarks.rank_sort", argv), settings=vars(args), rows=rows)
    if args.out:
        write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
