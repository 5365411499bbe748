"""Run many ``train.py`` jobs, several at a time on one machine, and keep their results.

Each job is one cell of an experiment grid: a config file, overrides and a workdir. Jobs run as
separate processes, ``--jobs`` at a time; on a GPU they share it (each may take at most
1/jobs of its memory). When a job ends, its final train and eval records are stored in the
results JSON under the cell's name, so a grid cut short (or spread over several runs) resumes
with the cells it lacks: cells already in the JSON are skipped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dma_jax.card import device_card
from dma_jax.training.workdir import read_records

PROGRESS_EVERY_S = 15.0  # the most seconds between two progress lines of a running job
LATE_START_MARGIN = 1.1  # --call-seconds: a late cell starts only where this times the longest cell is left

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Job:
    name: str  # unique cell name, e.g. "dma_T512_d64"
    config: str
    overrides: tuple[str, ...]
    cell: dict  # the grid coordinates, stored with the result


def final_records(workdir: Path) -> dict:
    records = read_records(workdir / "metrics.jsonl")
    last = lambda event: next((r for r in reversed(records) if r["event"] == event), None)
    start = next(r for r in records if r["event"] == "start")
    curve = [{k: r[k] for k in ("step", "eval_loss", "eval_accuracy") if k in r} for r in records if r["event"] == "eval"]
    return {"train": last("train"), "eval": last("eval"), "eval_curve": curve, "params": start["params"],
            "flops_per_token": start["flops_per_token"], "device_kind": start["device_kind"]}


def job_env(jobs: int, gpu: str | None = None) -> dict:
    """The environment of a process that shares its device with ``jobs - 1`` others, on GPU ``gpu``."""
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    if jobs > 1:
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / jobs:.3f}")  # set it to oversubscribe
    return env


def run_job(job: Job, workroot: Path, jobs: int, timeout_s: float, gpu: str | None = None) -> dict:
    """Train one cell; ``jobs`` is how many processes share its device, ``gpu`` the device id it gets."""
    workdir = workroot / job.name
    env = job_env(jobs, gpu)
    command = [sys.executable, str(ROOT / "train.py"), "--config", job.config, "--workdir", str(workdir),
               "--no-progress", *job.overrides]
    start = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"[{job.name}] training; live metrics: {workdir / 'metrics.jsonl'}, log: {workdir / 'train.log'}", flush=True)
    with (workdir / "train.log").open("w") as log:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        code = follow(process, job.name, workdir, timeout_s)
    result = {"cell": job.cell, "command": " ".join(["python", "train.py", *command[2:]]),
              "wall_s": time.perf_counter() - start}
    if code != 0:
        tail = (workdir / "train.log").read_text()[-1500:]
        failed = {**result, "error": f"exit {code}: {tail}"}
        try:  # what the run logged before it stopped (e.g. the eval curve of a cell cut off by --timeout)
            failed["partial"] = final_records(workdir)
        except (OSError, StopIteration, ValueError, KeyError):
            pass
        return failed
    return {**result, **final_records(workdir)}


class _Progress:
    """What a running job has logged so far, read from its metrics.jsonl while train.py appends to it."""

    def __init__(self, name: str, workdir: Path):
        self.name, self.workdir = name, workdir
        self.seen = 0  # records read
        self.first = None  # (step, time) of the first train record
        self.printed_at = 0.0
        self.pending = None  # the newest train record not printed yet

    def steps(self) -> int | None:
        try:
            return json.loads((self.workdir / "config.json").read_text())["steps"]
        except (OSError, ValueError, KeyError):
            return None

    def poll(self, force: bool = False) -> None:
        path = self.workdir / "metrics.jsonl"
        if not path.exists():
            return
        lines = path.read_text().split("\n")[:-1]  # the part after the last newline may be half written
        if len(lines) < self.seen:  # rewritten on resume: read it again
            self.seen = 0
        new = [json.loads(line) for line in lines[self.seen:] if line.strip()]
        self.seen = len(lines)
        now = time.perf_counter()
        for record in new:
            if record.get("event") == "train" and self.first is None:
                self.first = (record["step"], now)
            if record.get("event") == "eval":
                print(f"[{self.name}] step {record['step']}: eval loss {record['eval_loss']:.4f}, "
                      f"accuracy {record['eval_accuracy']:.3f}", flush=True)
        trains = [r for r in new if r.get("event") == "train"]
        self.pending = trains[-1] if trains else self.pending
        if self.pending and (force or now - self.printed_at >= PROGRESS_EVERY_S):
            self.printed_at = now
            print(f"[{self.name}] {self.describe(self.pending, now)}", flush=True)
            self.pending = None

    def describe(self, record: dict, now: float) -> str:
        total, step = self.steps(), record["step"]
        text = f"step {step}" + (f"/{total}" if total else "") + f"  loss {record['loss']:.3f}"
        text += f"  {record.get('tokens_per_s') or 0:,.0f} tok/s"
        if total and self.first and step > self.first[0]:
            rate = (step - self.first[0]) / max(now - self.first[1], 1e-9)
            seconds = (total - step) / rate
            text += f"  ETA {int(seconds // 60)}m{int(seconds % 60):02d}s"
        return text


def follow(process: subprocess.Popen, name: str, workdir: Path, timeout_s: float):
    """Wait for a train.py process, printing its progress (step, loss, tokens/s, ETA) every
    ``PROGRESS_EVERY_S`` seconds and each evaluation; returns its exit code, or "timeout"."""
    progress, deadline = _Progress(name, workdir), time.perf_counter() + timeout_s
    while process.poll() is None:
        if time.perf_counter() > deadline:
            process.kill()
            process.wait()
            return "timeout"
        progress.poll()
        time.sleep(0.5)
    progress.poll(force=True)
    return process.returncode


def read_results(results_path: Path) -> dict:
    """A runner's results file as it is (its "cells" at least), or an empty one."""
    results = json.loads(results_path.read_text()) if results_path.exists() else {"cells": {}}
    results.setdefault("cells", {})
    return results


