"""Random attention problems shared by the test files."""

import numpy as np


def random_qkv(rng: np.random.Generator, case):
    """Standard-normal float64 q (B, Tq, H, D), k and v (B, Tk, Hkv, D) for a test case.

    ``case`` has batch, q_len, kv_len, heads, kv_heads and head_dim attributes.
    """
    q = rng.standard_normal((case.batch, case.q_len, case.heads, case.head_dim))
    k = rng.standard_normal((case.batch, case.kv_len, case.kv_heads, case.head_dim))
    v = rng.standard_normal((case.batch, case.kv_len, case.kv_heads, case.head_dim))
    return q, k, v
