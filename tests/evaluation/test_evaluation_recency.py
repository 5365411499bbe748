"""dma_jax.evaluation.recency: the share of recent keys kept, against a brute-force top-w."""

import numpy as np
import pytest
from flax import nnx

from dma_jax.evaluation.recency import dma_selections, recent_key_share
from dma_jax.models import DecoderLM, ModelConfig


def brute_force_shares(bias, window, segments, recent):
    """Per query, the kept set is the top-``window`` visible keys by (bias, then the later index)."""
    batch, heads, length = bias.shape
    kept_recent = pairs = kept_all = visible_all = 0
    for b in range(batch):
        for h in range(heads):
            for t in range(length):
                if segments[b, t] == 0:
                    continue
                visible = [j for j in range(t + 1) if segments[b, j] == segments[b, t]]
                ranked = sorted(visible, key=lambda j: (bias[b, h, j], j), reverse=True)
                kept = set(ranked[:window])
                kept_all += len(kept)
                visible_all += len(visible)
                for j in visible:
                    if t - j < recent:
                        pairs += 1
                        kept_recent += j in kept
    return kept_recent / pairs, kept_all / visible_all


@pytest.mark.parametrize("recent", [1, 4, 9])
def test_recent_key_share_matches_brute_force(recent):
    rng = np.random.default_rng(recent)
    bias = rng.normal(size=(2, 2, 37)).astype(np.float32)
    segments = np.ones((2, 37), np.int32)
    segments[1, 20:] = 2  # two documents in row 1
    segments[1, 33:] = 0  # and padding
    got = recent_key_share(bias, 6, segments, recent)
    want_recent, want_visible = brute_force_shares(bias, 6, segments, recent)
    assert got["recent_share"] == pytest.approx(want_recent)
    assert got["visible_share"] == pytest.approx(want_visible)


def test_equal_scores_are_a_sliding_window():
    bias = np.ones((1, 1, 50), np.float32)  # what A = 0 gives at initialisation
    got = recent_key_share(bias, 8, np.ones((1, 50), np.int32), 8)
    assert got["recent_share"] == 1.0 and got["visible_share"] < 0.5


def test_every_dma_layer_is_recorded_once():
    config = ModelConfig.preset("tiny", attention="dma", window=8, num_layers=3, implementation="xla")
    model = DecoderLM(config, rngs=nnx.Rngs(0))
    batch = {"inputs": np.ones((2, 24), np.int32), "segment_ids": np.ones((2, 24), np.int32)}
    found = dma_selections(model, batch)
    assert len(found) == 3 and all(s["window"] == 8 and s["bias"].shape == (2, 2, 24) for s in found)
