"""Training entry point: not built yet.

It will train the decoder LM of ``dma_jax.models`` with any attention kind (dma, mha, swa,
mla, nsa) from a config in ``configs/``: grain data pipelines, optax AdamW with a
warmup-stable-decay schedule, Orbax checkpoints with exact resumption, and multi-device
sharding. Until then it refuses to run rather than pretend; ``python -m dma_jax.demo`` is
the project's main job for now.
"""

import sys

if __name__ == "__main__":
    sys.exit("train.py is not implemented yet (see its docstring); run `python -m dma_jax.demo` instead")
