"""Kernels written in the Triton language and launched with ``jax_triton.triton_call`` (CUDA only;
each kernel file imports only Triton, so it also runs in Triton's CPU interpreter for tests).

- ``forward_kernel.py`` and ``forward.py``: ``dma_forward``, what
  ``pallas_kernels.gpu.forward.dma_forward`` computes, in the sequence layout; selected with
  ``PallasConfig(forward_backend="jax_triton")``.
- ``chain_roots_kernel.py`` and ``chain_roots.py``: ``root_values``, the selection's pointer
  jumping in one kernel (``dma_jax.selection.slots.root_values_xla`` is its reference); selected
  with ``DMA_CHAIN_ROOTS=triton``.
"""
