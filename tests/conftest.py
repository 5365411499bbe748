"""Shared test setup: an ``x64`` fixture for float64 checks; GPU tests skipped without a GPU.

The tests mirror the packages (``tests/ops`` for ``dma_jax.ops``, ``tests/selection`` for
``dma_jax.selection``, ``tests/kernels`` for ``pallas_kernels``, ...); the helper modules beside this
file (``naive.py``, ``problems.py``, ``small_runs.py``) are importable from every folder.

The suite runs with JAX's default 32-bit types, like users do; tests that compare in
float64 ask for the ``x64`` fixture.

Most of the suite's time is XLA compiling small programs for the CPU, so the tests (and the
train.py / eval.py processes they start, which inherit the environment) compile with LLVM's
optimisations off unless ``XLA_FLAGS`` is already set: about a fifth less time, and no change to
floating-point results (XLA's CPU backend does not use fast-math, so LLVM may not reorder them).
Each process also runs XLA's Eigen operations on one thread: the pytest workers already outnumber
the cores.

They also share JAX's persistent compilation cache (``.pytest_cache/jax_compilation_cache`` unless
``JAX_COMPILATION_CACHE_DIR`` is set): programs that take a second or more to compile, such as the
smoke model's train step that many train.py processes build, compile once per run of the suite. A
4-step train.py run of ``configs/smoke.py`` takes 4.6 s with the program cached against 8.4 s
without.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
                      "--xla_cpu_multi_thread_eigen=false")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      str(Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax_compilation_cache"))

import jax  # noqa: E402
import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def x64():
    """Enable float64/int64 inside one test."""
    with jax.enable_x64(True):
        yield


def pytest_collection_modifyitems(config, items):
    if any(d.platform == "gpu" for d in jax.devices()):
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run on the GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
