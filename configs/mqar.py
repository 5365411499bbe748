"""Base config of the MQAR experiments (the paper's Fig. 6 at our scale).

Hardware: a GPU (not meant for a CPU: 64 rows of 512 tokens a step, 2000 steps). Time: a few
minutes per run on an H200; runs of 4000 steps at T = 512-4096 took 3-7 min each with 4-5 runs
sharing one H200 (results/mqar/lengths.json). Size: 2.5M parameters (d_model 128, 2 layers).

Two layers, zoology's vocabulary of 8192, keys from the lower half and values from the upper
half. ``experiments/mqar_grid.py`` sets the attention, d_model, sequence length, window and number
of pairs of each cell through overrides; alone it trains one cell:

    python train.py --config configs/mqar.py --workdir runs/mqar_dma_512 data.seq_len=512
"""

from dma_jax.data import DataConfig
from dma_jax.models import ModelConfig
from dma_jax.training.config import TrainConfig
from dma_jax.training.optimizer import OptimConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        model=ModelConfig(vocab_size=8192, d_model=128, num_layers=2, num_heads=2, num_kv_heads=1, attention="dma",
                          window=64, latent_dim=64, nsa_block_size=16, nsa_block_stride=8, nsa_select_block=32,
                          nsa_num_selected=2, tie_embeddings=False),
        data=DataConfig(kind="mqar", seq_len=512, global_batch_size=64, vocab_size=8192, mqar_num_kv_pairs=32,
                        mqar_num_train_examples=100_000, mqar_num_eval_examples=1_000),
        optim=OptimConfig(peak_lr=1e-3, warmup_steps=100, decay_fraction=0.2, weight_decay=0.1),
        steps=2000,
        log_every=50,
        eval_every=500,
        eval_batches=16,
        checkpoint_every=0,
        keep_checkpoints=1,
    )
