"""The DMA op and its implementations.

- ``attention.py``: the public ``dma_attention``, which checks its arguments and dispatches on
  ``implementation`` (a name or one config object per path);
- ``reference.py``: the dense specification (``dma_attention_reference``, ``selection_mask``);
- ``xla.py``: gathered key tiles in plain XLA (``XlaConfig``), for any backend;
- ``dense.py``: the dense regime (window None or >= Tk) as dense attention with the bias folded
  into extra head columns, on cuDNN (``DenseConfig``), taken by itself on a GPU;
- ``pallas_gpu.py``, ``pallas_tpu.py``: the custom-VJP wrappers of the Pallas GPU and TPU kernels
  (``PallasConfig``, ``PallasTpuConfig``), which lay out the inputs and call
  ``dma_jax.selection.key_tables`` for the kernels' index tables.
"""

from dma_jax.ops.attention import IMPLEMENTATIONS, choose_path, dma_attention, resolve_implementation
from dma_jax.ops.dense import DenseConfig
from dma_jax.ops.pallas_gpu import PallasConfig
from dma_jax.ops.pallas_tpu import PallasTpuConfig
from dma_jax.ops.reference import dma_attention_reference, masked_softmax, selection_mask, visible_mask
from dma_jax.ops.xla import XlaConfig

__all__ = [
    "DenseConfig",
    "IMPLEMENTATIONS",
    "PallasConfig",
    "PallasTpuConfig",
    "XlaConfig",
    "choose_path",
    "dma_attention",
    "dma_attention_reference",
    "masked_softmax",
    "resolve_implementation",
    "selection_mask",
    "visible_mask",
]