def load_results(results_path: Path) -> dict:
    """A runner's results file (a JSON with "card" and "cells"), or a new one for this device."""
    results = read_results(results_path)
    results.setdefault("card", device_card())
    return results


def missing_jobs(jobs: list[Job], results: dict, retry_errors: bool) -> list[Job]:
    """The jobs a call runs: those without a cell in ``results``, and with ``retry_errors`` also
    those whose cell failed."""
    done = {name for name, r in results["cells"].items() if not (retry_errors and "error" in r)}
    return [job for job in jobs if job.name not in done]


def late_start_fits(left_s: float, cell_s: float) -> bool:
    """``--call-seconds``: whether a cell of ``cell_s`` seconds may start with ``left_s`` left."""
    return left_s >= LATE_START_MARGIN * cell_s


BUDGET_KEYS = ("steps", "tokens", "batch", "seq_len")  # what a cell's name does not say about its training


def check_same_cells(jobs: list[Job], results: dict, results_path: Path) -> None:
    """Exit if a cell already in ``results`` trained on another budget (``BUDGET_KEYS``) than its
    job now asks for (say, other steps after a change of ``--tokens-per-param``): resuming would
    mix the two."""
    for job in jobs:
        stored = results["cells"].get(job.name, {}).get("cell", {})
        changed = {key: (stored[key], job.cell[key]) for key in BUDGET_KEYS
                   if key in stored and key in job.cell and stored[key] != job.cell[key]}
        if changed:
            detail = ", ".join(f"{key} {old!r} there, {new!r} now" for key, (old, new) in changed.items())
            raise SystemExit(f"{results_path}: cell {job.name} was run with other settings ({detail}); "
                             f"give this grid another --results file")


