"""The training loop: resume, step, log (progress bar and JSONL), evaluate, checkpoint.

``train(config, workdir)`` trains ``config.steps`` steps in ``workdir``: it resumes from the last
checkpoint there if there is one (parameters, optimizer state, step, RNG and the data iterator),
so a run that is stopped and started again continues exactly. Files in ``workdir``:
``config.json``, ``metrics.jsonl`` (one JSON object per log or eval event) and ``checkpoints/``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import jax
from tqdm.auto import tqdm

from dma_jax.training.checkpointing import Checkpointer
from dma_jax.data import make_iterator
from dma_jax.sharding import global_batch, make_mesh
from dma_jax.training.config import TrainConfig, config_dict
from dma_jax.training.flops import count_matmul_params, count_params, peak_flops, training_flops_per_token
from dma_jax.training.optimizer import make_optimizer, wsd_schedule
from dma_jax.training.step import abstract_state, init_state, make_eval_step, make_train_step, state_shapes


class MetricsLog:
    """Append-only JSONL; on resume, events after the restored step are dropped (they will be
    logged again by the resumed run)."""

    def __init__(self, path: Path, resume_step: int, write: bool):
        self.path, self.write = path, write
        if write and path.exists():
            kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= resume_step]
            path.write_text("".join(line + "\n" for line in kept))

    def __call__(self, record: dict):
        if self.write:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


def peak_memory_gib() -> float | None:
    """Peak bytes in use on this process's first device, in GiB (None where JAX does not say)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2**30


def evaluate(eval_step, params, config: TrainConfig, mesh, max_batches: int) -> dict:
    """Mean loss, perplexity and accuracy over up to ``max_batches`` validation batches."""
    iterator = make_iterator(config.data, "validation", jax.process_index(), jax.process_count())
    totals = {"nll": 0.0, "tokens": 0.0, "correct": 0.0}
    batches = 0
    for batch in iterator:
        sums = eval_step(params, global_batch(batch, mesh))
        for key in totals:
            totals[key] += float(sums[key])
        batches += 1
        if batches >= max_batches:
            break
    tokens = max(totals["tokens"], 1.0)
    loss = totals["nll"] / tokens
    return {"eval_loss": loss, "eval_perplexity": math.exp(min(loss, 50.0)), "eval_accuracy": totals["correct"] / tokens,
            "eval_tokens": totals["tokens"], "eval_batches": batches}


def train(config: TrainConfig, workdir: str | Path, *, stop_after: int | None = None, progress: bool = True) -> list[dict]:
    """Train (or resume) in ``workdir``; returns the metric records of this invocation.

    ``stop_after``: leave after this many steps of this invocation (as if preempted), having saved
    a checkpoint; the schedule still follows ``config.steps``.
    """
    config.validate()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    lead = jax.process_index() == 0
    mesh = make_mesh(config.mesh)
    optimizer = make_optimizer(config.optim, config.steps)
    schedule = wsd_schedule(config.optim, config.steps)
    data = make_iterator(config.data, "train", jax.process_index(), jax.process_count())
    checkpointer = Checkpointer(workdir / "checkpoints", every=config.checkpoint_every, keep=config.keep_checkpoints,
                                async_save=config.async_checkpoints)
    start = checkpointer.latest_step() or 0
    if start:  # restore straight into the shardings; no initialisation to throw away
        graphdef, shapes, shardings = state_shapes(config, optimizer, mesh)
        state = checkpointer.restore(start, abstract_state(shapes, shardings), data)
    else:
        graphdef, state, shardings = init_state(config, optimizer, mesh)
    if lead:
        (workdir / "config.json").write_text(json.dumps(config_dict(config), indent=2, default=str))
    log = MetricsLog(workdir / "metrics.jsonl", start, lead)

    with jax.set_mesh(mesh):
        train_step = make_train_step(config, graphdef, optimizer, schedule, mesh, shardings)
        eval_step = make_eval_step(graphdef, mesh, shardings["params"])
        records = _run(config, state, data, train_step, eval_step, checkpointer, log, mesh, start, stop_after, progress and lead)
    checkpointer.close()
    return records


def _run(config, state, data, train_step, eval_step, checkpointer, log, mesh, start, stop_after, progress):
    seq_len = config.data.seq_len
    flops_per_token = training_flops_per_token(config.model, count_matmul_params(state["params"]), seq_len)
    peak = peak_flops(jax.devices()[0].device_kind)
    peak = peak * jax.device_count() if peak else None
    end = config.steps if stop_after is None else min(config.steps, start + stop_after)
    records = []
    if start == 0:
        header = {"step": 0, "event": "start", "params": count_params(state["params"]), "flops_per_token": flops_per_token,
                  "devices": jax.device_count(), "device_kind": jax.devices()[0].device_kind}
        log(header)
        records.append(header)
    bar = tqdm(total=config.steps, initial=start, disable=not progress, dynamic_ncols=True, unit="step")
    window_start, window_tokens, window_steps = time.perf_counter(), 0, 0
    for step in range(start + 1, end + 1):
        batch = global_batch(next(data), mesh)
        state, metrics = train_step(state, batch)
        window_tokens += config.data.global_batch_size * seq_len
        window_steps += 1
        bar.update(1)
        last = step == end
        if step == start + 1 and step % config.log_every and not last:  # keep compilation out of the throughput
            jax.block_until_ready(metrics)
            window_start, window_tokens, window_steps = time.perf_counter(), 0, 0
        if step % config.log_every == 0 or last:
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            elapsed = time.perf_counter() - window_start
            tokens_per_s = window_tokens / elapsed
            record = {"step": step, "event": "train", **metrics, "tokens_per_s": tokens_per_s,
                      "step_time_s": elapsed / window_steps, "mfu": flops_per_token * tokens_per_s / peak if peak else None}
            record["peak_memory_gib"] = peak_memory_gib()
            log(record)
            records.append(record)
            mfu = f"{record['mfu']:.1%}" if record["mfu"] is not None else "n/a"
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", tok_s=f"{tokens_per_s:,.0f}", mfu=mfu)
            window_start, window_tokens, window_steps = time.perf_counter(), 0, 0
        if config.eval_every and (step % config.eval_every == 0 or step == config.steps):
            record = {"step": step, "event": "eval", **evaluate(eval_step, state["params"], config, mesh, config.eval_batches)}
            log(record)
            records.append(record)
            bar.write(f"step {step}: eval loss {record['eval_loss']:.4f}, accuracy {record['eval_accuracy']:.3f}")
            window_start, window_tokens, window_steps = time.perf_counter(), 0, 0
        metadata = {"step": step, "tokens_seen": step * config.data.global_batch_size * seq_len}
        if config.checkpoint_every >= 0:
            checkpointer.save(step, state, data, metadata=metadata, force=last)
    bar.close()
    checkpointer.wait()
    return records
