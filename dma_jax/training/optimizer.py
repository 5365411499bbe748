"""AdamW with the warmup-stable-decay (WSD) learning-rate schedule and global-norm clipping."""

from __future__ import annotations

import dataclasses

import jax
import optax


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with a warmup-stable-decay schedule and global-norm clipping.

    The learning rate rises linearly from 0 to ``peak_lr`` over ``warmup_steps``, stays there, and
    falls linearly to ``peak_lr * min_lr_ratio`` over the last ``decay_fraction`` of the steps.
    """

    peak_lr: float = 3e-4
    warmup_steps: int = 100
    decay_fraction: float = 0.1
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    clip_norm: float | None = 1.0


def wsd_schedule(config: OptimConfig, steps: int) -> optax.Schedule:
    """Learning rate at each step (from 0): linear warmup to ``peak_lr``, constant, then linear decay to
    ``peak_lr * min_lr_ratio`` over the last ``round(decay_fraction * steps)`` steps."""
    peak = config.peak_lr
    decay = round(config.decay_fraction * steps)
    stable = steps - config.warmup_steps - decay
    pieces = [
        # Step i < warmup gets peak * (i + 1) / warmup: no step is wasted at lr 0.
        optax.linear_schedule(peak / max(config.warmup_steps, 1), peak, max(config.warmup_steps - 1, 1)),
        optax.constant_schedule(peak),
        optax.linear_schedule(peak, peak * config.min_lr_ratio, max(decay, 1)),
    ]
    boundaries = [config.warmup_steps, config.warmup_steps + stable]
    if config.warmup_steps == 0:
        pieces, boundaries = pieces[1:], boundaries[1:]
    return optax.join_schedules(pieces, boundaries)


def make_optimizer(config: OptimConfig, steps: int) -> optax.GradientTransformation:
    """Clip by global norm (if ``clip_norm``), then AdamW with the WSD schedule.

    Weight decay skips vectors (norm scales, biases, DMA's A): only arrays of rank >= 2 decay.
    """
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
    adamw = optax.adamw(
        wsd_schedule(config, steps), b1=config.b1, b2=config.b2, eps=config.eps,
        weight_decay=config.weight_decay, mask=decay_mask,
    )
    if config.clip_norm is None:
        return adamw
    return optax.chain(optax.clip_by_global_norm(config.clip_norm), adamw)

