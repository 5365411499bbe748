"""benchmarks/rank_sort.py: its two forms of the rank sort give the same order, and it writes JSON."""

import json

import jax.numpy as jnp
import numpy as np

from benchmarks.rank_sort import FORMS, main


def test_forms_agree_with_ties_and_invalid_keys():
    bias = jnp.asarray([[0.5, -0.0, 0.0, 0.5, -jnp.inf, 2.0, 0.5, jnp.nan]])
    valid = jnp.asarray([[True, True, True, True, False, False, True, False]])
    orders = [np.asarray(form(bias, valid)) for form in FORMS.values()]
    np.testing.assert_array_equal(orders[0], [[6, 3, 0, 2, 1, 7, 5, 4]])
    for order in orders[1:]:
        np.testing.assert_array_equal(order, orders[0])


def test_main_writes_rows(tmp_path):
    out = tmp_path / "rank_sort.json"
    main(["--lengths", "64", "--rows", "2", "--repeats", "1", "--calls", "2", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [row["form"] for row in rows] == list(FORMS)
    assert all(row["amortised_ms"] > 0 for row in rows)
