"""Throughput of a model: training tokens/s (a full optimizer step) and inference tokens/s
(prefill, and cached decoding), on random tokens, timed after warm-up: the median of single
waited-for calls, and for the train step also amortised over back-to-back steps (as training runs)."""

from __future__ import annotations

import contextlib
import dataclasses
import time

import jax
import numpy as np

from dma_jax.decoding import generate
from dma_jax.sharding import MeshConfig, global_batch, make_mesh
from dma_jax.timing import amortised_seconds, median_seconds
from dma_jax.training.config import TrainConfig
from dma_jax.training.step import config_train_step


def random_batch(rng: np.random.Generator, vocab: int, batch: int, seq_len: int) -> dict[str, np.ndarray]:
    tokens = rng.integers(0, vocab, (batch, seq_len + 1), dtype=np.int32)
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "segment_ids": np.ones((batch, seq_len), np.int32),
            "loss_mask": np.ones((batch, seq_len), np.float32)}


@contextlib.contextmanager
def train_step_loop(config: TrainConfig, *, seq_len: int, batch: int):
    """Yields ``(one, lower)`` inside the config's mesh: ``one()`` runs the config's train step
    (all devices, data parallel) on one fixed random batch of (batch, seq_len) tokens, carrying
    the state from call to call, and returns its metrics; ``lower()`` lowers that step for the
    current state (``.compile().as_text()`` gives the optimised HLO)."""
    config = dataclasses.replace(config, mesh=MeshConfig())
    mesh = make_mesh(config.mesh)
    _, state, _, step = config_train_step(config, mesh)
    with jax.set_mesh(mesh):
        data = global_batch(random_batch(np.random.default_rng(0), config.model.vocab_size, batch, seq_len), mesh)
        holder = {"state": state}

        def one():
            holder["state"], metrics = step(holder["state"], data)
            return metrics

        yield one, lambda: step.lower(holder["state"], data)


def training_throughput(config: TrainConfig, *, seq_len: int, batch: int, repeats: int = 5) -> dict:
    """Tokens/s of the config's train step (all devices, data parallel) at (batch, seq_len):
    ``step_s`` the median waited-for step, ``step_s_amortised`` per step of ``repeats`` back-to-back
    steps with one wait, ``compile_s`` the first call's time less one step (tracing, lowering and
    compiling the step)."""
    with train_step_loop(config, seq_len=seq_len, batch=batch) as (one, _):
        start = time.perf_counter()
        jax.block_until_ready(one())  # compiles
        first_s = time.perf_counter() - start
        seconds = median_seconds(one, repeats=repeats)
        amortised = amortised_seconds(one, calls=repeats, warmup=0)
    return {"seq_len": seq_len, "batch": batch, "step_s": seconds, "tokens_per_s": batch * seq_len / seconds,
            "step_s_amortised": amortised, "tokens_per_s_amortised": batch * seq_len / amortised,
            "compile_s": max(0.0, first_s - seconds)}


def inference_throughput(model, *, prompt_len: int, new_tokens: int, batch: int, repeats: int = 3) -> dict:
    """Prefill tokens/s (a prompt of ``prompt_len``) and decode tokens/s (``new_tokens`` more, one
    at a time with the caches), from generate() timed with 1 and with ``new_tokens`` new tokens."""
    prompts = random_batch(np.random.default_rng(1), model.config.vocab_size, batch, prompt_len)["inputs"]
    prefill = median_seconds(lambda: generate(model, prompts, 1), repeats=repeats)
    total = median_seconds(lambda: generate(model, prompts, new_tokens), repeats=repeats)
    decode = max(total - prefill, 1e-9)
    return {"prompt_len": prompt_len, "new_tokens": new_tokens, "batch": batch, "prefill_s": prefill,
            "prefill_tokens_per_s": batch * prompt_len / prefill, "decode_s": decode,
            "decode_tokens_per_s": batch * (new_tokens - 1) / decode}
