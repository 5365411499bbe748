"""dma_jax.data.prefetch: the same batches in the same order, read ahead; its state is that of the
batches handed out, in checkpoints too; errors reach the consumer; training with it resumes
exactly and logs what training without it logs."""

import dataclasses
import json

import numpy as np
import orbax.checkpoint as ocp
import pytest

from dma_jax.data import DataConfig, data_state_restore_args, data_state_save_args, make_iterator
from dma_jax.data.prefetch import Prefetch
from dma_jax.training.loop import train
from small_runs import small_config

CONFIG = DataConfig(kind="mqar", seq_len=16, global_batch_size=2, vocab_size=64, mqar_num_kv_pairs=2,
                    mqar_num_train_examples=6, mqar_num_eval_examples=5)  # 3 batches an epoch; 3 eval batches


def inputs(batch):
    return np.asarray(batch["inputs"])


def test_same_batches_and_the_state_of_those_handed_out():
    plain = make_iterator(CONFIG)
    with Prefetch(make_iterator(CONFIG), lambda b: {"inputs": inputs(b) + 0}, depth=3) as ahead:
        for _ in range(5):  # across an epoch boundary
            np.testing.assert_array_equal(inputs(next(ahead)), inputs(next(plain)))
            assert json.loads(ahead.get_state()) == plain.get_state()


def test_set_state_drops_what_was_read_ahead():
    with Prefetch(make_iterator(CONFIG), lambda b: b, depth=2) as ahead:
        next(ahead)
        state = ahead.get_state()
        expected = [inputs(next(ahead)) for _ in range(4)]
        ahead.set_state(state)
        np.testing.assert_array_equal([inputs(next(ahead)) for _ in range(4)], expected)


def test_a_checkpoint_through_prefetch_restores_into_a_plain_iterator(tmp_path):
    with Prefetch(make_iterator(CONFIG), lambda b: b, depth=2) as ahead:
        next(ahead), next(ahead)
        with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
            manager.save(2, args=ocp.args.Composite(data=data_state_save_args(ahead)))
            manager.wait_until_finished()
        expected = [inputs(next(ahead)) for _ in range(3)]
    fresh = make_iterator(CONFIG)
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.restore(2, args=ocp.args.Composite(data=data_state_restore_args(fresh)))
    np.testing.assert_array_equal([inputs(next(fresh)) for _ in range(3)], expected)
    with Prefetch(make_iterator(CONFIG), lambda b: b, depth=1) as ahead, \
            ocp.CheckpointManager(tmp_path / "ckpt") as manager:  # and back: a plain iterator's checkpoint
        manager.restore(2, args=ocp.args.Composite(data=data_state_restore_args(ahead)))
        np.testing.assert_array_equal([inputs(next(ahead)) for _ in range(3)], expected)


def test_errors_and_the_end_reach_the_consumer():
    finite = make_iterator(CONFIG, "validation")  # 3 batches, then StopIteration
    with Prefetch(finite, lambda b: b, depth=2) as ahead:
        assert len(list(ahead)) == 3
        with pytest.raises(StopIteration):
            next(ahead)

    def prepare(batch):
        raise RuntimeError("cannot move this batch")

    with Prefetch(make_iterator(CONFIG), prepare, depth=2) as ahead, pytest.raises(RuntimeError, match="cannot move"):
        next(ahead)
    with pytest.raises(ValueError, match="positive integer"):
        Prefetch(make_iterator(CONFIG), lambda b: b, depth=0)


def test_training_with_prefetch_resumes_exactly_and_logs_what_training_without_it_logs(tmp_path):
    timings = ("tokens_per_s", "step_time_s", "mfu", "peak_memory_gib")
    comparable = lambda records: [{k: v for k, v in r.items() if k not in timings} for r in records]  # noqa: E731
    config = small_config(steps=6, eval_every=3, checkpoint_every=2)
    ahead = dataclasses.replace(config, data=dataclasses.replace(config.data, device_prefetch=2))
    whole = comparable(train(config, tmp_path / "plain", progress=False))
    split = train(ahead, tmp_path / "ahead", stop_after=3, progress=False)  # stops at 3: the batches of 4, 5 were read
    split += train(ahead, tmp_path / "ahead", progress=False)
    assert comparable(split) == whole
