"""Whether a training step is bitwise reproducible on this device, and if not, which parameters'
gradients vary from one call to the next.

    python -m benchmarks.step_determinism --config configs/passkey.py --out results/benchmarks/step_determinism.json
    XLA_FLAGS=--xla_gpu_deterministic_ops=true python -m benchmarks.step_determinism --config configs/passkey.py \\
        --out results/benchmarks/step_determinism_xla_deterministic.json
    python -m benchmarks.step_determinism --config configs/smoke.py --steps 3 --out runs/step_determinism.json   # CPU

One process builds the config's model (``--config`` and ``key=value`` overrides, as train.py
takes them) and checks:

* ``gradient``: the loss gradient of the initial parameters on one batch, computed ``--repeats``
  times by one jitted function, each call against the first, leaf by leaf, on a batch of random
  tokens and on a batch of the config's data (where frequent tokens make the embedding gradient's
  scatter-add collide);
* ``run``: ``--steps`` train steps (``make_train_step``, the optimizer included) over the same
  data batches, twice from freshly initialised states: each step's loss, and the final parameters
  leaf by leaf.

A leaf that differs is listed with its largest absolute difference and how many of its elements
differ. ``XLA_FLAGS`` is recorded beside the card, so that runs with and without XLA's
deterministic-ops flag compare in two JSONs. Writes --out and prints a table last.
"""

from __future__ import annotations

import argparse
import os

import jax
import numpy as np

from benchmarks.common import result_header, write_json
from dma_jax.data import make_iterator
from dma_jax.evaluation.throughput import random_batch
from dma_jax.sharding import global_batch, make_mesh
from dma_jax.training.config import load_config
from dma_jax.training.optimizer import make_optimizer, wsd_schedule
from dma_jax.training.step import init_state, loss_sums, make_train_step


def leaf_differences(first, other) -> list[dict]:
    """Each leaf of the pytree ``other`` that is not bitwise equal to the same leaf of ``first``:
    {"leaf": its key path, "max_abs_diff", "differing": element count, "size"}."""
    firsts = dict(jax.tree_util.tree_leaves_with_path(first))
    out = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(other):
        a, b = np.asarray(firsts[path]), np.asarray(leaf)
        if a.shape != b.shape:
            raise ValueError(f"{jax.tree_util.keystr(path)}: shapes {a.shape} and {b.shape}")
        if a.dtype != b.dtype:
            raise ValueError(f"{jax.tree_util.keystr(path)}: dtypes {a.dtype} and {b.dtype}")
        bits = f"u{a.dtype.itemsize}"  # compare the bits: NaNs equal themselves, -0.0 differs from 0.0
        count = int(np.count_nonzero(a.view(bits) != b.view(bits)))
        if count:
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
            out.append({"leaf": jax.tree_util.keystr(path), "max_abs_diff": float(np.nanmax(diff)),
                        "differing": count, "size": int(a.size)})
    return out


def measure(config, repeats: int, steps: int) -> dict:
    """The ``gradient`` rows (one per batch kind) and the ``run`` comparison of the docstring."""
    mesh = make_mesh(config.mesh)
    optimizer = make_optimizer(config.optim, config.steps)
    data = make_iterator(config.data, "train", jax.process_index(), jax.process_count())
    host = [next(data) for _ in range(steps)]
    batch, length = config.data.global_batch_size, config.data.seq_len
    with jax.set_mesh(mesh):
        graphdef, state, shardings = init_state(config, optimizer, mesh)
        grad = jax.jit(jax.grad(lambda p, b: loss_sums(p, graphdef, b, config.logits_piece)[0]))
        gradient = []
        for kind, chosen in (("random tokens", random_batch(np.random.default_rng(0), config.model.vocab_size,
                                                              batch, length)), ("data", host[0])):
            device_batch = global_batch(chosen, mesh)
            first = jax.device_get(grad(state["params"], device_batch))
            calls = [leaf_differences(first, jax.device_get(grad(state["params"], device_batch)))
                     for _ in range(repeats - 1)]
            gradient.append({"batch": kind, "calls": repeats, "calls_differing": sum(bool(c) for c in calls),
                             "leaves": _merge(calls)})
        del state
        step = make_train_step(config, graphdef, optimizer, wsd_schedule(config.optim, config.steps), mesh, shardings)
        runs = []
        for _ in range(2):
            _, state, _ = init_state(config, optimizer, mesh)
            losses = []
            for host_batch in host:
                state, metrics = step(state, global_batch(host_batch, mesh))
                losses.append(float(metrics["loss"]))
            runs.append((losses, jax.device_get(state["params"])))
            del state
    (losses_a, params_a), (losses_b, params_b) = runs
    first_differing = next((i + 1 for i, (a, b) in enumerate(zip(losses_a, losses_b)) if a != b), None)
    run = {"steps": steps, "losses": [losses_a, losses_b], "first_step_with_another_loss": first_differing,
           "final_params_differing": leaf_differences(params_a, params_b)}
    return {"gradient": gradient, "run": run}


def _merge(calls: list[list[dict]]) -> list[dict]:
    """Per leaf over the repeated calls: how many differed from the first, the largest difference."""
    merged: dict[str, dict] = {}
    for call in calls:
        for row in call:
            seen = merged.setdefault(row["leaf"], {**row, "calls": 0})
            seen["calls"] += 1
            seen["max_abs_diff"] = max(seen["max_abs_diff"], row["max_abs_diff"])
            seen["differing"] = max(seen["differing"], row["differing"])
    return sorted(merged.values(), key=lambda r: r["leaf"])


def _leaf_list(rows: list[dict]) -> str:
    """The leaves of ``leaf_differences`` rows with their largest difference, or "-" for none."""
    return ", ".join(f"{r['leaf']} ({r['max_abs_diff']:.1e})" for r in rows) or "-"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/passkey.py")
    p.add_argument("--repeats", type=int, default=5, help="gradient calls per batch, each against the first")
    p.add_argument("--steps", type=int, default=20, help="train steps of each of the two runs")
    p.add_argument("--out", default="results/benchmarks/step_determinism.json")
    p.add_argument("overrides", nargs="*", help="key=value overrides, as train.py takes them")
    args = p.parse_args(argv)
    if args.repeats < 2 or args.steps < 1:
        p.error("--repeats must be at least 2 and --steps at least 1")
    config = load_config(args.config, args.overrides)
    found = measure(config, args.repeats, args.steps)
    result = {**result_header("step_determinism", "benchmarks.step_determinism", argv),
              "xla_flags": os.environ.get("XLA_FLAGS", ""), "config": args.config, "overrides": args.overrides,
              "seq_len": config.data.seq_len, "global_batch_size": config.data.global_batch_size, **found}
    write_json(result, args.out)
    print(f"\nXLA_FLAGS={result['xla_flags']!r}")
    print(f"{'check':28s} {'differing':>10s}  leaves that differ (largest |difference|)")
    for row in found["gradient"]:
        print(f"{'gradient, ' + row['batch']:28s} {row['calls_differing']:>4d} of {row['calls'] - 1:<3d}  "
              f"{_leaf_list(row['leaves'])}")
    run = found["run"]
    first = run["first_step_with_another_loss"]
    print(f"{'run of ' + str(run['steps']) + ' steps, twice':28s} {'step ' + str(first) if first else 'none':>10s}  "
          f"{_leaf_list(run['final_params_differing'])}")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
