"""A tiny DMA model learning MQAR, no corpus needed: the quickest end-to-end check of train.py.

Hardware: a CPU. Time: 21 s on 2 CPU cores, start-up and compilation included (200 steps; JAX
0.10.2, with another job on the second core). Size: 140K parameters (d_model 64, 2 layers),
rows of 64 tokens, 32 a step.

    python train.py --config configs/smoke.py --workdir runs/smoke
"""

from dma_jax.data import DataConfig
from dma_jax.models import ModelConfig
from dma_jax.training.config import TrainConfig
from dma_jax.training.optimizer import OptimConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        model=ModelConfig.preset("tiny", attention="dma", window=16, implementation="xla"),
        data=DataConfig(kind="mqar", seq_len=64, global_batch_size=32, vocab_size=256, mqar_num_kv_pairs=4,
                        mqar_num_eval_examples=256),
        optim=OptimConfig(peak_lr=3e-3, warmup_steps=20, decay_fraction=0.2, weight_decay=0.01),
        steps=200,
        log_every=10,
        eval_every=100,
        eval_batches=8,
        checkpoint_every=100,
        keep_checkpoints=2,
    )
