"""Pallas GPU kernels for dynamic mask attention (the Triton lowering of Pallas).

- ``dma_forward`` (``forward.py``): gathered key tiles, online softmax, exact live-range mask.
- ``dma_backward_queries``, ``dma_backward_slots`` (``backward.py``): the deterministic two-pass
  backward (query-major dq + own keys; key-major slot walk), no atomics.
- ``common.py``: launch options, the gathered and masked score block, the launch helper.
- ``reference.py``: ``interval_attention_reference``, what they compute, densely, for tests.

``dma_jax/ops/pallas_gpu.py`` wires them behind ``dma_attention(implementation="pallas")`` with a
custom VJP. On the GPU they compile through the Triton lowering of Pallas, which JAX 0.11
deprecates (it warns when a kernel is lowered); on the CPU they run in interpret mode, for tests.
"""
