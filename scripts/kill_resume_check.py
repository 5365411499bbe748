"""Kill a training run with SIGKILL at random moments, resume it each time, and compare the end
with an uninterrupted run: the metrics log record for record (timings aside) and the final
parameters bit for bit.

    python scripts/kill_resume_check.py --kills 20 --out results/faults/kill_resume.json

The run is ``configs/smoke.py`` shortened (``--steps``, a checkpoint every step, a log record
every step, evaluations), so a kill can land anywhere: during start-up, a step, an evaluation, a
checkpoint save, a metrics write, or the rewrite of the log on resume. The first run of the killed
workdir is killed at its first logged step, which measures how long a (compilation-cached) start
takes; every later kill's moment is drawn uniformly between the start of the process and
``--after-first-step`` seconds after that, so each restart is killed again within a few steps,
until a last run finishes. Exit status 0 when both comparisons hold. About 10 minutes on a 2-core
CPU with the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMINGS = ("tokens_per_s", "step_time_s", "mfu", "peak_memory_gib")


def command(workdir: Path, steps: int) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "smoke.py"), "--workdir",
            str(workdir), "--no-progress", f"steps={steps}", "log_every=1", "eval_every=5", "eval_batches=1",
            "checkpoint_every=1", "keep_checkpoints=2", "optim.warmup_steps=2", "data.global_batch_size=8",
            "data.mqar_num_eval_examples=16"]


def run_until_first_step(command_line: list[str], env: dict, workdir: Path, *, kill: bool) -> float:
    """Start a run; return the seconds until its metrics log holds a train record. With ``kill``
    it is killed then; without, waited for (it must succeed)."""
    started = time.perf_counter()
    process = subprocess.Popen(command_line, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = None
    while first is None and process.poll() is None:
        if last_step(workdir) > 0:
            first = time.perf_counter() - started
        time.sleep(0.02)
    if kill:
        process.send_signal(signal.SIGKILL)
    process.wait()
    if first is None or (not kill and process.returncode != 0):
        raise RuntimeError(f"the run in {workdir} failed (exit {process.returncode})")
    return first


def last_step(workdir: Path) -> int:
    """The last step with a train record in the workdir's metrics log (0 before any)."""
    if not (workdir / "metrics.jsonl").exists():
        return 0
    return max((r["step"] for r in records(workdir) if r["event"] == "train"), default=0)


def records(workdir: Path) -> list[dict]:
    from dma_jax.training.workdir import read_records

    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in read_records(workdir / "metrics.jsonl")]


def final_params(workdir: Path):
    import numpy as np
    import orbax.checkpoint as ocp

    from dma_jax.training.checkpointing import Checkpointer

    checkpointer = Checkpointer(workdir / "checkpoints", every=0, keep=10)
    step = checkpointer.latest_step()
    state = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(step) / "state")
    leaves = [np.asarray(x) for x in __import__("jax").tree.leaves(state["params"])]
    return step, leaves


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--after-first-step", type=float, default=2.0,
                        help="kill moments reach this many seconds past a start's first logged step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON file for the result")
    args = parser.parse_args(argv)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("DMA_FAULT", None)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as folder:
        whole, killed = Path(folder) / "whole", Path(folder) / "killed"
        started = time.perf_counter()
        first_step = run_until_first_step(command(whole, args.steps), env, whole, kill=False)
        wall = time.perf_counter() - started
        print(f"uninterrupted run: {wall:.1f} s, first step logged after {first_step:.1f} s", flush=True)
        warm_start = run_until_first_step(command(killed, args.steps), env, killed, kill=True)
        kills = [{"kill": 1, "after_s": round(warm_start, 2), "outcome": "killed at its first logged step",
                  "last_logged_step": last_step(killed)}]
        print(f"kill  1 after {warm_start:5.1f} s: at the first logged step (the start with compilation cached)",
              flush=True)
        for i in range(1, args.kills):
            moment = rng.uniform(0.0, warm_start + args.after_first_step)
            process = subprocess.Popen(command(killed, args.steps), env=env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            try:
                process.wait(timeout=moment)
                outcome = f"finished before the kill (exit {process.returncode})"
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                process.wait()
                outcome = "killed"
            kills.append({"kill": i + 1, "after_s": round(moment, 2), "outcome": outcome,
                          "last_logged_step": last_step(killed)})
            print(f"kill {i + 1:2d} after {moment:5.1f} s: {outcome}, log at step {kills[-1]['last_logged_step']}",
                  flush=True)
        final = subprocess.run(command(killed, args.steps), env=env, capture_output=True, text=True)
        same_log = final.returncode == 0 and records(killed) == records(whole)
        (step_a, params_a), (step_b, params_b) = final_params(whole), final_params(killed)
        same_params = step_a == step_b == args.steps and all(
            a.shape == b.shape and (a == b).all() for a, b in zip(params_a, params_b)) and len(params_a) == len(params_b)
    from dma_jax.card import device_card

    result = {"card": device_card(), "command": " ".join(["python", "scripts/kill_resume_check.py", *(sys.argv[1:] if argv is None else argv)]),
              "steps": args.steps, "uninterrupted_wall_s": round(wall, 1), "first_step_s": round(first_step, 1), "kills": kills,
              "metrics_log_equal": same_log, "final_params_bitwise_equal": same_params}
    print(f"metrics log equal record for record: {same_log}; final parameters bitwise equal: {same_params}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0 if same_log and same_params else 1


if __name__ == "__main__":
    sys.exit(main())
