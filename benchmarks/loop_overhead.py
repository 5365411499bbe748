"""Where train.py's time per step goes beyond the train step: the step alone against the step with
each piece of the training loop's host work added, then the loop itself.

    python -m benchmarks.loop_overhead --config configs/passkey.py --out results/benchmarks/loop_overhead.json
    python -m benchmarks.loop_overhead --config configs/smoke.py --steps 5 --out runs/loop_overhead.json   # CPU

One process builds the config's train step once (``--config`` and ``key=value`` overrides, as
train.py takes them) and times ``--steps`` back-to-back steps, one wait at the end, per row:

1. ``step, random tokens``: one batch of random tokens (one document a row) already on the
   device, used every step (how ``--cost`` and ``benchmarks.model_throughput`` time a step);
2. ``step, data tokens``: the same with the tokens of one batch of the config's data, one
   document a row (segment ids all 1);
3. ``step, data segments``: random tokens with that batch's documents (its segment ids);
4. ``step``: that batch of the config's data itself (its tokens and documents);
5. ``+ host batch``: four batches of the config's data, read once, one moved to the device with
   ``global_batch`` each step (train.py's transfer);
6. ``+ data pipeline``: a new batch from the config's grain pipeline (``make_iterator``) each step;
7. ``+ checkpointer``: also the checkpointer's per-step call (it saves only on its interval) and
   the preemption check;
8. ``training loop``: ``dma_jax.training.loop``'s loop itself over the same steps, timed as it
   times itself (its logged step time; no evaluation, and its closing checkpoint not counted).

Each row's milliseconds per step is the total divided by ``--steps``; the column beside it is what
the row adds to the one above. Writes --out (JSON: card, command, rows) and prints a table last.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from benchmarks.common import result_header, write_json
from dma_jax.data import make_iterator
from dma_jax.evaluation.throughput import random_batch
from dma_jax.sharding import global_batch, make_mesh
from dma_jax.training.checkpointing import Checkpointer
from dma_jax.training.config import load_config
from dma_jax.training.loop import StopRequest, _preempted, _run
from dma_jax.training.step import config_train_step, make_eval_step
from dma_jax.training.workdir import MetricsLog

ROWS = ("step, random tokens", "step, data tokens", "step, data segments", "step", "+ host batch", "+ data pipeline",
        "+ checkpointer", "training loop")


def measure(config, steps: int) -> list[dict]:
    """Milliseconds per step of each row of ``ROWS`` (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="loop_overhead_") as workdir:  # the checkpoints and metrics log
        seconds = _seconds(dataclasses.replace(config, eval_every=0), steps, Path(workdir))
    batch, length = config.data.global_batch_size, config.data.seq_len
    out, previous = [], None
    for name in ROWS:
        ms = seconds[name] / steps * 1e3
        out.append({"row": name, "ms_per_step": ms, "added_ms": None if previous is None else ms - previous,
                    "tokens_per_s": batch * length / (ms / 1e3)})
        previous = ms
    return out


def _seconds(config, steps: int, workdir: Path) -> dict[str, float]:
    """Seconds of ``steps`` steps of each row of ``ROWS``."""
    mesh = make_mesh(config.mesh)
    graphdef, state, shardings, train_step = config_train_step(config, mesh)
    data = make_iterator(config.data, "train", jax.process_index(), jax.process_count())
    batch, length = config.data.global_batch_size, config.data.seq_len
    host = [next(data) for _ in range(4)]
    # an interval no timed step reaches: the rows time the checkpointer's call on the steps it skips
    checkpointer = Checkpointer(workdir / "checkpoints", every=2**30, keep=1)
    stop = StopRequest()
    holder = {"state": state}
    with jax.set_mesh(mesh):
        random = random_batch(np.random.default_rng(0), config.model.vocab_size, batch, length)
        tokens, fixed = global_batch(random, mesh), global_batch(host[0], mesh)
        # the data's tokens with one document a row, and random tokens with the data's documents
        ones = {"segment_ids": np.ones_like(host[0]["segment_ids"]), "loss_mask": np.ones_like(host[0]["loss_mask"])}
        data_tokens = global_batch({**host[0], **ones}, mesh)
        data_segments = global_batch({**random, "segment_ids": host[0]["segment_ids"]}, mesh)
        batches = {"step, random tokens": lambda i: tokens, "step, data tokens": lambda i: data_tokens,
                   "step, data segments": lambda i: data_segments, "step": lambda i: fixed,
                   "+ host batch": lambda i: global_batch(host[i % len(host)], mesh),
                   "+ data pipeline": lambda i: global_batch(next(data), mesh)}
        batches["+ checkpointer"] = batches["+ data pipeline"]

        holder["state"], metrics = train_step(holder["state"], fixed)  # compiles
        checkpointer.save(0, holder["state"], data, force=True)  # so that no "first save" happens below
        checkpointer.wait()

        def timed(name):
            get, save = batches[name], name == "+ checkpointer"
            holder["state"], metrics = train_step(holder["state"], get(0))
            jax.block_until_ready(metrics)
            start = time.perf_counter()
            for i in range(1, steps + 1):
                holder["state"], metrics = train_step(holder["state"], get(i))
                if save:  # off its interval, as on almost every step of a run
                    checkpointer.save(i, holder["state"], data, metadata={"step": i})
                    _preempted(stop, checkpointer, i)
            jax.block_until_ready(metrics)
            return time.perf_counter() - start

        seconds = {name: timed(name) for name in ROWS[:-1]}
        # steps + 1 steps, from step steps + 1 on: the loop logs (and waits) at its first step, whose
        # number is a multiple of log_every, then logs the time of the next ``steps`` at its last
        # one, before its closing checkpoint
        loop_config = dataclasses.replace(config, steps=2 * steps + 1, log_every=steps + 1)
        eval_step = make_eval_step(graphdef, mesh, shardings["params"], config.logits_piece,
                                   config.data.loss_positions())
        records = _run(loop_config, holder["state"], data, train_step, eval_step, checkpointer,
                       MetricsLog(workdir / "metrics.jsonl", 0, True), mesh, steps, None, False, stop)
        seconds["training loop"] = [r for r in records if r["event"] == "train"][-1]["step_time_s"] * steps
    checkpointer.close()
    return seconds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/passkey.py")
    p.add_argument("--steps", type=int, default=50, help="timed steps per row")
    p.add_argument("--out", default="results/benchmarks/loop_overhead.json")
    p.add_argument("overrides", nargs="*", help="key=value overrides, as train.py takes them")
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error("--steps must be at least 1")
    config = load_config(args.config, args.overrides)
    rows = measure(config, args.steps)
    result = {**result_header("loop_overhead", "benchmarks.loop_overhead", argv), "config": args.config,
              "overrides": args.overrides, "steps": args.steps, "seq_len": config.data.seq_len,
              "global_batch_size": config.data.global_batch_size, "rows": rows}
    write_json(result, args.out)
    print(f"\n{'row':20s} {'ms/step':>9s} {'added ms':>9s} {'tokens/s':>12s}")
    for row in rows:
        added = "" if row["added_ms"] is None else f"{row['added_ms']:+9.2f}"
        print(f"{row['row']:20s} {row['ms_per_step']:9.2f} {added:>9s} {row['tokens_per_s']:12,.0f}")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