def run_grid(jobs: list[Job], results_path: Path, workroot: Path, *, parallel: int = 1, timeout_s: float = 3600,
             retry_errors: bool = False, start_before_s: float | None = None, gpus: list[str] | None = None,
             after=None, call_seconds: float | None = None) -> dict:
    """Run the jobs missing from ``results_path`` (a JSON with "card", "cells"); returns its content.

    Cells not started within ``start_before_s`` seconds of the call are left for a later call, so
    that a call fits a fixed slice of machine time. With ``call_seconds`` too, every cell's training
    must end within that many seconds of the call's start (its timeout is cut to what is left; an
    ``after`` still runs on a cell that trained, so leave it room), and a cell
    may still start after ``start_before_s`` when what is left is at least ``LATE_START_MARGIN``
    times the longest cell this call has finished: a call fits as many waves of cells as its
    slice holds. With ``gpus`` (device ids), each job runs on
    the listed GPU that has the fewest jobs at its start, and ``parallel`` jobs share them.
    ``after(workdir, env)``, if given, runs on each cell that trained, in the same worker and with
    the environment of its training (same GPU, same memory share), while other cells go on
    training; the dict it returns joins the cell's record.
    """
    results = load_results(results_path)
    check_same_cells(jobs, results, results_path)
    results["command"] = " ".join(["python", *sys.argv])
    todo = missing_jobs(jobs, results, retry_errors)
    print(f"{len(jobs) - len(todo)} of {len(jobs)} cells done already; running {len(todo)}, {parallel} at a time",
          flush=True)
    results_path.parent.mkdir(parents=True, exist_ok=True)

    # Device time: the cells of one call share the machine, so the call's wall time is what they cost.
    call = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": results["command"], "parallel": parallel,
            "cells": [job.name for job in todo], "wall_s": 0.0, "device_kind": results["card"]["device_kind"]}
    results.setdefault("calls", []).append(call)
    if gpus:
        call["gpus"] = list(gpus)
    start = time.perf_counter()
    lock = threading.Lock()
    running = {gpu: 0 for gpu in gpus or []}
    per_device = -(-parallel // len(gpus)) if gpus else parallel

    finished = []  # seconds each cell of this call took, its ``after`` included

    def may_start(now: float) -> str | None:
        """Why a cell may not start now, or None."""
        elapsed = now - start
        if call_seconds is not None:
            left = call_seconds - elapsed
            if left <= 0:
                return f"--call-seconds {call_seconds:.0f} s spent"
            if finished:  # the longest cell so far tells whether another fits
                longest = max(finished)
                if not late_start_fits(left, longest):
                    return f"{left:.0f} s left, the longest cell took {longest:.0f} s"
                return None
        if start_before_s is not None and elapsed > start_before_s:
            return f"--start-before {start_before_s:.0f} s passed"
        return None

    def one(job):
        begun = time.perf_counter()
        why = may_start(begun)
        if why is not None:
            with lock:
                call["cells"].remove(job.name)
            print(f"{job.name}: not started ({why})", flush=True)
            return None
        limit = timeout_s if call_seconds is None else min(timeout_s, call_seconds - (begun - start))
        with lock:
            gpu = min(running, key=running.get) if running else None
            if gpu is not None:
                running[gpu] += 1
        result = run_job(job, workroot, per_device, limit, gpu)
        if after is not None and "error" not in result:
            result.update(after(workroot / job.name, job_env(per_device, gpu)))
        with lock:
            if "error" not in result:
                finished.append(time.perf_counter() - begun)
            if gpu is not None:
                running[gpu] -= 1
                result["gpu"] = gpu
            results["cells"][job.name] = result
            call["wall_s"] = time.perf_counter() - start
            results_path.write_text(json.dumps(results, indent=2))
        status = result.get("error", "")[:80] or json.dumps({k: round(v, 4) for k, v in (result["eval"] or {}).items()
                                                               if isinstance(v, float)})
        print(f"{job.name}: {result['wall_s']:.0f} s {status}", flush=True)
        return result

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(one, todo))
    call["wall_s"] = time.perf_counter() - start
    results_path.write_text(json.dumps(results, indent=2))
    return results


