"""The Triton pointer-jumping kernel of pallas_kernels.jax_triton (one program a row, every turn in
shared memory): in Triton's CPU interpreter against ``root_values_xla``, compiled for sm_90 on the
CPU at 4K and 32K keys, the launcher's checks, and on the GPU inside the selection."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dma_jax import live_ranges
from dma_jax.selection import slots
from pallas_kernels.jax_triton.chain_roots import MAX_LENGTH

ROOT = Path(__file__).resolve().parents[2]


def test_kernel_matches_pointer_jumping_in_triton_interpreter():
    """Random forests with chains up to T / 2 long, and the slot chains of a selection with two
    documents and a key mask: every row equal to the XLA reference."""
    pytest.importorskip("torch")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-m", "tests.kernels.chain_roots_interpreted"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    cases = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(case["differing_rows"] == 0 for case in cases.values()), cases
    assert cases["forest_512"]["deepest_chain"] > 256 and cases["selection_256_w16"]["deepest_chain"] > 2


@pytest.mark.parametrize("length", [4096, MAX_LENGTH])
def test_kernel_compiles_for_hopper_within_shared_memory(length):
    """Triton compiles the kernel for sm_90 here (no GPU needed); a row in shared memory fits the
    227 KiB a block may use up to MAX_LENGTH keys."""
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from pallas_kernels.jax_triton.chain_roots_kernel import num_warps, root_values_kernel, turns

    signature = {"Pointer": "*i32", "Values": "*i32", "Out": "*i32", "LENGTH": "constexpr", "TURNS": "constexpr"}
    kernel = triton.compile(ASTSource(root_values_kernel, signature, constexprs={"LENGTH": length, "TURNS": turns(length)}),
                            target=GPUTarget("cuda", 90, 32), options=dict(num_warps=num_warps(length)))
    assert 4 * length <= kernel.metadata.shared <= 227 * 1024
    assert "bar.sync" in kernel.asm["ptx"]


def test_launcher_rejects_rows_longer_than_shared_memory_holds():
    from pallas_kernels.jax_triton.chain_roots import root_values

    row = jnp.zeros((1, MAX_LENGTH + 1), jnp.int32)
    with pytest.raises(ValueError, match="exceed"):
        root_values(row, row)


def test_chain_roots_option_is_checked(monkeypatch):
    monkeypatch.setattr(slots, "CHAIN_ROOTS", "cuda")
    with pytest.raises(ValueError, match="DMA_CHAIN_ROOTS"):
        slots.root_values(jnp.zeros((1, 4), jnp.int32), jnp.zeros((1, 4), jnp.int32))


@pytest.mark.gpu
@pytest.mark.parametrize("length", [4096, 5000])
def test_selection_with_the_kernel_equals_xla_on_the_gpu(monkeypatch, length):
    """key_slots with CHAIN_ROOTS = "triton" equals the XLA gathers, at a power of two and at a
    length the launcher pads (two documents, w = 256)."""
    pytest.importorskip("jax_triton")
    rng = np.random.default_rng(length)
    bias = jnp.asarray(rng.normal(size=(2, 4, length)), jnp.float32)
    segment = jnp.asarray((np.arange(length) >= length // 3)[None].repeat(2, 0), jnp.int32)
    ends = live_ranges(bias, 256, segment_ids=segment)
    key_slots = lambda e: slots.key_slots(e, 256, segment_ids=segment, bias=bias)  # noqa: E731
    expected = np.asarray(jax.jit(key_slots)(ends))
    monkeypatch.setattr(slots, "CHAIN_ROOTS", "triton")
    got = np.asarray(jax.jit(key_slots)(ends))
    np.testing.assert_array_equal(got, expected)
    # every slot below w, and more keys kept than the first w of each document: chains were followed
    assert expected.max() < 256 and (expected >= 0).sum() > 2 * 4 * 2 * 256
