"""benchmarks/kernel_ptx.py: the kernels' Triton IR is caught on the CPU; with Triton installed,
it compiles for sm_90 and the report reads registers, spills and matrix instructions."""

import pytest

from benchmarks.kernel_ptx import compile_report, kernel_role, triton_modules
from dma_jax.ops.pallas_gpu import PallasConfig


@pytest.fixture(scope="module")
def modules():
    return triton_modules(PallasConfig(), length=512, window=128, head_dim=64)


def test_the_three_attention_kernels_are_caught_as_triton_ir(modules):
    roles = [kernel_role(name, i) for i, (name, _) in enumerate(modules)]
    assert roles == ["forward", "queries", "slots"]
    assert all("tt.func public" in text and "tt.dot" in text for _, text in modules)


def test_compile_report_reads_ptxas(modules):
    pytest.importorskip("triton")
    report = compile_report(modules[0][1], num_warps=4, num_stages=2)
    assert report["ptxas_ok"] and 0 < report["registers"] <= 255
    assert report["wgmma"] + report["mma_sync"] > 0 and report["shared_bytes"] > 0
