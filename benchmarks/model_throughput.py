"""Model-level throughput: DMA against MHA and SWA in one process on one device, across T.

    python -m benchmarks.model_throughput --out-dir results/benchmarks/model_throughput      # GPU defaults
    python -m benchmarks.model_throughput --model 1.7b --lengths 2048 8192 --out-dir results/benchmarks/lm_1p7b

For each sequence length T and attention, one decoder LM (default: d_model 1024, 12 layers,
8 heads of 128, 8 kv heads, SwiGLU, bf16 compute, every block rematerialised) is timed on random
tokens:
- the train step (forward, backward, AdamW update): tokens/s from the median of waited-for steps
  and amortised over back-to-back steps with one wait, as a training loop runs them, and its
  compile time (the first call less one step);
- prefill (the whole prompt of T tokens) and decode (``--decode-tokens`` more, one at a time with
  the caches) tokens/s, from ``generate``;
- MFU of the amortised train step: ``dma_jax.training.flops`` (6 FLOPs per weight per token with
  the LM head, plus 12·H·D per kept (query, key) pair per layer; remat's recomputation not counted)
  over the card's dense bf16 peak;
- peak device memory after each attention's runs (JAX's running peak: it never goes down, so read
  it against the rows before it).
DMA and SWA keep ``w = min(--window, T * --max-window-fraction)`` keys (T/4 at 2K, 1024 from 4K on,
the performance targets' settings); dense attention runs on cuDNN on a GPU. The batch holds
``--tokens-per-batch`` tokens (at least one row). ``--model 1.7b`` times the paper's 1.7B shape
instead (configs/lm_1p7b.py: w = 2048, scanned blocks). ``--remat-saves nothing selection attention``
times each attention each way: the blocks recompute everything in the backward pass, keep DMA's
selection tables, or keep the attention's outputs and DMA's selection tables
(``ModelConfig.remat_saves``). Writes model_throughput.json (card and
command) and model_throughput.png (tokens/s against T), and prints a table last.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import jax
from flax import nnx

from benchmarks.common import result_header, write_json
from dma_jax.data import DataConfig
from dma_jax.evaluation.throughput import inference_throughput, training_throughput
from dma_jax.models import DecoderLM, ModelConfig
from dma_jax.remat import SAVES
from dma_jax.training.config import TrainConfig, load_config
from dma_jax.training.flops import count_matmul_params, peak_flops, training_flops_per_token
from dma_jax.training.loop import peak_memory_gib
from dma_jax.training.optimizer import OptimConfig

KINDS = ("dma", "mha", "swa")


def model_config(args, attention: str, length: int, remat_saves: str = ModelConfig.remat_saves) -> ModelConfig:
    """The model of one row: the fixed shape of the flags (or the 1.7B preset) with this attention."""
    on_gpu = jax.default_backend() == "gpu"
    window = max(1, min(args.window, int(length * args.max_window_fraction)))
    common = dict(attention=attention, dtype=args.dtype, remat=not args.no_remat, remat_saves=remat_saves,
                  dense_implementation="cudnn" if on_gpu else None)
    if args.model == "1.7b":
        return ModelConfig.preset("1.7b", scan_layers=True, window=2048 if attention != "mha" else None, **common)
    return ModelConfig(vocab_size=args.vocab_size, d_model=args.d_model, num_layers=args.layers, num_heads=args.heads,
                       num_kv_heads=args.kv_heads, head_dim=args.head_dim, window=None if attention == "mha" else window,
                       scan_layers=True, **common)


def logits_piece(args) -> int | None:
    """Positions per piece of the LM head and loss: the flag, else configs/lm_1p7b.py's for the 1.7B model."""
    if args.logits_piece is not None:
        return args.logits_piece or None
    if args.model == "1.7b":
        return load_config(Path(__file__).resolve().parents[1] / "configs" / "lm_1p7b.py", validate=False).logits_piece
    return None


