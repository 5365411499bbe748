"""The train state, its shardings, and the jitted train and eval steps.

The state is a plain pytree ``{"params", "opt_state", "step", "rng"}``: params are the model's
``nnx.State`` in float32 (master weights); the model computes in ``config.model.dtype`` (e.g.
bfloat16) and returns float32 logits, so the loss and the gradients are float32.

A step splits the global batch into ``grad_accum`` micro-batches and sums their gradients in a
``lax.scan``; the loss is the mean over every ``loss_mask`` token of the whole global batch.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from dma_jax.models import DecoderLM
from dma_jax.sharding import batch_sharding, tree_shardings
from dma_jax.training.config import TrainConfig
from dma_jax.training.optimizer import make_optimizer, wsd_schedule

TrainState = dict[str, Any]


def abstract_model(config: TrainConfig) -> nnx.Module:
    return nnx.eval_shape(lambda: DecoderLM(config.model, rngs=nnx.Rngs(0)))


def _init_fn(config: TrainConfig, optimizer: optax.GradientTransformation):
    def init(seed):
        init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
        _, params = nnx.split(DecoderLM(config.model, rngs=nnx.Rngs(init_key)))
        return {"params": params, "opt_state": optimizer.init(params), "step": jnp.zeros((), jnp.int32), "rng": train_key}

    return init


def state_shapes(config: TrainConfig, optimizer: optax.GradientTransformation, mesh) -> tuple[nnx.GraphDef, Any, Any]:
    """(graphdef, the state's ShapeDtypeStructs, its shardings on ``mesh``), with no compute."""
    graphdef, _ = nnx.split(abstract_model(config))
    shapes = jax.eval_shape(_init_fn(config, optimizer), config.seed)
    return graphdef, shapes, tree_shardings(shapes, mesh)


def init_state(config: TrainConfig, optimizer: optax.GradientTransformation, mesh) -> tuple[nnx.GraphDef, TrainState, Any]:
    """(graphdef, state placed on ``mesh``, state shardings). Parameters are initialised on device,
    already sharded (no host copy of the full model)."""
    graphdef, _, shardings = state_shapes(config, optimizer, mesh)
    state = jax.jit(_init_fn(config, optimizer), static_argnums=0, out_shardings=shardings)(config.seed)
    return graphdef, state, shardings


def abstract_state(state_or_shapes, shardings):
    """ShapeDtypeStructs with shardings: the target a checkpoint restores into."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state_or_shapes, shardings)


def config_train_step(config: TrainConfig, mesh, *, abstract: bool = False):
    """(graphdef, state, state shardings, train step) for ``config`` on ``mesh``, with the config's
    own optimizer and schedule. ``abstract``: the state is ShapeDtypeStructs with their shardings
    (``abstract_state``): enough to lower and compile the step, and nothing is initialised."""
    optimizer = make_optimizer(config.optim, config.steps)
    if abstract:
        graphdef, shapes, shardings = state_shapes(config, optimizer, mesh)
        state = abstract_state(shapes, shardings)
    else:
        graphdef, state, shardings = init_state(config, optimizer, mesh)
    step = make_train_step(config, graphdef, optimizer, wsd_schedule(config.optim, config.steps), mesh, shardings)
    return graphdef, state, shardings, step


def _scores(logits, targets):
    # The target's logit by a one-hot select, not a gather: its gradient is then a select that
    # fuses into the softmax's, where a gather's is a scatter-add writing another (B, T, vocab) array.
    target_logit = jnp.sum(jnp.where(jnp.arange(logits.shape[-1]) == targets[..., None], logits, 0), axis=-1)
    nll = jax.nn.logsumexp(logits, axis=-1) - target_logit
    return nll, (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)


def _scores_in_pieces(head, hidden, targets, piece: int):
    """``_scores(head(hidden), targets)`` ``piece`` positions of every row at a time: the float32
    (B, piece, vocab) logits of one piece exist at once, and the backward recomputes them."""
    batch, length = targets.shape
    pieces = -(-length // piece)
    pad = pieces * piece - length
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)))
    split = lambda x: jnp.moveaxis(x.reshape(batch, pieces, piece, *x.shape[2:]), 1, 0)  # rows stay sharded
    score = jax.checkpoint(lambda args: _scores(head(args[0]), args[1]))
    nll, correct = jax.lax.map(score, (split(hidden), split(targets)))
    join = lambda x: jnp.moveaxis(x, 0, 1).reshape(batch, pieces * piece)[:, :length]
    return join(nll), join(correct)


def token_scores(params, graphdef, batch, logits_piece: int | None = None,
                 loss_positions: int | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """float32 (B, T) each, or (B, loss_positions) with ``loss_positions``: token NLL, whether the
    argmax is the target, and ``loss_mask``.

    ``logits_piece``: run the LM head and the loss this many positions at a time (None: all T at
    once), so the float32 (B, T, vocab) logits never exist whole (``TrainConfig.logits_piece``).
    ``loss_positions`` K: run the head only at the first K positions of each row where
    ``loss_mask`` > 0 (and, in rows with fewer, at positions of mask 0, which count for nothing);
    rows must have at most K such positions, or the loss drops the rest
    (``DataConfig.loss_positions``).
    """
    model = nnx.merge(graphdef, params)
    targets, mask = batch["targets"], batch["loss_mask"].astype(jnp.float32)
    if logits_piece is None and loss_positions is None:  # any model that maps tokens to logits
        nll, correct = _scores(model(batch["inputs"], batch["segment_ids"]), targets)
        return nll, correct, mask
    hidden = model.hidden_states(batch["inputs"], batch["segment_ids"])  # a DecoderLM
    if loss_positions is not None:
        # the loss positions first, in order (a stable sort), then the others
        first = jnp.argsort(mask <= 0, axis=-1, stable=True)[:, :loss_positions]
        hidden = jnp.take_along_axis(hidden, first[..., None], axis=1)
        targets, mask = jnp.take_along_axis(targets, first, axis=1), jnp.take_along_axis(mask, first, axis=1)
    if logits_piece is None:
        nll, correct = _scores(model.head_logits(hidden), targets)
    else:
        nll, correct = _scores_in_pieces(model.head_logits, hidden, targets, logits_piece)
    return nll, correct, mask


def loss_sums(params, graphdef, batch, logits_piece: int | None = None,
              loss_positions: int | None = None) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """(sum of token NLL, (token count, correct argmax count)) over ``loss_mask`` tokens."""
    nll, correct, mask = token_scores(params, graphdef, batch, logits_piece, loss_positions)
    return jnp.sum(nll * mask), (jnp.sum(mask), jnp.sum(correct * mask))


def _micro_batches(batch, count: int):
    """(B, ...) -> (count, B / count, ...), micro-batch i = rows i, i + count, ... so every device
    keeps its own rows (the batch dim stays sharded)."""
    return jax.tree.map(lambda x: jnp.swapaxes(x.reshape(x.shape[0] // count, count, *x.shape[1:]), 0, 1), batch)


def make_train_step(config: TrainConfig, graphdef, optimizer, schedule, mesh, state_shardings):
    """jit(state, batch) -> (state, metrics). ``batch``: global arrays sharded over the batch axes."""
    accum, piece, positions = config.grad_accum, config.logits_piece, config.data.loss_positions()

    def step(state, batch):
        params = state["params"]
        if accum == 1:
            (nll, (count, correct)), grads = jax.value_and_grad(loss_sums, has_aux=True)(
                params, graphdef, batch, piece, positions)
        else:
            def one(carry, micro):
                grads, nll, count, correct = carry
                (n, (c, r)), g = jax.value_and_grad(loss_sums, has_aux=True)(params, graphdef, micro, piece, positions)
                return (jax.tree.map(jnp.add, grads, g), nll + n, count + c, correct + r), None

            zeros = jax.tree.map(jnp.zeros_like, params)
            init = (zeros, jnp.zeros(()), jnp.zeros(()), jnp.zeros(()))
            (grads, nll, count, correct), _ = jax.lax.scan(one, init, _micro_batches(batch, accum))
        denominator = jnp.maximum(count, 1.0)
        grads = jax.tree.map(lambda g: g / denominator, grads)
        updates, opt_state = optimizer.update(grads, state["opt_state"], params)
        new_state = {
            "params": optax.apply_updates(params, updates),
            "opt_state": opt_state,
            "step": state["step"] + 1,
            "rng": jax.random.fold_in(state["rng"], state["step"]),
        }
        metrics = {
            "loss": nll / denominator,
            "accuracy": correct / denominator,
            "tokens": count,
            "grad_norm": optax.tree.norm(grads),
            "lr": schedule(state["step"]),
        }
        return new_state, metrics

    replicated = NamedSharding(mesh, P())
    return jax.jit(
        step,
        in_shardings=(state_shardings, batch_sharding(mesh)),
        out_shardings=(state_shardings, replicated),
        donate_argnums=0,
    )


def make_eval_step(graphdef, mesh, param_shardings, logits_piece: int | None = None,
                   loss_positions: int | None = None):
    """jit(params, batch) -> {"nll", "tokens", "correct"} sums over ``loss_mask`` tokens
    (``logits_piece`` and ``loss_positions`` as ``token_scores`` takes them)."""

    def evaluate(params, batch):
        nll, (count, correct) = loss_sums(params, graphdef, batch, logits_piece, loss_positions)
        return {"nll": nll, "tokens": count, "correct": correct}

    return jax.jit(evaluate, in_shardings=(param_shardings, batch_sharding(mesh)), out_shardings=NamedSharding(mesh, P()))
