"""Checkpointing a data iterator's position with the model (Orbax) or as JSON.

A grain ``DatasetIterator`` from ``make_iterator`` has a small state (e.g. ``{"next_index": 1234}``)
from which a fresh iterator over the same dataset resumes exactly. With an Orbax
``CheckpointManager`` put it next to the model state in a ``Composite``::

    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               data=data_state_save_args(iterator)))
    manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                  data=data_state_restore_args(iterator)))

grain's handler writes one ``process_<i>-of-<n>.json`` per process (index and count from JAX), so
every process saves and restores its own slice's position; restore mutates ``iterator`` in place.
"""

from __future__ import annotations

import json

import grain


def data_state_save_args(iterator: grain.DatasetIterator) -> "grain.checkpoint.CheckpointSave":
    """Orbax ``CheckpointArgs`` that save ``iterator``'s state (an item of ``ocp.args.Composite``)."""
    return grain.checkpoint.CheckpointSave(iterator)


def data_state_restore_args(iterator: grain.DatasetIterator) -> "grain.checkpoint.CheckpointRestore":
    """Orbax ``CheckpointArgs`` that restore into ``iterator`` (a fresh one over the same dataset)."""
    return grain.checkpoint.CheckpointRestore(iterator)


def iterator_state_json(iterator: grain.DatasetIterator) -> str:
    """The iterator's state as a JSON string (for logs or checkpoints without Orbax)."""
    return json.dumps(iterator.get_state(), sort_keys=True)


def restore_iterator_state(iterator: grain.DatasetIterator, state_json: str) -> grain.DatasetIterator:
    """Set ``iterator`` to a state from ``iterator_state_json``; returns the same iterator."""
    iterator.set_state(json.loads(state_json))
    return iterator
