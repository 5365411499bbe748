"""dma_jax.training.optimizer: the WSD schedule, clipping and the weight-decay mask."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dma_jax.training.optimizer import OptimConfig, make_optimizer, wsd_schedule


def test_wsd_schedule_shape():
    config = OptimConfig(peak_lr=1.0, warmup_steps=10, decay_fraction=0.2, min_lr_ratio=0.1)
    lr = np.array([float(wsd_schedule(config, 100)(s)) for s in range(100)])
    np.testing.assert_allclose(lr[:10], np.arange(1, 11) / 10, rtol=1e-6)  # warmup, no step at 0
    np.testing.assert_allclose(lr[10:80], 1.0)  # stable
    assert np.all(np.diff(lr[80:]) < 0) and lr[-1] == pytest.approx(1.0 - 0.9 * 19 / 20)  # decay towards 0.1
    assert lr[80] == pytest.approx(1.0)


def test_wsd_without_warmup_or_decay():
    lr = wsd_schedule(OptimConfig(peak_lr=2.0, warmup_steps=0, decay_fraction=0.0), 50)
    assert [float(lr(s)) for s in (0, 25, 49)] == [2.0, 2.0, 2.0]


def test_clipping_bounds_the_first_update():
    params = {"w": jnp.ones((4, 4)), "b": jnp.ones((4,))}
    grads = jax.tree.map(lambda p: 1e6 * jnp.ones_like(p), params)
    for clip in (1.0, None):
        opt = make_optimizer(OptimConfig(peak_lr=1.0, warmup_steps=0, weight_decay=0.0, clip_norm=clip), 10)
        updates, _ = opt.update(grads, opt.init(params), params)
        # Adam normalises the step either way; the clipped gradient reaches the moments scaled down.
        assert np.all(np.isfinite(np.asarray(updates["w"])))
    clipped = make_optimizer(OptimConfig(peak_lr=1.0, warmup_steps=0, weight_decay=0.0, clip_norm=1.0), 10)
    state = clipped.init(params)
    _, state = clipped.update(grads, state, params)
    first_moment = state[1][0].mu["w"]
    total = np.sqrt(sum(float(jnp.sum(g**2)) for g in jax.tree.leaves(grads)))
    np.testing.assert_allclose(np.asarray(first_moment), 0.1 * 1e6 / total, rtol=1e-5)


def test_weight_decay_skips_vectors():
    params = {"w": jnp.ones((4, 4)), "scale": jnp.ones((4,))}
    zeros = jax.tree.map(jnp.zeros_like, params)
    opt = make_optimizer(OptimConfig(peak_lr=0.1, warmup_steps=0, weight_decay=0.5, clip_norm=None), 10)
    updates, _ = opt.update(zeros, opt.init(params), params)
    np.testing.assert_allclose(np.asarray(updates["w"]), -0.1 * 0.5)
    np.testing.assert_allclose(np.asarray(updates["scale"]), 0.0)
