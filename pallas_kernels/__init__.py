"""Pallas kernels for dynamic mask attention, each beside its dense reference.

- ``pallas_kernels.gpu``: the GPU kernels (forward, two-pass deterministic backward), through the
  Triton lowering of Pallas.
- ``pallas_kernels.mosaic_gpu``: the forward in Pallas Mosaic GPU (Hopper), the fastest measured.
- ``pallas_kernels.jax_triton``: the forward in the Triton language, launched with jax-triton.
- ``pallas_kernels.tpu``: the same design for Pallas TPU (Mosaic), verified in TPU interpret mode.
- ``shared.py``: what both share (the mask value, output shapes inside ``shard_map``).

They take index tables and live ranges prepared by ``dma_jax.selection`` (the wrappers in
``dma_jax/ops/`` build them and define the custom VJPs); nothing here chooses which keys are kept.
"""
