"""Pallas Mosaic GPU (Hopper) kernels for dynamic mask attention.

- ``dma_forward_mosaic`` (``forward.py``): the Mosaic GPU backend of the forward kernel
  (``PallasConfig(forward_backend="mosaic_gpu")``), with the contract of
  ``pallas_kernels.gpu.forward.dma_forward`` in its sequence layout (``bias_heads`` given):
  warpgroup MMA for QK^T and PV, TMA for the query tile, the table row and the output, gathered
  key/value rows (and each key's bias and live range) copied into swizzled shared memory with
  ``cp.async`` in a multi-stage pipeline, online softmax.
- ``dma_backward_queries_mosaic`` (``backward_queries.py``) and ``dma_backward_slots_mosaic``
  (``backward_slots.py``): the query-major and key-major backward passes
  (``PallasConfig(backward_backend="mosaic_gpu")``), with the contracts of
  ``pallas_kernels.gpu.backward`` (tile layout); the same gathers and pipeline.

Unlike ``pallas_kernels.gpu`` this does not go through the (deprecated) Triton lowering of
Pallas; it needs ``jax.experimental.pallas.mosaic_gpu`` and an sm_90 GPU to run. Without a GPU
its argument checks run, and it lowers for CUDA (``tests/ops/test_gpu_lowering.py``); Mosaic GPU
is imported lazily.
"""

from pallas_kernels.mosaic_gpu.backward_queries import dma_backward_queries_mosaic
from pallas_kernels.mosaic_gpu.backward_slots import dma_backward_slots_mosaic
from pallas_kernels.mosaic_gpu.forward import dma_forward_mosaic

__all__ = ["dma_backward_queries_mosaic", "dma_backward_slots_mosaic", "dma_forward_mosaic"]
