"""dma_jax.timing: warm-up calls are not timed, every timed call is waited for, bad counts fail."""

import pytest

from dma_jax.timing import median_seconds, timed_runs


def test_warmup_calls_are_not_timed_and_every_repeat_is():
    calls = []
    times = timed_runs(lambda x: calls.append(x) or x, 3, repeats=4, warmup=2)
    assert calls == [3] * 6 and len(times) == 4 and all(t >= 0 for t in times)
    assert median_seconds(lambda: 1, repeats=3, warmup=0) >= 0


def test_at_least_one_timed_call():
    with pytest.raises(ValueError, match="repeats"):
        timed_runs(lambda: 1, repeats=0)
