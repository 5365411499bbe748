"""Validation perplexity against training compute for each attention (the paper's Fig. 5 at our
scale): every (attention, size) pair trains ``configs/lm_scaling.py`` for about
``--tokens-per-param`` tokens per parameter and is scored on the whole held-out split.

    python experiments/perplexity_scaling.py --sizes s3m s10m s30m --jobs 4 --results results/ppl/scaling.json
    python experiments/perplexity_scaling.py --sizes s3m --throughput   # then time each model alone
    python experiments/perplexity_scaling.py --sizes s3m --attentions dma --tag recency model.dma_recency=0.05

Training FLOPs per run = FLOPs per token (``dma_jax.training.flops``: each attention's kept keys
at the training length) x tokens. Writes --results (JSON) and a PNG beside it.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.launch import Job, add_grid_arguments, evaluate_cells, run_grid_from_args, save_grid  # noqa: E402

ATTENTIONS = ("mha", "swa", "mla", "nsa", "dma")


def load_sizes(config_path: str) -> dict:
    import importlib.util

    spec = importlib.util.spec_from_file_location("lm_scaling", config_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SIZES


def jobs(args, sizes) -> list[Job]:
    from dma_jax.models import DecoderLM, ModelConfig
    from dma_jax.training.flops import count_params
    from flax import nnx

    out = []
    tokens_per_step = args.batch * args.seq_len
    for seed, size in ((seed, size) for seed in args.seeds for size in args.sizes):
        d_model, layers, heads, kv_heads = sizes[size]
        shape = ModelConfig(vocab_size=8192, d_model=d_model, num_layers=layers, num_heads=heads, num_kv_heads=kv_heads)
        params = count_params(nnx.split(nnx.eval_shape(lambda: DecoderLM(shape, rngs=nnx.Rngs(0))))[1])
        steps = max(20, math.ceil(args.tokens_per_param * params / tokens_per_step))
        for attention in args.attentions:
            overrides = (
                f"model.attention={attention}", f"model.d_model={d_model}", f"model.num_layers={layers}",
                f"model.num_heads={heads}", f"model.num_kv_heads={kv_heads}", f"model.latent_dim={d_model // 2}",
                f"data.seq_len={args.seq_len}", f"data.global_batch_size={args.batch}", f"model.window={args.window}",
                f"steps={steps}", f"eval_every={steps}", f"optim.warmup_steps={max(1, steps // 20)}",
                f"log_every={max(1, steps // 20)}", "checkpoint_every=0", f"seed={seed}", f"data.seed={seed}",
                *args.overrides,
            )
            cell = {"attention": attention, "size": size, "params": params, "steps": steps,
                    "tokens": steps * tokens_per_step, "seed": seed}
            if args.tag:
                cell["variant"] = args.tag
            out.append(Job(f"{label(cell)}_{size}" + (f"_s{seed}" if seed else ""), args.config, overrides, cell))
    return out


def label(cell: dict) -> str:
    """The line a cell belongs to: its attention, and its variant (``--tag``) if it has one."""
    return cell["attention"] + (f"+{cell['variant']}" if cell.get("variant") else "")


def plot(results: dict, path: Path):
    """One line per attention: validation perplexity against training FLOPs, the mean over seeds
    with their range as error bars."""
    from dma_jax.evaluation.plots import lines

    runs = {}
    for cell in results["cells"].values():
        if cell.get("eval"):
            key = (label(cell["cell"]), cell["cell"]["size"])
            flops = cell["flops_per_token"] * cell["cell"]["tokens"]
            runs.setdefault(key, (flops, []))[1].append(math.exp(cell["eval"]["eval_loss"]))
    series = {}
    for (attention, _), (flops, perplexities) in sorted(runs.items(), key=lambda item: item[1][0]):
        mean = sum(perplexities) / len(perplexities)
        series.setdefault(attention, []).append((flops, mean, min(perplexities), max(perplexities)))
    card = results.get("card", {}).get("device_kind", "")
    lines(series, path, f"validation perplexity (mean, range over seeds) vs compute; {card}",
          "training FLOPs", "perplexity", log_y=True)


def plot_throughput(results: dict, path: Path) -> dict:
    """Bars of training tokens/s of each model alone (``eval.py --throughput``), grouped by size
    (smallest first); returns what it drew, {size: {attention: million tokens/s}}."""
    from dma_jax.evaluation.plots import bars

    groups = {}
    for cell in sorted(results["cells"].values(), key=lambda c: c["cell"].get("params", 0)):
        if cell.get("throughput"):
            size = groups.setdefault(cell["cell"]["size"], {})
            size[label(cell["cell"])] = cell["throughput"]["training"]["tokens_per_s"] / 1e6
    card = results.get("card", {}).get("device_kind", "")
    bars(groups, path, f"training throughput, each model alone; {card}", "million tokens / s")
    return groups


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/lm_scaling.py")
    p.add_argument("--attentions", nargs="+", default=list(ATTENTIONS), choices=ATTENTIONS)
    p.add_argument("--sizes", nargs="+", default=["s3m", "s10m", "s30m"])
    p.add_argument("--tokens-per-param", type=float, default=20.0)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed (model and data order)")
    p.add_argument("--tag", default="",
                   help="a variant of these cells, set by the overrides (e.g. --tag recency model.dma_recency=0.05): "
                        "cells are named '<attention>+<tag>_<size>' and drawn as their own line")
    p.add_argument("--throughput", action="store_true",
                   help="after training, time each model alone (eval.py --throughput): training and decoding tokens/s")
    add_grid_arguments(p, results="results/ppl/scaling.json", workroot="runs/ppl", timeout=7200)
    args = p.parse_args()
    sizes = load_sizes(args.config)
    results = run_grid_from_args(jobs(args, sizes), args)
    if args.throughput and not args.plot_only:
        evaluate_cells(results, Path(args.workroot), ["--throughput"], "throughput", Path(args.results))
    save_grid(results, args, seq_len=args.seq_len, window=args.window, batch=args.batch,
              tokens_per_param=args.tokens_per_param)
    png = Path(args.results).with_suffix(".png")
    plot(results, png)
    print(f"wrote {args.results} and {png}")
    if args.throughput:
        throughput_png = png.with_name(png.stem + "_throughput.png")
        plot_throughput(results, throughput_png)
        print(f"wrote {throughput_png}")


if __name__ == "__main__":
    main()
