"""Training FLOPs per token and model FLOPs utilisation (MFU).

Counted as useful work only (no rematerialisation, no padding):
- matmuls: 6 FLOPs per weight per token (forward 2, backward 4), including the LM head;
- attention: 12 * H * D per (query, kept key) pair per layer (forward 4: QK^T and PV; backward 8),
  with each kind's kept keys for a causal row of ``seq_len`` tokens (a row with document breaks
  keeps fewer, so this is an upper bound there).
"""

from __future__ import annotations

import numpy as np

from dma_jax.models import ModelConfig

# Dense bf16 peak FLOP/s per chip, from vendor datasheets (no sparsity).
PEAK_FLOPS = {
    "H100": 989e12,
    "H200": 989e12,
    "H800": 989e12,
    "A100": 312e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
}


def peak_flops(device_kind: str) -> float | None:
    """Peak bf16 FLOP/s of a device from its ``device_kind`` string; None when unknown (CPU)."""
    for name, flops in PEAK_FLOPS.items():
        if name.lower() in device_kind.lower():
            return flops
    return None


def mean_kept_keys(config: ModelConfig, seq_len: int) -> float:
    """Mean number of keys a query attends to over a causal row of ``seq_len`` positions."""
    t = np.arange(1, seq_len + 1, dtype=np.float64)  # keys visible to query t-1
    window = config.window
    if config.attention in ("mha", "mla") or window is None:
        kept = t
    elif config.attention in ("dma", "swa"):
        kept = np.minimum(t, window)
    else:  # nsa: compressed blocks + selected blocks + sliding window
        compressed = np.maximum(0, (t - config.nsa_block_size) // config.nsa_block_stride + 1)
        selected = np.minimum(t, config.nsa_num_selected * config.nsa_select_block)
        kept = compressed + selected + np.minimum(t, window)
    return float(kept.mean())


def training_flops_per_token(config: ModelConfig, matmul_params: int, seq_len: int) -> float:
    """FLOPs of one training token. ``matmul_params``: weights of rank >= 2 outside the embedding
    table (``count_matmul_params``); the LM head (tied or not) is added here."""
    head = config.vocab_size * config.d_model
    attention = 12 * config.num_layers * config.num_heads * config.resolved_head_dim * mean_kept_keys(config, seq_len)
    return 6.0 * (matmul_params + head) + attention


def count_matmul_params(params) -> int:
    """Weights of rank >= 2 in a parameter pytree, excluding the embedding table and LM head
    (stacked blocks, ``layers/...``, carry one more axis: their layer axis)."""
    import jax

    from dma_jax.sharding import path_name

    total = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        name = path_name(path)
        rank = leaf.ndim - (1 if name.startswith("layers/") else 0)
        if rank >= 2 and not name.startswith(("embed/", "lm_head/")):
            total += int(np.prod(leaf.shape))
    return total


def count_params(params) -> int:
    import jax

    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
