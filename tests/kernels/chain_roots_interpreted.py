"""Run the Triton pointer-jumping kernel in Triton's CPU interpreter against
``dma_jax.selection.slots.root_values_xla``; print one JSON line {case: rows that differ}.
``TRITON_INTERPRET=1`` must be set before Triton is first imported, so
``test_jax_triton_chain_roots.py`` runs this in a subprocess:

    TRITON_INTERPRET=1 python -m tests.kernels.chain_roots_interpreted
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import torch

from dma_jax import live_ranges
from dma_jax.selection.slots import _row_chains, root_values_xla
from pallas_kernels.jax_triton.chain_roots_kernel import num_warps, root_values_kernel, turns


def random_forest(rng, rows, length):
    """Each position's parent at or before it; about one root in eight; chains as long as T."""
    parent = np.arange(length)[None, :] - rng.integers(0, 3, (rows, length)) * (rng.random((rows, length)) > 0.125)
    parent = np.maximum(parent, 0).astype(np.int32)
    parent[:, -length // 2:] = np.arange(length // 2 - 1, length - 1)  # one chain of length T / 2
    return parent, rng.integers(0, 1000, (rows, length)).astype(np.int32)


def selection_chains(seed, length, window):
    """The slot chains of a causal selection with two packed documents and a key mask."""
    rng = np.random.default_rng(seed)
    bias = jnp.asarray(rng.normal(size=(2, 2, length)), jnp.float32)
    segment = jnp.asarray(np.repeat([[0, 1]], [length // 3, length - length // 3], axis=1).repeat(2, 0), jnp.int32)
    mask = jnp.asarray(rng.random((2, length)) > 0.1)
    ends = live_ranges(bias, window, segment_ids=segment, key_mask=mask)
    valid = mask[:, None, :] & jnp.ones((2, 2, length), bool)
    row = lambda e, v, s: _row_chains(e, v, s, window)  # noqa: E731
    pointer, rank, _ = jax.vmap(jax.vmap(row, in_axes=(0, 0, None)))(ends, valid, segment)
    return np.asarray(pointer).reshape(4, length), np.asarray(rank).reshape(4, length)


def deepest_chain(pointer):
    """Parent steps from the deepest position to its root."""
    current, depth = np.broadcast_to(np.arange(pointer.shape[1]), pointer.shape).copy(), 0
    while (np.take_along_axis(pointer, current, 1) != current).any():
        current, depth = np.take_along_axis(pointer, current, 1), depth + 1
    return depth


def differing_rows(pointer, values):
    rows, length = pointer.shape
    out = torch.full((rows, length), -7, dtype=torch.int32)
    root_values_kernel[(rows,)](torch.from_numpy(pointer.copy()), torch.from_numpy(values.copy()), out, LENGTH=length,
                                TURNS=turns(length), num_warps=num_warps(length))
    expected = np.asarray(root_values_xla(jnp.asarray(pointer), jnp.asarray(values)))
    return int((out.numpy() != expected).any(axis=1).sum())


if __name__ == "__main__":
    rng = np.random.default_rng(0)
    cases = {"forest_64": random_forest(rng, 3, 64), "forest_512": random_forest(rng, 2, 512),
             "selection_256_w16": selection_chains(1, 256, 16)}
    print(json.dumps({name: {"differing_rows": differing_rows(*case), "deepest_chain": deepest_chain(case[0])}
                      for name, case in cases.items()}))
