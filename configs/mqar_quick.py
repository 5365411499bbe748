"""The README's main job: a quick MQAR comparison small enough for a 2-core CPU.

Hardware: a CPU (a GPU also works). Time: one model 2-3.5 min on 2 CPU cores (1500 steps: 119-140 s
in the README's run, JAX 0.10.2; 206 s with another job on the second core); the main job trains
three. Size: 140K parameters per model (d_model 64, 2 layers), rows of 64 tokens, 64 a step.

Tiny two-layer models (d_model 64, 4 query heads, 2 kv heads), 64-token sequences holding
8 key-value pairs over a vocabulary of 256, window 16 for the sparse attentions. The pairs sit at
the start and the queries come up to 60 tokens later, so a sliding window of 16 cannot see most
of them; DMA can, if it learns to score the pairs' tokens high. ``experiments/compare.py`` trains
one model per attention from this config and prints the accuracy table:

    python experiments/compare.py                      # dma, mha and swa
    python train.py --config configs/mqar_quick.py --workdir runs/one model.attention=dma
"""

from dma_jax.data import DataConfig
from dma_jax.models import ModelConfig
from dma_jax.training.config import TrainConfig
from dma_jax.training.optimizer import OptimConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        # Heads of 16: the XLA path everywhere, since the Pallas GPU kernels are tested from head dim 64.
        model=ModelConfig.preset("tiny", attention="dma", window=16, implementation="xla"),
        data=DataConfig(kind="mqar", seq_len=64, global_batch_size=64, vocab_size=256, mqar_num_kv_pairs=8,
                        mqar_num_eval_examples=512),
        optim=OptimConfig(peak_lr=3e-3, warmup_steps=50, decay_fraction=0.2, weight_decay=0.01),
        steps=1500,
        log_every=100,
        eval_every=250,
        eval_batches=8,
        checkpoint_every=0,  # one checkpoint at the end, for eval.py
        keep_checkpoints=1,
    )
