"""Default sizes of ``python -m dma_jax.demo`` (the project's current main job).

``dma_jax.demo`` reads ``DEMO`` and lets command-line flags override single fields.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Sizes and tolerances of the demo; every field has a command-line flag of the same name."""

    out: str = "runs/demo"  # folder for the picture
    seed: int = 0  # root of every random key and the picture's bias

    # (a) picture of one (batch, head) row of the selection
    picture_seq_len: int = 48
    picture_window: int = 8

    # (b) dma_attention vs dma_attention_reference, forward and gradients (GQA: H = 2 Hkv)
    batch: int = 2
    seq_len: int = 256
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 64
    window: int = 32
    tolerance: float = 1e-4  # pass iff max |err| <= tolerance * max(1, max |reference|)

    # (d) timing of live_ranges alone
    timing_batch: int = 1
    timing_bias_heads: int = 8
    timing_seq_len: int = 32768
    timing_window: int = 1024
    timing_repeats: int = 5


DEMO = DemoConfig()
