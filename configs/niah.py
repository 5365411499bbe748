"""Base config of the needle-in-a-haystack experiment (the paper's Fig. 8 at our scale): a small
model trained on RULER-style single needles (docs/data.md) at one length, with the corpus's
tokenizer. ``experiments/niah.py`` trains one per attention and evaluates 0.5x to 8x the length.

Hardware: a GPU. Time: 2.5-3.5 min per run on an H200 for 1500 steps with four runs sharing it
(results/niah/h200.json). Size: 5.2M parameters (d_model 256, 4 layers), 32 rows of 1024 tokens.
Needs the tokenized corpus (docs/data.md).

    python train.py --config configs/niah.py --workdir runs/niah_dma
"""

from dma_jax.data import DataConfig
from dma_jax.models import ModelConfig
from dma_jax.training.config import TrainConfig
from dma_jax.training.optimizer import OptimConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        model=ModelConfig(vocab_size=8192, d_model=256, num_layers=4, num_heads=4, num_kv_heads=2, attention="dma",
                          window=256, latent_dim=128, nsa_block_size=16, nsa_block_stride=8, nsa_select_block=32,
                          nsa_num_selected=8),
        data=DataConfig(kind="niah", seq_len=1024, global_batch_size=32, corpus_path="data/tokens",
                        niah_eval_per_depth=16),
        optim=OptimConfig(peak_lr=1e-3, warmup_steps=100, decay_fraction=0.2, weight_decay=0.1),
        steps=2000,
        log_every=50,
        eval_every=500,
        eval_batches=8,
        checkpoint_every=0,
        keep_checkpoints=1,
    )
