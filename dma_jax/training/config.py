"""Training configuration: one frozen dataclass tree, loaded from ``configs/NAME.py`` and overridden
by ``key=value`` strings (``model.d_model=128``, ``optim.peak_lr=3e-4``, ``data.seq_len=512``).

``TrainConfig.validate()`` checks every key before any compute and names the bad one.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import sys
from pathlib import Path

from dma_jax.data import DataConfig, vocab_size_of
from dma_jax.models import ModelConfig
from dma_jax.sharding import MeshConfig
from dma_jax.training.optimizer import OptimConfig


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything one run needs. ``model.dtype`` is the compute dtype; parameters stay float32."""

    model: ModelConfig
    data: DataConfig
    optim: OptimConfig = OptimConfig()
    mesh: MeshConfig = MeshConfig()
    steps: int = 1000
    grad_accum: int = 1  # micro-batches per step; data.global_batch_size is split among them
    # Sequence positions per piece of the LM head and loss (None: all at once). In pieces the
    # float32 (batch, seq_len, vocab) logits never exist whole: at the 1.7B shape, 8 x 2048 tokens
    # and a 151,936-entry vocabulary, they are 10 GB, and their gradient as much again.
    logits_piece: int | None = None
    seed: int = 0
    log_every: int = 10
    eval_every: int = 200  # 0: never
    eval_batches: int = 8  # validation batches per evaluation (fewer if the split runs out)
    checkpoint_every: int = 200  # 0: only at the end; -1: never
    keep_checkpoints: int = 3
    async_checkpoints: bool = True

    def validate(self) -> "TrainConfig":
        """Raise ValueError naming the first bad key; return self."""
        positive = ("steps", "grad_accum", "log_every", "keep_checkpoints", "eval_batches")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.logits_piece is not None and self.logits_piece < 1:
            raise ValueError(f"logits_piece must be >= 1 or None, got {self.logits_piece}")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0, got {self.eval_every}")
        if self.checkpoint_every < -1:
            raise ValueError(f"checkpoint_every must be >= -1 (-1: never), got {self.checkpoint_every}")
        o = self.optim
        if not o.peak_lr > 0:
            raise ValueError(f"optim.peak_lr must be > 0, got {o.peak_lr}")
        if o.warmup_steps < 0:
            raise ValueError(f"optim.warmup_steps must be >= 0, got {o.warmup_steps}")
        if not 0 <= o.decay_fraction <= 1:
            raise ValueError(f"optim.decay_fraction must be in [0, 1], got {o.decay_fraction}")
        if not 0 <= o.min_lr_ratio <= 1:
            raise ValueError(f"optim.min_lr_ratio must be in [0, 1], got {o.min_lr_ratio}")
        if o.warmup_steps + round(o.decay_fraction * self.steps) > self.steps:
            raise ValueError(
                f"optim.warmup_steps={o.warmup_steps} plus the decay ({o.decay_fraction} of steps={self.steps}) "
                "exceed steps"
            )
        if o.clip_norm is not None and not o.clip_norm > 0:
            raise ValueError(f"optim.clip_norm must be > 0 or None, got {o.clip_norm}")
        self.data.validate()
        if self.data.global_batch_size % self.grad_accum:
            raise ValueError(
                f"data.global_batch_size={self.data.global_batch_size} must be a multiple of grad_accum={self.grad_accum}"
            )
        needed = vocab_size_of(self.data)
        if self.model.vocab_size < needed:
            raise ValueError(f"model.vocab_size={self.model.vocab_size} is smaller than the data's vocabulary ({needed})")
        window = self.model.window
        if self.model.attention in ("dma", "swa", "nsa") and window is not None and window < 1:
            raise ValueError(f"model.window must be >= 1 or None, got {window}")
        _check_model_builds(self.model)
        return self


def _check_model_builds(model: ModelConfig) -> None:
    """Build the model abstractly (shapes only, no compute) so its layers' own checks run now."""
    from flax import nnx

    from dma_jax.models import DecoderLM

    try:
        nnx.eval_shape(lambda: DecoderLM(model, rngs=nnx.Rngs(0)))
    except ValueError as error:
        raise ValueError(f"model ({model.attention}): {error}") from None


def _parse(text: str, current):
    """A string from the command line, typed after the value it replaces (any type if that is None)."""
    if text in ("None", "none", "null"):
        return None
    if isinstance(current, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"expected true or false, got {text!r}")
    if isinstance(current, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    if current is None:
        return value
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(current, tuple) and isinstance(value, list):
        return tuple(value)
    if isinstance(value, bool) or not isinstance(value, type(current)):
        raise ValueError(f"expected {type(current).__name__}, got {text!r}")
    return value


def apply_overrides(config, overrides: list[str]):
    """``config`` with each ``"a.b.c=value"`` applied; unknown keys raise naming the key."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, text = item.split("=", 1)
        config = _replace_path(config, key.strip().split("."), text.strip(), key)
    return config


def _replace_path(node, parts, text, full_key):
    if not dataclasses.is_dataclass(node):
        raise ValueError(f"unknown config key {full_key!r}")
    names = {f.name for f in dataclasses.fields(node)}
    head = parts[0]
    if head not in names:
        raise ValueError(f"unknown config key {full_key!r} ({head!r} is not one of {sorted(names)})")
    current = getattr(node, head)
    if len(parts) == 1:
        try:
            value = _parse(text, current)
        except ValueError as error:
            raise ValueError(f"{full_key}: {error}") from None
        try:
            return dataclasses.replace(node, **{head: value})
        except (ValueError, TypeError) as error:
            raise ValueError(f"{full_key}={text}: {error}") from None
    return dataclasses.replace(node, **{head: _replace_path(current, parts[1:], text, full_key)})


def load_config(path: str | Path, overrides: list[str] = (), *, validate: bool = True) -> TrainConfig:
    """``get_config()`` from the Python file at ``path``, with ``overrides``, validated (unless
    ``validate`` is False: e.g. to read a model shape where the data is not there).

    The file runs as a module registered in ``sys.modules`` (so it may define dataclasses of its
    own). Raises ValueError, in one line, for a file that is not a training config: no
    ``get_config``, or one that returns something other than a ``TrainConfig``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} not found")
    name = f"dma_config_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their defining module up while they are built
    try:
        spec.loader.exec_module(module)
    except Exception:
        sys.modules.pop(name, None)
        raise
    if not callable(getattr(module, "get_config", None)):
        raise ValueError(f"{path} is not a training config: it defines no get_config() -> TrainConfig")
    config = module.get_config()
    if not isinstance(config, TrainConfig):
        raise ValueError(f"{path} is not a training config: get_config() returned a {type(config).__name__}, "
                         "not a TrainConfig")
    config = apply_overrides(config, list(overrides))
    return config.validate() if validate else config


def config_dict(config) -> dict:
    """A JSON-ready dict of the config (for metrics and checkpoints)."""
    return dataclasses.asdict(config)


def config_from_dict(values: dict) -> TrainConfig:
    """The inverse of ``config_dict`` (e.g. a run's ``config.json``)."""
    values = dict(values)
    nested = {
        "model": ModelConfig(**values.pop("model")),
        "data": DataConfig.from_dict(values.pop("data")),
        "optim": OptimConfig(**values.pop("optim")),
        "mesh": MeshConfig(**values.pop("mesh")),
    }
    return TrainConfig(**nested, **values)
