"""The paper's 1.7B shape (Qwen3-1.7B layout: d_model 2048, 28 layers, 16 heads of 128, 8 kv heads,
MLP 6144, tied embeddings, vocab 151936) with DMA (w = 2048), trained on the packed LM corpus.

bf16 compute with float32 master weights, every block rematerialised, the 28 blocks scanned (one
compiled block, not 28), the LM head and loss run 256 positions at a time (``logits_piece``: the
float32 logits of 8 x 2048 tokens over 151,936 entries would be 10 GB at once). Sequence length 2048 by default; 8192 with ``data.seq_len=8192
data.global_batch_size=2``.

    python train.py --config configs/lm_1p7b.py --workdir runs/lm_1p7b
    python train.py --config configs/lm_1p7b.py --workdir runs/lm_1p7b_8k data.seq_len=8192 data.global_batch_size=2
    # 2 GPUs, parameters and optimizer state sharded:  ... mesh.data=1 mesh.fsdp=-1

Hardware: one or more 80-141 GB GPUs (H100/H200). Time: 0.81 s a step of 8 x 2048 tokens on one
H200 (20K tokens/s, 40 GiB peak; results/benchmarks/train_1p7b_h200.json, before the blocks were
scanned), so the default 100,000 steps take about 22 hours per GPU-equivalent. Size: 1.72B
parameters. The corpus must be built first (docs/data.md). The vocabulary stays the paper's 151936 (the
tokenizer uses the first 8192 ids), so the model's FLOPs are those of the 1.7B model.
"""

from dma_jax.data import DataConfig
from dma_jax.models import ModelConfig
from dma_jax.training.config import TrainConfig
from dma_jax.training.optimizer import OptimConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        model=ModelConfig.preset("1.7b", dtype="bfloat16", remat=True, scan_layers=True),
        data=DataConfig(kind="lm", seq_len=2048, global_batch_size=8, corpus_path="data/tokens"),
        optim=OptimConfig(peak_lr=3e-4, warmup_steps=2000, decay_fraction=0.1, min_lr_ratio=0.1),
        steps=100_000,
        logits_piece=256,
        log_every=10,
        eval_every=1000,
        eval_batches=16,
        checkpoint_every=1000,
        keep_checkpoints=2,
    )
