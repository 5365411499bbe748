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
    training loop runs them (a single waited-for call also pays dispatch and the host round trip)."""
    if calls < 1:
        raise ValueError(f"calls must be >= 1, got {calls}")
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    outputs = [fn(*args) for _ in range(calls)]
    jax.block_until_ready(outputs)
    return (time.perf_counter() - start) / calls