def train_config(args, attention: str, length: int, remat_saves: str = ModelConfig.remat_saves) -> TrainConfig:
    """The train config of one row: ``model_config``'s model, ``--tokens-per-batch`` tokens a batch
    (at least one row of T), the LM head in ``logits_piece`` pieces."""
    model = model_config(args, attention, length, remat_saves)
    batch = max(1, args.tokens_per_batch // length)
    return TrainConfig(model=model, data=DataConfig(kind="mqar", seq_len=length, global_batch_size=batch,
                                                    vocab_size=model.vocab_size),
                       optim=OptimConfig(warmup_steps=1), steps=100, logits_piece=logits_piece(args))


def shape_label(args) -> str:
    """The timed model's shape in words, for results and plot titles."""
    return "1.7B preset" if args.model == "1.7b" else (
        f"d_model {args.d_model}, {args.layers} layers, {args.heads}x{args.head_dim} heads, {args.kv_heads} kv heads")


def measure(args, attention: str, length: int, remat_saves: str = ModelConfig.remat_saves) -> dict:
    config = train_config(args, attention, length, remat_saves)
    model, batch = config.model, config.data.global_batch_size
    row = dict(attention=attention, T=length, window=model.window, batch=batch, remat_saves=remat_saves)
    try:
        row["train"] = training_throughput(config, seq_len=length, batch=batch, repeats=args.repeats)
        lm = DecoderLM(model, rngs=nnx.Rngs(0))
        row["train"]["flops_per_token"] = training_flops_per_token(model, count_matmul_params(nnx.state(lm, nnx.Param)), length)
        peak = peak_flops(jax.devices()[0].device_kind)
        row["train"]["mfu"] = row["train"]["flops_per_token"] * row["train"]["tokens_per_s_amortised"] / peak if peak else None
        row["inference"] = inference_throughput(lm, prompt_len=length, new_tokens=args.decode_tokens,
                                                batch=args.inference_batch or batch, repeats=max(1, args.repeats // 2))
        row["peak_memory_gib"] = peak_memory_gib()
    except Exception as error:  # out of memory at a large T: record it and go on
        row["error"] = f"{type(error).__name__}: {error}"[:500]
    return row


def plot(result: dict, path: str) -> str:
    """Tokens/s against T, one line per attention: train step (amortised), prefill, decode."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from benchmarks.common import card_label

    fig = Figure(figsize=(13, 4))
    FigureCanvasAgg(fig)
    panels = (("train", "tokens_per_s_amortised", "train step"), ("inference", "prefill_tokens_per_s", "prefill"),
              ("inference", "decode_tokens_per_s", "decode"))
    for ax, (part, key, title) in zip(fig.subplots(1, 3), panels):
        for attention in KINDS:
            for saves in result["settings"].get("remat_saves", ["nothing"]):
                rows = [r for r in result["rows"] if r["attention"] == attention and part in r
                        and r.get("remat_saves", "nothing") == saves]
                label = attention if len(result["settings"].get("remat_saves", [])) < 2 else f"{attention}, saves {saves}"
                if rows:
                    ax.plot([r["T"] for r in rows], [r[part][key] for r in rows], "o-", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_ylabel("tokens/s")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Model throughput ({result['shape']}; {card_label(result)})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of the timed model's shape and batch (``model_config``, ``logits_piece``), shared
    with ``benchmarks.step_profile``; ``--remat-saves`` is each script's own."""
    p.add_argument("--model", choices=["fixed", "1.7b"], default="fixed")
    p.add_argument("--d-model", type=int, default=1024)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--vocab-size", type=int, default=32768)
    p.add_argument("--window", type=int, default=1024)
    p.add_argument("--max-window-fraction", type=float, default=0.25)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--no-remat", action="store_true")
    p.add_argument("--tokens-per-batch", type=int, default=65536)
    p.add_argument("--logits-piece", type=int, default=None,
                   help="positions per piece of the LM head and loss (0: all at once; default: the 1.7B config's for 1.7b, else all)")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[2048, 8192, 16384, 32768])
    p.add_argument("--attentions", nargs="+", default=list(KINDS), choices=KINDS)
    add_model_arguments(p)
    p.add_argument("--remat-saves", nargs="+", choices=SAVES, default=[ModelConfig.remat_saves],
                   help="what the rematerialised blocks keep (ModelConfig.remat_saves); several: each is timed")
    p.add_argument("--inference-batch", type=int, default=None, help="default: the training batch")
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=6)
    p.add_argument("--out-dir", default="results/benchmarks/model_throughput")
    args = p.parse_args(argv)
    result = dict(**result_header("model_throughput", "benchmarks.model_throughput", argv), shape=shape_label(args),
                  settings=dict(vars(args)), rows=[])
    json_path = os.path.join(args.out_dir, "model_throughput.json")
    for length in args.lengths:
        for saves in args.remat_saves:
            for attention in args.attentions:
                row = measure(args, attention, length, saves)
                result["rows"].append(row)
                write_json(result, json_path)
                print(row, flush=True)
    plot(result, os.path.join(args.out_dir, "model_throughput.png"))
    print(f"\n{'attention':<10}{'saves':>10}{'T':>7}{'w':>6}{'B':>4}{'train tok/s':>13}{'amortised':>12}{'prefill':>11}"
          f"{'decode':>10}{'peak GiB':>9}{'MFU':>7}{'compile s':>10}")
    for r in result["rows"]:
        if "error" in r:
            print(f"{r['attention']:<10}{r['remat_saves']:>10}{r['T']:>7}  error: {r['error'][:70]}")
            continue
        memory = r["peak_memory_gib"]
        print(f"{r['attention']:<10}{r['remat_saves']:>10}{r['T']:>7}{str(r['window'] or '-'):>6}{r['batch']:>4}"
              f"{r['train']['tokens_per_s']:>13,.0f}{r['train']['tokens_per_s_amortised']:>12,.0f}"
              f"{r['inference']['prefill_tokens_per_s']:>11,.0f}{r['inference']['decode_tokens_per_s']:>10,.0f}"
              f"{'-' if memory is None else f'{memory:.1f}':>9}"
              f"{'-' if r['train'].get('mfu') is None else format(r['train']['mfu'], '.1%'):>7}"
              f"{r['train'].get('compile_s', float('nan')):>10.1f}")
    return result


if __name__ == "__main__":
    main()
