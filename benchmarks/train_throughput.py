"""Training throughput of a config on 1..N GPUs: step time, tokens/s, MFU, peak memory.

Each run is a fresh ``train.py`` process on the first ``devices`` GPUs (``CUDA_VISIBLE_DEVICES``)
with the parameters and optimizer state sharded over them (``mesh.data=1 mesh.fsdp=-1``) and the
global batch scaled with the device count. Step times are the medians of the logged windows after
the first (which holds compilation). ``--resume-check`` also stops one run halfway, after a
checkpoint, and restarts it from that checkpoint, timing the restart.

    python -m benchmarks.train_throughput --config configs/lm_1p7b.py \
        --runs 1:2048:8 1:8192:2 2:2048:16 2:8192:4 --steps 10 --out results/benchmarks/train_1p7b.json

Each ``--runs`` item is ``devices:seq_len:global_batch``. Results go to ``--out`` after every run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import result_header, write_json

ROOT = Path(__file__).resolve().parents[1]


def train_command(args, workdir: Path, seq_len: int, batch: int, steps: int, extra: list[str], flags=()) -> list[str]:
    overrides = [f"steps={steps}", "optim.warmup_steps=1", f"log_every={args.log_every}", "eval_every=0",
                 f"data.seq_len={seq_len}", f"data.global_batch_size={batch}", "mesh.data=1", "mesh.fsdp=-1",
                 "async_checkpoints=false", *args.overrides, *extra]
    return [sys.executable, str(ROOT / "train.py"), "--config", args.config, "--workdir", str(workdir), "--no-progress",
            *flags, *overrides]


def launch(command: list[str], devices: int, log: Path) -> float:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=",".join(map(str, range(devices))))
    start = time.perf_counter()
    with log.open("a") as out:
        result = subprocess.run(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed; see {log}")
    return time.perf_counter() - start


def summarise(workdir: Path) -> dict:
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["event"] == "train"]
    steady = train[1:] or train
    median = lambda key: statistics.median(r[key] for r in steady) if all(r.get(key) is not None for r in steady) else None
    start = next(r for r in records if r["event"] == "start")
    return {"params": start["params"], "flops_per_token": start["flops_per_token"], "step_time_s": median("step_time_s"),
            "tokens_per_s": median("tokens_per_s"), "mfu": median("mfu"),
            "peak_memory_gib": max((r["peak_memory_gib"] or 0) for r in train), "losses": [r["loss"] for r in train]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/lm_1p7b.py")
    parser.add_argument("--runs", nargs="+", default=["1:2048:8"], help="devices:seq_len:global_batch")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--log-every", type=int, default=2)
    parser.add_argument("--resume-check", action="store_true", help="stop the first run halfway and resume it")
    parser.add_argument("--workdir", default="runs/train_throughput")
    parser.add_argument("--out", required=True)
    parser.add_argument("overrides", nargs="*", help="extra key=value config overrides")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {**result_header("train_throughput", "benchmarks.train_throughput", argv), "config": args.config, "runs": []}
    for i, item in enumerate(args.runs):
        devices, seq_len, batch = map(int, item.split(":"))
        workdir = Path(args.workdir) / f"d{devices}_t{seq_len}_b{batch}"
        log = out.parent / f"{workdir.name}.log"
        entry = {"devices": devices, "seq_len": seq_len, "global_batch": batch}
        try:
            if args.resume_check and i == 0:
                half = args.steps // 2
                extra = [f"checkpoint_every={half}", "keep_checkpoints=1"]
                first = train_command(args, workdir, seq_len, batch, args.steps, extra, ["--stop-after", str(half)])
                entry["first_half_s"] = launch(first, devices, log)
                entry["resumed_from_step"] = half
                entry["second_half_s"] = launch(train_command(args, workdir, seq_len, batch, args.steps, extra), devices, log)
                entry["checkpoint_steps"] = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
            else:
                entry["wall_s"] = launch(train_command(args, workdir, seq_len, batch, args.steps, ["checkpoint_every=-1"]),
                                         devices, log)
            entry.update(summarise(workdir))
        except (RuntimeError, FileNotFoundError, StopIteration) as error:
            entry["error"] = str(error)
        result["runs"].append(entry)
        write_json(result, out)
    print(f"{'dev':>3} {'T':>6} {'B':>3} {'step s':>8} {'tok/s':>9} {'MFU':>6} {'mem GiB':>8}")
    for r in result["runs"]:
        if "error" in r:
            print(f"{r['devices']:>3} {r['seq_len']:>6} {r['global_batch']:>3} error: {r['error']}")
            continue
        mfu = f"{r['mfu']:.1%}" if r["mfu"] else "n/a"
        print(f"{r['devices']:>3} {r['seq_len']:>6} {r['global_batch']:>3} {r['step_time_s']:>8.3f} "
              f"{r['tokens_per_s']:>9,.0f} {mfu:>6} {r['peak_memory_gib']:>8.1f}")


if __name__ == "__main__":
    main()
