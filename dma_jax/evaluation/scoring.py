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
    return {"nll": jnp.sum(nll * mask, axis=1), "tokens": tokens, "correct": right, "exact": (right == tokens) & (tokens > 0),
            "hits": (correct * mask) > 0, "token_nll": nll * mask}


class BatchScorer:
    """``scorer(batch)`` -> numpy (B,) arrays per row, over its ``loss_mask`` tokens:

    - ``nll``: summed negative log-likelihood;
    - ``tokens``: how many tokens count;
    - ``correct``: how many of them the argmax predicts;
    - ``exact``: whether it predicts all of them. Under teacher forcing this equals greedy decoding
      producing exactly the masked continuation: each greedy step sees the same prefix.
    - ``hits``: bool (B, L), whether each counted token is predicted (False where not counted);
    - ``token_nll``: float (B, L), each counted token's negative log-likelihood (0 where not counted).

    ``batch``: dict of (B, L) arrays ``inputs``, ``targets``, ``segment_ids``, ``loss_mask``.
    Rows go through the model in chunks of at most ``max_tokens`` tokens (at least one row), the
    last chunk padded with empty rows, so long contexts fit in memory and each length compiles once.
    """

    def __init__(self, model: nnx.Module, max_tokens: int = 32768):
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        self.graphdef, self.params = nnx.split(model)
        self.max_tokens = max_tokens
        self._scores = jax.jit(_row_scores, static_argnums=0)

    def __call__(self, batch: dict) -> dict[str, np.ndarray]:
        rows, length = np.shape(batch["inputs"])
        chunk = max(1, min(rows, self.max_tokens // length))
        padded = -(-rows // chunk) * chunk
        batch = {k: np.concatenate([np.asarray(v), np.zeros((padded - rows, *np.shape(v)[1:]), np.asarray(v).dtype)])
                 for k, v in batch.items()}
        parts = []
        for start in range(0, padded, chunk):
            arrays = {k: jnp.asarray(v[start : start + chunk]) for k, v in batch.items()}
            parts.append(self._scores(self.graphdef, self.params, arrays))
        return {k: np.concatenate([np.asarray(part[k]) for part in parts])[:rows] for k in parts[0]}