def plan_grid(jobs: list[Job], results_path: Path, *, parallel: int = 1, call_seconds: float | None = None,
              retry_errors: bool = False) -> dict:
    """What ``run_grid`` would run next, running and writing nothing: the missing cells in order, each
    with an estimate of its wall time, and the machine time they need.

    A cell's estimate is the median ``wall_s`` of the finished cells of ``results_path`` that
    trained on its budget (the ``BUDGET_KEYS`` both name), so it assumes the concurrency and
    the card those cells had; cells with no such finished cell have none. Cells run in waves of
    ``parallel``, a wave as long as its longest cell; with ``call_seconds``, the waves with an
    estimate are packed into calls of that many seconds: at least one wave a call, and a later
    wave where ``late_start_fits`` its own estimate (``run_grid`` asks it of the longest cell
    finished so far; the two agree where a call's waves share one estimate).

    Returns {"done": n, "todo": [{"name", "estimate_s" (None: no estimate)}], "waves":
    [seconds or None], "machine_s": the sum of the waves with an estimate, "calls": int or None}.
    Cells that failed count as done unless ``retry_errors``, as in ``run_grid``.
    """
    results = read_results(results_path)
    check_same_cells(jobs, results, results_path)
    finished = [cell for cell in results["cells"].values() if "error" not in cell and "wall_s" in cell]
    todo = missing_jobs(jobs, results, retry_errors)

    def estimate(job):
        same = [cell["wall_s"] for cell in finished
                if all(cell.get("cell", {}).get(key) == job.cell[key] for key in BUDGET_KEYS if key in job.cell)]
        return statistics.median(same) if same else None

    rows = [{"name": job.name, "estimate_s": estimate(job)} for job in todo]
    waves = []
    for first in range(0, len(rows), parallel):
        wave = [row["estimate_s"] for row in rows[first:first + parallel]]
        waves.append(None if None in wave else max(wave))
    known = [wave for wave in waves if wave is not None]
    calls = None
    if call_seconds is not None and known:
        calls, used = 1, 0.0
        for wave in known:
            if used and not late_start_fits(call_seconds - used, wave):
                calls, used = calls + 1, 0.0
            used += wave
    plan = {"done": len(jobs) - len(todo), "todo": rows, "waves": waves,
            "machine_s": sum(known), "calls": calls}
    print(f"{plan['done']} of {len(jobs)} cells done; {len(rows)} to run, {parallel} at a time:")
    for row in rows:
        guess = "no finished cell of its budget" if row["estimate_s"] is None else f"~{row['estimate_s']:.0f} s"
        print(f"  {row['name']}: {guess}")
    if rows and not known:
        print("no finished cell of their budgets in the results file: no estimate")
    elif rows:
        line = f"about {plan['machine_s']:.0f} s of machine time in {len(known)} waves"
        if calls is not None:
            line += f", {calls} calls of --call-seconds {call_seconds:.0f}"
        if len(known) < len(waves):
            line += f", and {len(waves) - len(known)} waves with no estimate"
        print(line + " (each cell as long as the median finished cell of its budget, on the card and "
                     "concurrency those ran at)")
    return plan


def run_eval(workdir: Path, flags: list[str], key: str, env: dict | None = None, also: tuple[str, ...] = ()) -> dict:
    """``eval.py`` on one trained workdir: ``{key: its run's result[key]}`` (and each of ``also`` the
    run's result has), or ``{key + "_error": output tail}``.

    Without ``env`` it runs alone, in the foreground, with the whole memory: a throughput measured
    while other cells train would not be the model's own. ``env`` (e.g. ``job_env``) runs it
    beside other processes instead.
    """
    out = workdir / f"{key}_eval.json"
    command = [sys.executable, str(ROOT / "eval.py"), "--workdir", str(workdir), "--out", str(out), "--no-progress",
               "--plots-dir", str(workdir), *flags]
    if env is None:
        env = dict(os.environ)
        env.pop("XLA_PYTHON_CLIENT_MEM_FRACTION", None)
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-1500:]
        print(f"eval.py failed on {workdir}:\n{tail}", flush=True)
        return {f"{key}_error": f"exit {done.returncode}: {tail}"}
    run = json.loads(out.read_text())["runs"][0]
    return {k: run[k] for k in (key, *also) if k in run}


