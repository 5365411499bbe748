"""Pointer jumping in one Triton program per row (no JAX here: ``chain_roots.py`` launches it).

A row is a forest over positions ``[0, LENGTH)``: ``pointer[i]`` is i's parent, a root points to
itself. After k turns of ``p = p[p]`` every position points 2^k steps up its path (or to its
root), so ``TURNS = ceil(log2(LENGTH))`` turns reach every root. Program r loads row r's pointers
into registers and runs all the turns there: each turn is one ``tl.gather``, which Triton lowers
through shared memory within the program. The same turns in XLA are one gather kernel each
(12 launches at 4K keys), which is what this kernel folds into one.

Arrays are int32 (ROWS, LENGTH), contiguous, LENGTH a power of two (``tl.arange``); the output
is ``values[root(i)]`` for every position i of the row.

Reference: ``dma_jax.selection.slots.root_values_xla``.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def root_values_kernel(Pointer, Values, Out, LENGTH: tl.constexpr, TURNS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64) * LENGTH
    positions = tl.arange(0, LENGTH)
    pointer = tl.load(Pointer + row + positions)
    for _ in tl.static_range(TURNS):
        pointer = tl.gather(pointer, pointer, 0)
    values = tl.load(Values + row + positions)
    tl.store(Out + row + positions, tl.gather(values, pointer, 0))


def turns(length: int) -> int:
    """Jumps that reach every root of a row of ``length`` positions (at least one)."""
    return max(1, (length - 1).bit_length())


def num_warps(length: int) -> int:
    """Warps per program: 256 positions a warp, 4 to 16."""
    return max(4, min(16, length // 256))
