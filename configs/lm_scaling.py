"""Base config of the perplexity-against-compute experiment (the paper's Fig. 5 at our scale).

Language modelling on the packed corpus (docs/data.md) at 2048 tokens with windows of 512, so
that a query sees 4x more keys than it may keep. ``experiments/perplexity_scaling.py`` picks the
size (``--sizes``) and the attention of each run and sets steps for about 20 tokens per parameter.

Hardware: a GPU. Time: the default s10m run (9.3M parameters, 5000 steps of 16 x 2048 tokens) takes
6-8 min on an H200 with other runs beside it (5,653 steps took 365-475 s, results/ppl/scaling.json);
s3m alone took 96 s for 1,922 steps. Needs the tokenized corpus (docs/data.md).

    python train.py --config configs/lm_scaling.py --workdir runs/lm_dma_s10m
"""

from dma_jax.data import DataConfig
from dma_jax.models import ModelConfig
from dma_jax.training.config import TrainConfig
from dma_jax.training.optimizer import OptimConfig

# name: (d_model, layers, heads, kv heads)
SIZES = {"s1m": (128, 2, 2, 1), "s3m": (192, 4, 3, 1), "s10m": (320, 6, 5, 1), "s30m": (512, 8, 8, 2), "s80m": (768, 12, 6, 3)}


def get_config() -> TrainConfig:
    d_model, layers, heads, kv_heads = SIZES["s10m"]
    return TrainConfig(
        model=ModelConfig(vocab_size=8192, d_model=d_model, num_layers=layers, num_heads=heads, num_kv_heads=kv_heads,
                          attention="dma", window=512, latent_dim=d_model // 2, dtype="bfloat16",
                          nsa_block_size=32, nsa_block_stride=16, nsa_select_block=64, nsa_num_selected=8),
        data=DataConfig(kind="lm", seq_len=2048, global_batch_size=16, corpus_path="data/tokens"),
        optim=OptimConfig(peak_lr=2e-3, warmup_steps=100, decay_fraction=0.2, min_lr_ratio=0.1, weight_decay=0.1),
        steps=5000,
        log_every=50,
        eval_every=1000,
        eval_batches=1000,  # the whole held-out split (about 160K tokens)
        checkpoint_every=0,
        keep_checkpoints=1,
    )
