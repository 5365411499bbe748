"""Per-row scores of a model on batches of the data pipelines' format."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def _row_scores(graphdef, params, batch):
    model = nnx.merge(graphdef, params)
    logits = model(batch["inputs"], batch["segment_ids"])
    targets, mask = batch["targets"], batch["loss_mask"].astype(jnp.float32)
    nll = jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    right = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32) * mask
    tokens = jnp.sum(mask, axis=1)
    return {"nll": jnp.sum(nll * mask, axis=1), "tokens": tokens, "correct": jnp.sum(right, axis=1),
            "exact": (jnp.sum(right, axis=1) == tokens) & (tokens > 0)}


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
