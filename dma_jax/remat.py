"""What a rematerialised block may keep of an attention call instead of recomputing it.

Under ``jax.checkpoint`` (``nnx.remat``) without a policy, the backward pass of a block runs its
whole forward again: DMA's selection stage and its forward kernel included, and cuDNN's forward
for dense attention. The attention paths name the values that make that unnecessary, with
``jax.ad_checkpoint.checkpoint_name``:

- ``SELECTION``: DMA's live ranges and key tables (int32; (B, Hb, Tk) ranges and (B, Hb, tiles,
  W) tables per call, W about w + 64), named by ``dma_jax.selection.key_tables`` and by the XLA
  path of ``dma_jax.ops``;
- ``OUTPUT``: the attention output the backward kernels read, (B, Hb, tiles, rows, D) or
  (B, T, H, D) in the compute dtype;
- ``STATS``: the log-sum-exp of each query row, float32, one per row of ``OUTPUT``.

``save_selection()`` keeps only ``SELECTION`` (``ModelConfig``'s default): the backward pass runs
DMA's forward kernel again but not its selection stage, for a few integers per key and tile (about
15 MB a layer at B = 32, T = 2048, Hb = 8, w = 512, where the selection stage is 0.75 ms of GPU
work per call on an H100 and the default model trains 3.4% faster than saving nothing,
docs/performance.md).

``save_attention()`` is the ``jax.checkpoint`` policy that keeps all three and the outputs of cuDNN's
fused forward (its output and softmax statistics, which carry no name): with it the backward pass
of a block runs no attention forward and no selection, for about one extra activation of
(B, T, H, D) per layer (1.6 GiB for 12 layers of 64K tokens x 1024 in bf16, measured on an H200:
docs/performance.md). ``policy("nothing")`` is None (recompute everything, the default of
``jax.checkpoint``).

    >>> block = jax.checkpoint(block, policy=save_attention())     # doctest: +SKIP
"""

from __future__ import annotations

import jax

SELECTION = "dma_selection"
OUTPUT = "attention_output"
STATS = "attention_stats"

# The primitive of cuDNN's fused attention forward (jax.nn.dot_product_attention, implementation
# "cudnn"); its outputs are the output and the softmax statistics its backward reads.
_CUDNN_FORWARD = "dot_product_attention_fwd_wrapper"

SAVES = ("nothing", "selection", "attention")


def _cudnn_forward(prim, *_, **__) -> bool:
    return prim.name == _CUDNN_FORWARD


def save_attention():
    """A ``jax.checkpoint`` policy: save the named attention values and cuDNN's forward outputs."""
    names = jax.checkpoint_policies.save_only_these_names(SELECTION, OUTPUT, STATS)
    return jax.checkpoint_policies.save_from_both_policies(names, _cudnn_forward)


def save_selection():
    """A ``jax.checkpoint`` policy: save DMA's live ranges and key tables only."""
    return jax.checkpoint_policies.save_only_these_names(SELECTION)


def policy(saves: str):
    """The ``jax.checkpoint`` policy of a ``ModelConfig.remat_saves`` value (one of ``SAVES``)."""
    if saves not in SAVES:
        raise ValueError(f"remat_saves must be one of {SAVES}, got {saves!r}")
    return {"nothing": lambda: None, "selection": save_selection, "attention": save_attention}[saves]()
