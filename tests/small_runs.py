"""A tiny training config shared by the training and evaluation tests, the environment of a
subprocess that sees several CPU devices, and a directory built once for all pytest workers."""

import dataclasses
import fcntl
import os
import shutil
from pathlib import Path
from typing import Callable

from dma_jax.data import DataConfig
from dma_jax.models import ModelConfig
from dma_jax.training.config import TrainConfig
from dma_jax.training.optimizer import OptimConfig


def small_config(**overrides) -> TrainConfig:
    config = TrainConfig(
        model=ModelConfig.preset("tiny", attention="dma", window=8, implementation="xla"),
        data=DataConfig(kind="mqar", seq_len=32, global_batch_size=8, vocab_size=256, mqar_num_kv_pairs=4,
                        mqar_num_eval_examples=16, read_threads=1),
        optim=OptimConfig(peak_lr=1e-2, warmup_steps=2, decay_fraction=0.25),
        steps=8, log_every=1, eval_every=4, eval_batches=2, checkpoint_every=4, keep_checkpoints=2,
    )
    return dataclasses.replace(config, **overrides)


def train_losses(records):
    return {r["step"]: r["loss"] for r in records if r["event"] == "train"}


def host_devices_env(count: int, **extra: str) -> dict:
    """This process's environment for a subprocess with ``count`` CPU devices (JAX on the CPU;
    the suite's XLA_FLAGS kept), plus ``extra`` variables."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={count}".strip()
    return dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu", **extra)


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """The directory ``name`` that ``build(directory)`` fills, built by one of the run's pytest-xdist
    workers while the others wait on a lock (a module fixture is otherwise built once per worker
    that runs one of its tests). The tests must only read it."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's directory, above each worker's own
    directory, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir()
            build(directory)
            done.touch()
    return directory
