"""Pallas kernels for dynamic mask attention, each beside its dense reference.

- ``dma_forward``: gathered-tile forward with an online softmax (``dma_forward.py``).
- ``dma_backward_queries``, ``dma_backward_slots``: the deterministic two-pass backward
  (``dma_backward.py``).
- ``reference.interval_attention_reference``: what they compute, densely, for tests.

They take index tables and live ranges prepared by ``dma_jax`` (``dma_jax/pallas_attention.py``
wires them behind ``dma_attention(implementation="pallas")`` with a custom VJP). GPU: the
Triton lowering of Pallas; CPU: interpret mode, for tests. ``pallas_kernels.tpu`` holds the same
design for Pallas TPU (Mosaic), verified in TPU interpret mode only (docs/tpu.md).
"""
