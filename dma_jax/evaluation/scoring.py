"""Per-row scores of a model on batches of the data pipelines' format."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dma_jax.training.step import token_scores


def _row_scores(graphdef, params, batch):
    nll, correct, mask = token_scores(params, graphdef, batch)
    right = jnp.sum(correct * mask, axis=1)
    tokens = jnp.sum(mask, axis=1)
    return {"nll": jnp.sum(nll * mask, axis=1), "tokens": tokens, "correct": right, "exact": (right == tokens) & (tokens > 0)}


class BatchScorer:
    """``scorer(batch)`` -> numpy (B,) arrays per row, over its ``loss_mask`` tokens:

    - ``nll``: summed negative log-likelihood;
    - ``tokens``: how many tokens count;
    - ``correct``: how many of them the argmax predicts;
    - ``exact``: whether it predicts all of them. Under teacher forcing this equals greedy decoding
      producing exactly the masked continuation: each greedy step sees the same prefix.

    ``batch``: dict of (B, L) arrays ``inputs``, ``targets``, ``segment_ids``, ``loss_mask``.
    Jitted once per batch shape.
    """

    def __init__(self, model: nnx.Module):
        self.graphdef, self.params = nnx.split(model)
        self._scores = jax.jit(_row_scores, static_argnums=0)

    def __call__(self, batch: dict) -> dict[str, np.ndarray]:
        arrays = {k: jnp.asarray(v) for k, v in batch.items()}
        return {k: np.asarray(v) for k, v in self._scores(self.graphdef, self.params, arrays).items()}
