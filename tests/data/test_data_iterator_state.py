"""The data iterator resumes exactly from a saved state, via JSON and via Orbax with the model, also
when worker processes make its batches."""

import dataclasses
import json

import numpy as np
import orbax.checkpoint as ocp
import pytest

from dma_jax.data import (DataConfig, data_state_restore_args, data_state_save_args, iterator_state_json,
                          make_iterator, restore_iterator_state)

CONFIG = DataConfig(kind="mqar", seq_len=64, global_batch_size=4, vocab_size=300, mqar_num_kv_pairs=4,
                    mqar_num_train_examples=10)      # 10 rows: resuming crosses an epoch boundary


def take(iterator, n):
    return [next(iterator)["inputs"] for _ in range(n)]


@pytest.mark.parametrize("k, n", [(0, 3), (2, 5), (7, 4)], ids=["start", "mid-epoch", "later-epoch"])
def test_json_state_round_trip(k, n):
    iterator = make_iterator(CONFIG)
    take(iterator, k)
    state = iterator_state_json(iterator)
    expected = take(iterator, n)
    resumed = restore_iterator_state(make_iterator(CONFIG), state)
    np.testing.assert_array_equal(take(resumed, n), expected)
    assert len(state) < 100


def test_orbax_composite_with_model_state(tmp_path):
    iterator = make_iterator(CONFIG, process_index=1, process_count=2)
    take(iterator, 3)
    params = {"w": np.arange(6.0).reshape(2, 3)}
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.save(3, args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                                data=data_state_save_args(iterator)))
        manager.wait_until_finished()
    expected = take(iterator, 4)
    fresh = make_iterator(CONFIG, process_index=1, process_count=2)
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        restored = manager.restore(3, args=ocp.args.Composite(params=ocp.args.StandardRestore(params),
                                                              data=data_state_restore_args(fresh)))
    np.testing.assert_array_equal(restored["params"]["w"], params["w"])
    np.testing.assert_array_equal(take(fresh, 4), expected)
    assert take(make_iterator(CONFIG, process_index=1, process_count=2), 1)[0].tobytes() != expected[0].tobytes()


def test_worker_processes_make_the_same_batches_and_resume():
    """data.read_processes = 1: the batches of the in-process iterator, in order, across an epoch
    boundary; set back to a saved JSON state it repeats them (one worker start, ~5 s on a CPU)."""
    expected = take(make_iterator(CONFIG), 9)
    iterator = make_iterator(dataclasses.replace(CONFIG, read_processes=1))
    try:
        np.testing.assert_array_equal(take(iterator, 4), expected[:4])
        state = iterator_state_json(iterator)
        assert json.loads(state).keys() != make_iterator(CONFIG).get_state().keys()   # workers' state
        np.testing.assert_array_equal(take(iterator, 5), expected[4:])
        restore_iterator_state(iterator, state)
        np.testing.assert_array_equal(take(iterator, 5), expected[4:])
    finally:
        iterator.close()
