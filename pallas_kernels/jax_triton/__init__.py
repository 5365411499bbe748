"""The GPU forward kernel written in the Triton language and launched with ``jax_triton.triton_call``.

- ``forward_kernel.py``: the kernel (Triton only; it also runs in Triton's CPU interpreter).
- ``forward.py``: ``dma_forward``, its JAX launch (CUDA only).

It computes what ``pallas_kernels.gpu.forward.dma_forward`` computes, in the sequence layout,
and is selected with ``PallasConfig(forward_backend="jax_triton")``.
"""
