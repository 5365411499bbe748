"""Batches prepared ahead on a background thread, with the iterator state of the batches handed out.

``Prefetch(iterator, prepare, depth)`` runs ``prepare(next(iterator))`` (train.py's prepare moves
the host batch to the devices) on a thread of its own, up to ``depth`` batches ahead of the
consumer, so that reading, packing and moving a batch overlap the step before it.

Checkpoints stay exact: ``get_state()`` is the wrapped iterator's state right after the last batch
this object handed out, not after the batches waiting in its queue, so a run resumed from it reads
the batch after the last one it trained on. ``get_state``/``set_state`` speak JSON bytes, which
grain's checkpoint handler writes and reads as they are for iterators that are not grain
``DatasetIterator`` s; the bytes are the text the handler writes for the wrapped iterator itself,
so a checkpoint saved through ``Prefetch`` restores into a plain iterator and back.

    with Prefetch(make_iterator(config.data), lambda b: global_batch(b, mesh), depth=2) as batches:
        batch = next(batches)           # on the devices
        checkpointer.save(step, state, batches)
"""

from __future__ import annotations

import json
import queue
import threading
from typing import Any, Callable, Iterator

_END = object()


class Prefetch:
    """An iterator over ``prepare(batch)`` for each batch of ``iterator``, ``depth`` (>= 1) ahead.

    An exception raised by the wrapped iterator or by ``prepare`` is raised by the ``next`` call
    that reaches it; the wrapped iterator's end ends this one.
    """

    def __init__(self, iterator: Iterator, prepare: Callable[[Any], Any], depth: int):
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"Prefetch depth must be a positive integer, got {depth!r}")
        self._iterator, self._prepare, self._depth = iterator, prepare, depth
        self._state = iterator.get_state()
        self._thread: threading.Thread | None = None
        self._start()

    def _start(self) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=self._depth)
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._fill, name="batch-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        """Queue ``item`` unless halted first; whether it was queued."""
        while not self._halt.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self) -> None:
        try:
            while not self._halt.is_set():
                batch = next(self._iterator)
                if not self._put((self._prepare(batch), self._iterator.get_state())):
                    return
        except StopIteration:
            self._put(_END)
        except BaseException as error:  # handed to the consumer, raised there
            self._put(error)

    def __iter__(self) -> "Prefetch":
        return self

    def __next__(self):
        item = self._queue.get()
        if item is _END:
            self._queue.put(_END)  # every later call ends too
            raise StopIteration
        if isinstance(item, BaseException):
            self._queue.put(item)
            raise item
        batch, self._state = item
        return batch

    def _stop(self) -> None:
        if self._thread is not None:
            self._halt.set()
            self._thread.join()
            self._thread = None

    def get_state(self) -> bytes:
        """The wrapped iterator's state after the last batch handed out, as JSON bytes."""
        return json.dumps(self._state, indent=4).encode()

    def set_state(self, state: bytes | str | dict) -> None:
        """Drop the batches read ahead, move the wrapped iterator to ``state`` and read on from there."""
        self._stop()
        self._state = json.loads(state) if isinstance(state, (bytes, str)) else state
        self._iterator.set_state(self._state)
        self._start()

    def start_prefetch(self) -> None:
        """grain's checkpoint handler calls this after ``set_state``; reading ahead has restarted already."""

    def close(self) -> None:
        """Stop the background thread (the batches read ahead are dropped)."""
        self._stop()

    def __enter__(self) -> "Prefetch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
