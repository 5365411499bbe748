"""Named case tables for ``pytest.mark.parametrize``: one ``pytest.param`` per case, its name for
the test id, and the ``slow`` mark on the cases a table names as slow (the slow tier; CI runs the
rest)."""

import pytest


def case_params(cases: dict, slow: set[str], *, unpack: bool = False) -> list:
    """``pytest.param(value, id=name)`` for each (name, value) of ``cases``, marked ``slow`` where
    the name is in ``slow``; ``unpack`` passes a tuple value as several arguments. A name in
    ``slow`` that is not a case is an error, so that a renamed case cannot leave CI by accident."""
    unknown = set(slow) - set(cases)
    if unknown:
        raise ValueError(f"slow cases {sorted(unknown)} are not in the table")
    return [pytest.param(*(value if unpack else (value,)), id=name, marks=[pytest.mark.slow] if name in slow else [])
            for name, value in cases.items()]
