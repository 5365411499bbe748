"""training.step: the token loss and its gradient; the LM head and loss run in pieces, or only at
the positions that carry loss, give the loss and gradients of the whole."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dma_jax.data import DataConfig
from dma_jax.models import DecoderLM, ModelConfig
from dma_jax.training.step import _scores, loss_sums
from small_runs import small_config


def test_token_nll_and_its_gradient_equal_a_gather_of_the_target_logit():
    """The target's logit is taken by a one-hot select: the same NLL as a gather, bit for bit, and
    the same gradient, softmax minus the one-hot target (a wrong column or a doubled target fails)."""
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    logits = 4.0 * jax.random.normal(keys[0], (3, 5, 11))
    targets = jax.random.randint(keys[1], (3, 5), 0, 11)
    nll, correct = _scores(logits, targets)
    gathered = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    np.testing.assert_array_equal(nll, jax.nn.logsumexp(logits, axis=-1) - gathered)
    np.testing.assert_array_equal(correct, (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32))
    grad = jax.grad(lambda x: jnp.sum(_scores(x, targets)[0]))(logits)
    np.testing.assert_allclose(grad, jax.nn.softmax(logits) - jax.nn.one_hot(targets, 11), atol=1e-6)


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


@pytest.mark.parametrize("piece", [None, 2])
def test_scoring_only_the_loss_positions_gives_the_same_loss_and_gradients(piece):
    """Rows with 3, 1 and 0 loss positions, scored at K = 3 positions a row: the loss, the counts
    and every gradient equal the whole head's. At K = 2 the first row's third position is left
    out, and the loss says so."""
    config = ModelConfig(vocab_size=53, d_model=32, num_layers=1, num_heads=2, num_kv_heads=2, mlp_dim=64,
                         attention="mha", tie_embeddings=False)
    graphdef, params = nnx.split(DecoderLM(config, rngs=nnx.Rngs(0)))
    keys = jax.random.split(jax.random.PRNGKey(2), 2)
    mask = np.zeros((3, 11), np.float32)
    mask[0, [2, 5, 10]] = mask[1, 7] = 1.0
    batch = {"inputs": jax.random.randint(keys[0], (3, 11), 0, 53), "targets": jax.random.randint(keys[1], (3, 11), 0, 53),
             "segment_ids": None, "loss_mask": jnp.asarray(mask)}
    grad = jax.jit(jax.value_and_grad(loss_sums, has_aux=True), static_argnums=(1, 3, 4))
    (whole, (count, correct)), whole_grads = grad(params, graphdef, batch, None, None)
    (scored, (count_k, correct_k)), scored_grads = grad(params, graphdef, batch, piece, 3)
    np.testing.assert_allclose(scored, whole, rtol=1e-6)
    assert (count_k, correct_k) == (count, correct) and count == 4
    for a, b in zip(jax.tree.leaves(scored_grads), jax.tree.leaves(whole_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6)  # summation order only
    (_, (count_2, _)), _ = grad(params, graphdef, batch, piece, 2)
    assert count_2 == 3


def test_the_eval_step_scores_only_the_loss_positions_it_is_given():
    """The eval step at K = 3 loss positions sums what the whole head's does; at K = 1 it counts
    one token a row (so the positions reach it)."""
    from dma_jax.sharding import MeshConfig, make_mesh
    from dma_jax.training.step import make_eval_step

    config = ModelConfig(vocab_size=53, d_model=32, num_layers=1, num_heads=2, num_kv_heads=2, mlp_dim=64,
                         attention="mha", tie_embeddings=False)
    graphdef, params = nnx.split(DecoderLM(config, rngs=nnx.Rngs(0)))
    mesh = make_mesh(MeshConfig())
    keys = jax.random.split(jax.random.PRNGKey(4), 2)
    mask = np.zeros((2, 9), np.float32)
    mask[0, [1, 4, 8]] = mask[1, [0, 3]] = 1.0
    batch = {"inputs": jax.random.randint(keys[0], (2, 9), 0, 53), "targets": jax.random.randint(keys[1], (2, 9), 0, 53),
             "segment_ids": jnp.ones((2, 9), jnp.int32), "loss_mask": jnp.asarray(mask)}
    replicated = jax.tree.map(lambda _: jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()), params)
    with jax.set_mesh(mesh):
        whole = make_eval_step(graphdef, mesh, replicated)(params, batch)
        scored = make_eval_step(graphdef, mesh, replicated, loss_positions=3)(params, batch)
        one = make_eval_step(graphdef, mesh, replicated, loss_positions=1)(params, batch)
    np.testing.assert_allclose(scored["nll"], whole["nll"], rtol=1e-6)
    assert scored["tokens"] == whole["tokens"] == 5 and scored["correct"] == whole["correct"]
    assert one["tokens"] == 2


def test_mqar_rows_name_their_loss_positions_and_text_rows_do_not():
    assert DataConfig(kind="mqar", seq_len=64, global_batch_size=4, mqar_num_kv_pairs=8).loss_positions() == 8
    assert DataConfig(kind="lm", seq_len=64, global_batch_size=4, corpus_path="unused").loss_positions() is None


def test_a_piece_below_one_is_refused():
    with pytest.raises(ValueError, match="logits_piece"):
        small_config(logits_piece=0).validate()
