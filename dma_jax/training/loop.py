"""The training loop: resume, step, log (progress bar and JSONL), evaluate, checkpoint.

``train(config, workdir)`` trains ``config.steps`` steps in ``workdir``: it resumes from the newest
checkpoint there that restores cleanly (parameters, optimizer state, step, RNG and the data
iterator), so a run that is stopped and started again continues exactly. Files in ``workdir``
(local or ``gs://...``): ``config.json``, ``metrics.jsonl`` (one JSON object per log or eval
event), ``checkpoints/`` and, while a trainer runs, ``train.lock`` (``workdir.py``).

A SIGTERM (a scheduler's preemption notice), or in multi-process runs JAX's preemption sync,
ends the run after the current step with a checkpoint at that step; running again resumes there.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time

import jax
from etils import epath
from tqdm.auto import tqdm

from dma_jax.data import make_iterator
from dma_jax.sharding import global_batch, make_mesh
from dma_jax.training.checkpointing import Checkpointer, as_directory
from dma_jax.training.config import TrainConfig, config_dict
from dma_jax.training.flops import count_matmul_params, count_params, peak_flops, training_flops_per_token
from dma_jax.training.optimizer import make_optimizer, wsd_schedule
from dma_jax.training.step import abstract_state, init_state, make_eval_step, make_train_step, state_shapes
from dma_jax.training.workdir import MetricsLog, WorkdirLock


class StopRequest:
    """Whether the process was asked to stop (SIGTERM) since ``install``; the previous handler is
    put back by ``uninstall``. Only the main thread can take signals: elsewhere it never fires."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous = None

    def install(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signal_name = signal.Signals(signum).name

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


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


def train(config: TrainConfig, workdir, *, stop_after: int | None = None, progress: bool = True) -> list[dict]:
    """Train (or resume) in ``workdir``; returns the metric records of this invocation.

    ``stop_after``: leave after this many steps of this invocation (as if preempted), having saved
    a checkpoint; the schedule still follows ``config.steps``. Raises ``WorkdirBusy`` when another
    trainer holds the workdir.
    """
    config.validate()
    workdir = as_directory(workdir)
    lead = jax.process_index() == 0
    lock = WorkdirLock(workdir)
    if lead:  # before anything is written
        lock.acquire()
    try:
        return _train(config, workdir, stop_after, progress, lead)
    finally:
        if lead:
            lock.release()


def _train(config: TrainConfig, workdir: epath.Path, stop_after, progress, lead) -> list[dict]:
    mesh = make_mesh(config.mesh)
    optimizer = make_optimizer(config.optim, config.steps)
    schedule = wsd_schedule(config.optim, config.steps)
    data = make_iterator(config.data, "train", jax.process_index(), jax.process_count())
    checkpointer = Checkpointer(workdir / "checkpoints", every=config.checkpoint_every, keep=config.keep_checkpoints,
                                async_save=config.async_checkpoints)
    graphdef, shapes, shardings = state_shapes(config, optimizer, mesh)
    what = f"the config's model ({config.model.attention})"
    start, state = checkpointer.restore_newest(abstract_state(shapes, shardings), data, what)
    if start:
        print(f"resumed from step {start}" + (f"; already at step {start}, nothing to do" if start >= config.steps else ""),
              flush=True)
    else:
        graphdef, state, shardings = init_state(config, optimizer, mesh)
    if lead:
        (workdir / "config.json").write_text(json.dumps(config_dict(config), indent=2, default=str))
    log = MetricsLog(workdir / "metrics.jsonl", start, lead)

    stop = StopRequest().install()
    try:
        with jax.set_mesh(mesh):
            train_step = make_train_step(config, graphdef, optimizer, schedule, mesh, shardings)
            eval_step = make_eval_step(graphdef, mesh, shardings["params"], config.logits_piece,
                                       config.data.loss_positions())
            records = _run(config, state, data, train_step, eval_step, checkpointer, log, mesh, start, stop_after,
                           progress and lead, stop)
    finally:
        stop.uninstall()
    checkpointer.close()
    data.close()  # ends grain's worker processes (data.read_processes), if any
    return records


def _run(config, state, data, train_step, eval_step, checkpointer, log, mesh, start, stop_after, progress, stop):
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
        final = step == config.steps
        if step == start + 1 and step % config.log_every and not final:  # keep compilation out of the throughput
            jax.block_until_ready(metrics)
            window_start, window_tokens, window_steps = time.perf_counter(), 0, 0
        if step % config.log_every == 0 or final:  # the same records whether or not the run is interrupted
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
        preempted = _preempted(stop, checkpointer, step)
        if config.checkpoint_every >= 0 or preempted:
            checkpointer.save(step, state, data, metadata=metadata, force=last or preempted)
        if preempted:
            checkpointer.wait()
            bar.write(f"stopped at step {step} ({preempted}); checkpoint {step} saved, run again to resume")
            break
    bar.close()
    checkpointer.wait()
    return records


def _preempted(stop: StopRequest, checkpointer: Checkpointer, step: int) -> str | None:
    """Why the run must stop after ``step`` (a signal, or every process's preemption notice), or None."""
    if jax.process_count() > 1:  # every process must stop at the same step: JAX's preemption sync decides
        return "preemption notice" if checkpointer.reached_preemption(step) else None
    return stop.signal_name