def evaluate_cells(results: dict, workroot: Path, flags: list[str], key: str, results_path: Path) -> None:
    """Add ``key`` from ``eval.py`` to every trained cell that lacks it, one cell at a time, saving as it goes."""
    for name, cell in results["cells"].items():
        if "error" in cell or key in cell or not (workroot / name).is_dir():
            continue
        cell.pop(f"{key}_error", None)
        cell.update(run_eval(workroot / name, flags, key))
        results_path.write_text(json.dumps(results, indent=2))


def add_grid_arguments(parser, *, results: str, workroot: str, timeout: float) -> None:
    """The options every runner shares: concurrency, time limit, where results and runs go, overrides."""
    parser.add_argument("--jobs", type=int, default=1, help="training processes at a time")
    parser.add_argument("--timeout", type=float, default=timeout, help="seconds per cell")
    parser.add_argument("--retry-errors", action="store_true", help="run cells that failed before again")
    parser.add_argument("--start-before", type=float, default=None, metavar="SECONDS",
                        help="start no cell later than this after the call began (the rest wait for another call)")
    parser.add_argument("--call-seconds", type=float, default=None, metavar="SECONDS",
                        help="end every cell's training within this many seconds of the call's start; after "
                             "--start-before, "
                             f"start a cell while {LATE_START_MARGIN}x the longest cell finished in this call is "
                             "left")
    parser.add_argument("--gpus", nargs="+", default=None, metavar="ID",
                        help="spread the jobs over these GPUs (each job's CUDA_VISIBLE_DEVICES; '0,1' gives a job "
                             "two GPUs, data-parallel); default: the jobs share what they see")
    parser.add_argument("--results", default=results)
    parser.add_argument("--workroot", default=workroot)
    parser.add_argument("--dry-run", action="store_true",
                        help="run and write nothing: print the cells a call would run, in order, with the machine "
                             "time the finished cells predict for them")
    parser.add_argument("--plot-only", action="store_true",
                        help="run nothing: redraw the plots of --results (e.g. after merging results of several calls)")
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides for every cell")


def save_grid(results: dict, args, **settings) -> None:
    """Record the runner's ``settings`` in ``results`` and write it to ``--results``; nothing
    under ``--plot-only``, where the file is only read."""
    if args.plot_only:
        return
    results.update(settings)
    Path(args.results).write_text(json.dumps(results, indent=2))


def base_model(config_path: str, overrides: list[str]):
    """The config file's ModelConfig with the command line's ``model.*`` overrides applied (not
    validated: the data it names need not be on this machine)."""
    from dma_jax.training.config import load_config

    return load_config(config_path, [o for o in overrides if o.startswith("model.")], validate=False).model


def report_summary(results: dict, args, rows: list[dict], plot, print_table, waiting: str, **settings) -> None:
    """The end of a runner that summarises: store ``rows`` as ``results["summary"]`` with the
    runner's ``settings`` (``save_grid``), draw ``plot(rows, results, <results>.png)`` (it returns
    the files it wrote) and print the table; without rows, say what is still ``waiting``."""
    results["summary"] = rows
    save_grid(results, args, **settings)
    if not rows:
        print(f"wrote {args.results}; {waiting}")
        return
    written = plot(rows, results, Path(args.results).with_suffix(".png"))
    print(f"wrote {args.results} and {', '.join(map(str, written))}")
    print_table(rows)


def run_grid_from_args(jobs: list[Job], args, after=None) -> dict:
    """``run_grid`` with the options of ``add_grid_arguments``; with ``--plot-only``, just the results file;
    with ``--dry-run``, ``plan_grid``'s printout, then exit."""
    if args.plot_only:
        if not Path(args.results).exists():
            raise SystemExit(f"--plot-only: {args.results} does not exist")
        return json.loads(Path(args.results).read_text())
    if args.dry_run:
        plan_grid(jobs, Path(args.results), parallel=args.jobs, call_seconds=args.call_seconds,
                  retry_errors=args.retry_errors)
        raise SystemExit(0)
    return run_grid(jobs, Path(args.results), Path(args.workroot), parallel=args.jobs, timeout_s=args.timeout,
                    retry_errors=args.retry_errors, start_before_s=args.start_before, gpus=args.gpus, after=after,
                    call_seconds=args.call_seconds)
