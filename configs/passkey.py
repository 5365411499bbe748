"""Base config of passkey retrieval past the training length: the window sweep's model shape
(Hkv = H/2) trained at T = 1024 on the corpus, with 5 % of the rows single needles
(``data.niah_share``: RULER-style key/value needles in filler, docs/data.md), so that the model
learns retrieval beside language modelling. ``experiments/passkey.py`` trains one per attention
and seed and scores exact answers at 1K-8K tokens and five depths (``eval.py --niah``).

Hardware: a GPU. Size: 12.9M parameters (d_model 384, 6 layers, 6 heads of 64, 3 kv heads,
vocabulary 8192), 32 rows of 1024 tokens a step. Time: one run alone on an H100 trains in 60-94 s
with compilation and is scored in about 30 s more (results/niah/passkey.json: 1,232 s for 12 runs);
runs go one at a time (``--jobs 1``). Needs the tokenized corpus.

    python train.py --config configs/passkey.py --workdir runs/passkey_dma256
"""

from dma_jax.data import DataConfig
from dma_jax.models import ModelConfig
from dma_jax.training.config import TrainConfig
from dma_jax.training.optimizer import OptimConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        model=ModelConfig(vocab_size=8192, d_model=384, num_layers=6, num_heads=6, num_kv_heads=3, attention="dma",
                          window=256, dtype="bfloat16"),
        data=DataConfig(kind="lm", seq_len=1024, global_batch_size=32, corpus_path="data/tokens", niah_share=0.05,
                        niah_eval_per_depth=16),
        optim=OptimConfig(peak_lr=2e-3, warmup_steps=200, decay_fraction=0.2, min_lr_ratio=0.1, weight_decay=0.1),
        steps=4000,
        log_every=50,
        eval_every=1000,
        eval_batches=64,
        checkpoint_every=1000,
        keep_checkpoints=1,
    )
