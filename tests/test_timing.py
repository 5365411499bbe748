"""dma_jax.timing: warm-up calls are not timed, every timed call is waited for, bad counts fail."""

import pytest

from dma_jax.timing import amortised_seconds, median_seconds, timed_runs


def test_warmup_calls_are_not_timed_and_every_repeat_is():
    calls = []
    times = timed_runs(lambda x: calls.append(x) or x, 3, repeats=4, warmup=2)
    assert calls == [3] * 6 and len(times) == 4 and all(t >= 0 for t in times)
    assert median_seconds(lambda: 1, repeats=3, warmup=0) >= 0


def test_at_least_one_timed_call():
    with pytest.raises(ValueError, match="repeats"):
        timed_runs(lambda: 1, repeats=0)


def test_amortised_calls_keep_only_the_latest_output_alive():
    """A training loop holds its latest state, not every step's: outputs of earlier calls are let go."""
    live, most = [0], [0]

    class Output:
        def __init__(self):
            live[0] += 1
            most[0] = max(most[0], live[0])

        def __del__(self):
            live[0] -= 1

    assert amortised_seconds(Output, calls=20, warmup=1) >= 0
    assert most[0] <= 2  # the one being made beside the latest
    with pytest.raises(ValueError, match="calls"):
        amortised_seconds(Output, calls=0)
