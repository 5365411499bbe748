"""Wall-clock timing of JAX calls: every benchmark, demo and throughput number uses these."""

from __future__ import annotations

import statistics
import time

import jax


def timed_runs(fn, *args, repeats: int, warmup: int = 2) -> list[float]:
    """Seconds of each of ``repeats`` calls ``fn(*args)``, after ``warmup`` untimed calls (the
    first compiles). Each call is waited for (``jax.block_until_ready``) before the clock stops."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return times


def median_seconds(fn, *args, repeats: int, warmup: int = 2) -> float:
    """Median of ``timed_runs``: robust to the odd slow call."""
    return statistics.median(timed_runs(fn, *args, repeats=repeats, warmup=warmup))


def amortised_seconds(fn, *args, calls: int, warmup: int = 2) -> float:
    """Seconds per call of ``calls`` back-to-back calls ``fn(*args)`` with one wait at the end, as a
    training loop runs them (a single waited-for call also pays dispatch and the host round trip).

    Only the latest call's output is kept, as a training loop keeps only its latest state: a device
    runs one program after another, so the last one's end is the batch's end. (Keeping all of them
    held ``calls`` sets of outputs in device memory at once: 100 forward+backward calls of a 2K model
    layer kept about 40 GB alive and ran 1.5x slower than single calls on an H100.)"""
    if calls < 1:
        raise ValueError(f"calls must be >= 1, got {calls}")
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    output = None
    for _ in range(calls):
        output = fn(*args)
    jax.block_until_ready(output)
    return (time.perf_counter() - start) / calls
