"""tests/case_tables.case_params: ids, the slow mark, unpacked values, and a misspelt slow name."""

import pytest

from case_tables import case_params


def test_case_params_mark_the_named_slow_cases_and_refuse_unknown_names():
    params = case_params({"fast": 1, "long": 2}, {"long"})
    assert [(p.id, p.values, [m.name for m in p.marks]) for p in params] == [("fast", (1,), []), ("long", (2,), ["slow"])]
    [pair] = case_params({"pair": ("case", "config")}, set(), unpack=True)
    assert pair.values == ("case", "config")
    with pytest.raises(ValueError, match="lnog"):
        case_params({"fast": 1, "long": 2}, {"lnog"})
