"""Pallas TPU (Mosaic) kernels for dynamic mask attention: the GPU kernels' sparse-gather design.

- ``dma_forward_tpu`` (``dma_forward.py``): key chunks gathered by row DMAs from HBM into VMEM,
  double-buffered, online softmax on the MXU with the exact mask.
- ``dma_backward_queries_tpu``, ``dma_backward_slots_tpu`` (``dma_backward.py``): the
  deterministic two-pass backward (query-major dq + own keys; key-major slot walk with
  VMEM-resident slots).
- ``common.py``: launch options, the double-buffered gather, masking, BlockSpecs.

Reference: ``pallas_kernels.reference.interval_attention_reference``. ``dma_jax/pallas_tpu_attention.py``
wires them behind ``dma_attention(implementation="pallas_tpu")``. Verified in TPU interpret mode
on the CPU only (``tests/test_pallas_tpu.py``); docs/tpu.md lists what a first TPU run must check.
"""
