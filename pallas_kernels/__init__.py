"""Pallas kernels for dynamic mask attention (GPU through Triton or Mosaic GPU, TPU).

Empty for now: the kernels, each beside its reference, are built in the kernels issue and
plug in behind ``dma_jax.dma_attention(implementation="pallas")``. Until then that call
raises ``NotImplementedError`` and ``implementation=None`` uses the XLA path.
"""
