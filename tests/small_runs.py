"""A tiny training config shared by the training and evaluation tests, and the environment of a
subprocess that sees several CPU devices."""

import dataclasses
import os

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
