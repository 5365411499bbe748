"""training.step: the LM head and loss run in pieces give the loss and gradients of one piece."""

import jax
import numpy as np
import pytest
from flax import nnx

from dma_jax.models import DecoderLM, ModelConfig
from dma_jax.training.step import loss_sums
from small_runs import small_config


@pytest.mark.parametrize("piece", [4, 13, 40], ids=["ragged", "whole", "longer"])
def test_logits_in_pieces_give_the_same_loss_and_gradients(piece):
    config = ModelConfig(vocab_size=97, d_model=32, num_layers=1, num_heads=2, num_kv_heads=2, mlp_dim=64,
                         attention="mha", tie_embeddings=False)
    graphdef, params = nnx.split(DecoderLM(config, rngs=nnx.Rngs(0)))
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    batch = {"inputs": jax.random.randint(keys[0], (3, 13), 0, 97), "targets": jax.random.randint(keys[1], (3, 13), 0, 97),
             "segment_ids": None, "loss_mask": jax.random.bernoulli(keys[2], 0.8, (3, 13))}
    grad = jax.jit(jax.value_and_grad(loss_sums, has_aux=True), static_argnums=(1, 3))
    (whole, (count, correct)), whole_grads = grad(params, graphdef, batch, None)
    (pieces, (count_p, correct_p)), piece_grads = grad(params, graphdef, batch, piece)
    np.testing.assert_allclose(pieces, whole, rtol=1e-6)
    assert (count_p, correct_p) == (count, correct)
    for a, b in zip(jax.tree.leaves(piece_grads), jax.tree.leaves(whole_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6)  # summation order only


def test_a_piece_below_one_is_refused():
    with pytest.raises(ValueError, match="logits_piece"):
        small_config(logits_piece=0).validate()
