"""Shared test setup: an ``x64`` fixture for float64 checks; GPU tests skipped without a GPU.

The suite runs with JAX's default 32-bit types, like users do; tests that compare in
float64 ask for the ``x64`` fixture.
"""

import jax
import pytest


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
