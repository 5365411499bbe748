"""Pallas TPU (Mosaic) kernels for dynamic mask attention: the GPU kernels' sparse-gather design.

- ``dma_forward_tpu`` (``forward.py``): key chunks gathered by row DMAs from HBM into VMEM,
  double-buffered, online softmax on the MXU with the exact mask.
- ``dma_backward_queries_tpu``, ``dma_backward_slots_tpu`` (``backward.py``): the
  deterministic two-pass backward (query-major dq + own keys; key-major slot walk with
  VMEM-resident slots).
- ``common.py``: launch options, the double-buffered gather, masking, BlockSpecs.
- ``reference.py``: ``list_attention_reference``, what the forward computes, densely, for tests.

``dma_jax/ops/pallas_tpu.py`` wires them behind ``dma_attention(implementation="pallas_tpu")``.
Verified in TPU interpret mode on the CPU only (``tests/ops/test_pallas_tpu.py``,
``tests/kernels/test_tpu_kernels.py``); docs/tpu.md lists what a first TPU run must check.
"""
