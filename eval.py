"""Evaluate trained runs (train.py workdirs): perplexity, MQAR accuracy by slice, needle accuracy by
(length, depth), training and inference throughput. Writes one JSON file and PNG plots.

    python eval.py --workdir runs/smoke --out results/eval_smoke.json
    python eval.py --workdir runs/lm_* --perplexity --throughput --out results/ppl.json --plots-dir results/plots
    python eval.py --workdir runs/niah_dma --niah --niah-scales 0.5 1 2 4 8 --out results/niah.json

Without task flags each run gets the task of its training data: perplexity for "lm", MQAR for
"mqar", the needle grid for "niah".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", nargs="+", required=True, help="train.py workdirs to evaluate")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: each run's latest)")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--plots-dir", default=None, help="PNG plots go here (default: next to --out)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--max-batch-tokens", type=int, default=32768,
                   help="score at most this many tokens per forward pass (long contexts go a few rows at a time)")
    g = p.add_argument_group("perplexity")
    g.add_argument("--perplexity", action="store_true")
    g.add_argument("--ppl-seq-len", type=int, default=None, help="window length (default: the training length)")
    g.add_argument("--ppl-max-batches", type=int, default=None)
    g.add_argument("--ppl-split-at", type=int, default=None, metavar="S",
                   help="also the loss of tokens at positions < S in their document and of the rest (e.g. S = w)")
    g = p.add_argument_group("MQAR")
    g.add_argument("--mqar", action="store_true")
    g.add_argument("--mqar-seq-lens", type=int, nargs="+", default=None, help="default: the training length")
    g.add_argument("--mqar-pairs", type=int, nargs="+", default=None, help="default: the training pairs")
    g.add_argument("--mqar-examples", type=int, default=256)
    g.add_argument("--mqar-window", type=int, default=None,
                   help="split accuracy into queries whose pair lies inside / beyond this many positions back "
                        "(default: the run's model.window; 0: no split)")
    g = p.add_argument_group("needle in a haystack")
    g.add_argument("--niah", action="store_true")
    g.add_argument("--niah-scales", type=float, nargs="+", default=[0.5, 1, 2, 4, 8],
                   help="context lengths as multiples of the training length")
    g.add_argument("--niah-depths", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    g.add_argument("--niah-per-cell", type=int, default=8)
    g = p.add_argument_group("DMA selection")
    g.add_argument("--recent-keys", type=int, default=0, metavar="R",
                   help="per DMA layer, the share of each query's R latest keys it keeps, and the learned A (0: skip)")
    g = p.add_argument_group("throughput")
    g.add_argument("--throughput", action="store_true")
    g.add_argument("--throughput-seq-len", type=int, default=None, help="default: the training length")
    g.add_argument("--throughput-batch", type=int, default=None, help="default: the training batch")
    g.add_argument("--decode-tokens", type=int, default=64)
    return p.parse_args(argv)


def evaluate_run(workdir: str, args) -> dict:
    from tokenizers import Tokenizer

    from dma_jax.evaluation import (BatchScorer, inference_throughput, load_run, mqar_accuracy, niah_accuracy,
                                    perplexity, training_throughput)
    from dma_jax.training.flops import count_matmul_params, count_params, training_flops_per_token
    from flax import nnx

    run = load_run(workdir, args.step)
    config, model = run.config, run.model
    params = nnx.state(model, nnx.Param)
    flops_per_token = training_flops_per_token(config.model, count_matmul_params(params), config.data.seq_len)
    tokens_seen = run.step * config.data.global_batch_size * config.data.seq_len
    result = {"workdir": str(workdir), "step": run.step, "attention": config.model.attention,
              "window": config.model.window, "d_model": config.model.d_model, "params": count_params(params),
              "data": config.data.kind, "train_seq_len": config.data.seq_len, "tokens_seen": tokens_seen,
              "training_flops": flops_per_token * tokens_seen}
    chosen = any((args.perplexity, args.mqar, args.niah, args.throughput, args.recent_keys > 0))
    scorer = BatchScorer(model, max_tokens=args.max_batch_tokens)
    progress = not args.no_progress
    if args.perplexity or (not chosen and config.data.kind == "lm"):
        result["perplexity"] = perplexity(scorer, config.data, seq_len=args.ppl_seq_len,
                                          max_batches=args.ppl_max_batches, progress=progress,
                                          split_at=args.ppl_split_at)
    if args.mqar or (not chosen and config.data.kind == "mqar"):
        result["mqar"] = mqar_accuracy(scorer, config.data, args.mqar_seq_lens or [config.data.seq_len],
                                       args.mqar_pairs or [config.data.mqar_num_kv_pairs],
                                       examples=args.mqar_examples, progress=progress,
                                       window=(config.model.window if args.mqar_window is None else args.mqar_window) or None)
    if args.niah or (not chosen and config.data.kind == "niah"):
        tokenizer = Tokenizer.from_file(str(config.data.resolved_tokenizer_path()))
        lengths = [max(64, int(round(s * config.data.seq_len))) for s in args.niah_scales]
        result["niah"] = niah_accuracy(scorer, tokenizer, lengths, args.niah_depths, per_cell=args.niah_per_cell,
                                       progress=progress)
    if args.recent_keys > 0:
        from dma_jax.evaluation.recency import learned_A, recency_report

        result["recent_keys"] = recency_report(run, args.recent_keys)
        result["learned_A"] = learned_A(model)
    if args.throughput:
        seq_len = args.throughput_seq_len or config.data.seq_len
        batch = args.throughput_batch or config.data.global_batch_size
        result["throughput"] = {
            "training": training_throughput(config, seq_len=seq_len, batch=batch),
            "inference": inference_throughput(model, prompt_len=seq_len, new_tokens=args.decode_tokens, batch=batch),
        }
    return result


def make_plots(runs: list[dict], plots_dir: Path) -> list[str]:
    from dma_jax.evaluation.plots import distance_lines, heatmap, lines

    plots_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for run in runs:
        name = Path(run["workdir"]).name
        label = f"{name}: {run['attention']}, d={run['d_model']}, step {run['step']}"
        if len(run.get("mqar", [])) > 1:
            written.append(str(heatmap(run["mqar"], "seq_len", "num_kv_pairs", "accuracy",
                                       plots_dir / f"mqar_{name}.png", f"MQAR accuracy ({label})")))
        slices = {f"T={r['seq_len']}, {r['num_kv_pairs']} pairs": r for r in run.get("mqar", []) if r.get("by_distance")}
        if slices:
            window = run["mqar"][0].get("window")
            written.append(str(distance_lines(slices, plots_dir / f"mqar_distance_{name}.png",
                                              f"MQAR accuracy by pair distance ({label}"
                                              + (f", window {window})" if window else ")"))))
        if run.get("niah"):
            written.append(str(heatmap(run["niah"], "length", "depth", "accuracy", plots_dir / f"niah_{name}.png",
                                       f"needle accuracy ({label}, trained at {run['train_seq_len']})")))
    with_distance = [r for r in runs if len(r.get("mqar", [])) == 1 and r["mqar"][0].get("by_distance")]
    if len(with_distance) > 1:  # several runs on one slice: one figure to compare them
        label = lambda r: Path(r["workdir"]).name + ("" if Path(r["workdir"]).name == r["attention"] else f" ({r['attention']})")  # noqa: E731
        windows = sorted({str(r["mqar"][0].get("window")) for r in with_distance})
        written.append(str(distance_lines({label(r): r["mqar"][0] for r in with_distance}, plots_dir / "mqar_distance.png",
                                          f"MQAR accuracy by pair distance (window {', '.join(windows)})")))
    with_ppl = [r for r in runs if "perplexity" in r]
    if len(with_ppl) > 1:
        series = {}
        for r in with_ppl:
            series.setdefault(r["attention"], []).append((r["training_flops"], r["perplexity"]["perplexity"]))
        written.append(str(lines(series, plots_dir / "perplexity_vs_flops.png", "validation perplexity",
                                 "training FLOPs", "perplexity")))
    return written


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    for workdir in args.workdir:
        if not (Path(workdir) / "config.json").is_file():
            print(f"eval.py: {workdir} has no config.json (not a train.py workdir)", file=sys.stderr)
            return 2
    from dma_jax.card import device_card

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"card": device_card(),
              "command": " ".join(["python", "eval.py", *(sys.argv[1:] if argv is None else argv)]), "runs": []}
    from dma_jax.training.checkpointing import CheckpointMismatch

    for workdir in args.workdir:
        try:
            result["runs"].append(evaluate_run(workdir, args))
        except CheckpointMismatch as error:
            print(f"eval.py: {error}", file=sys.stderr)
            return 2
        out.write_text(json.dumps(result, indent=2))
    result["plots"] = make_plots(result["runs"], Path(args.plots_dir) if args.plots_dir else out.parent)
    out.write_text(json.dumps(result, indent=2))
    for run in result["runs"]:
        summary = {k: run[k] for k in ("workdir", "attention", "step")}
        if "perplexity" in run:
            summary["perplexity"] = round(run["perplexity"]["perplexity"], 3)
        if "mqar" in run:
            summary["mqar_accuracy"] = {f"{r['seq_len']}x{r['num_kv_pairs']}": round(r["accuracy"], 3) for r in run["mqar"]}
            beyond = {f"{r['seq_len']}x{r['num_kv_pairs']}": r["beyond_window"] for r in run["mqar"]
                      if r.get("beyond_window") is not None}
            if beyond:
                summary[f"mqar_beyond_window_{run['mqar'][0]['window']}"] = {k: round(v, 3) for k, v in beyond.items()}
        if "niah" in run:
            summary["niah_accuracy"] = round(sum(r["accuracy"] for r in run["niah"]) / len(run["niah"]), 3)
        print(json.dumps(summary))
    print(f"wrote {out}" + (f" and {len(result['plots'])} plots" if result["plots"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
