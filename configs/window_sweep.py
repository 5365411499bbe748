"""Base config of the perplexity-against-T/w sweep: one LM shape with the paper's head ratio
(Hkv = H/2), trained at T = 2048 on the packed corpus (docs/data.md).
``experiments/window_sweep.py`` sets each run's attention and window (MHA; SWA and DMA at
w = 256-2048; the local-window variant) and its steps, about 7.5 tokens per parameter.

Hardware: a GPU. Size: 12.9M parameters (d_model 384, 6 layers, 6 heads of 64, 3 kv heads,
vocabulary 8192), 16 rows of 2048 tokens a step. Time: 180-215 s a cell alone on one H100 (2,950
steps, scoring included) before the embedding fix; since it the training loop runs DMA-512 at
15.4 ms a step on an H100 (results/benchmarks/real_data_step/), about 45 s of training a cell;
runs sharing a card share its throughput
(results/ppl/shared_card_probe_h200.json). Needs the tokenized corpus.

    python train.py --config configs/window_sweep.py --workdir runs/window_dma512
"""

from dma_jax.data import DataConfig
from dma_jax.models import ModelConfig
from dma_jax.training.config import TrainConfig
from dma_jax.training.optimizer import OptimConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        model=ModelConfig(vocab_size=8192, d_model=384, num_layers=6, num_heads=6, num_kv_heads=3, attention="dma",
                          window=512, dtype="bfloat16"),
        data=DataConfig(kind="lm", seq_len=2048, global_batch_size=16, corpus_path="data/tokens"),
        optim=OptimConfig(peak_lr=2e-3, warmup_steps=300, decay_fraction=0.2, min_lr_ratio=0.1, weight_decay=0.1),
        steps=6000,
        log_every=50,
        eval_every=1000,
        eval_batches=1000,  # the whole held-out split
        checkpoint_every=1000,
        keep_checkpoints=1,
    )
