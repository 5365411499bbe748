"""How fast the config's grain pipeline delivers training batches, and whether it slows a loop
that trains while it reads, for each number of read threads and worker processes.

    python -m benchmarks.data_pipeline --config configs/window_sweep.py --out results/benchmarks/data_pipeline.json
    python -m benchmarks.data_pipeline --config configs/mqar.py --threads 4 --processes 0 3 \
        --out results/benchmarks/data_pipeline/mqar_h100.json data.seq_len=1024 data.mqar_num_kv_pairs=16

For each ``--threads`` value (``data.read_threads``) and each ``--processes`` value
(``data.read_processes``, grain worker processes; 0 reads in this process), one iterator of the
config's training data (``make_iterator``, warmed up by five batches) is timed two ways, ``--batches`` batches each:

* ``ms_per_batch_alone``: batches taken back to back, nothing else running;
* ``ms_per_step_in_loop``: a stand-in for the training loop that takes a batch, runs
  ``--python-ms`` of Python (holding the interpreter lock, as dispatching a step does) and then
  waits ``--wait-ms`` without it (as the loop does while the device computes). Equal to
  python-ms + wait-ms when the reading hides behind the step.

No device work: this isolates the host side. Writes --out (JSON: card, command, rows) and prints a
table last.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from benchmarks.common import result_header, write_json
from dma_jax.data import make_iterator
from dma_jax.training.config import load_config


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def measure(config, threads: int, processes: int, batches: int, python_ms: float, wait_ms: float) -> dict:
    """One row: the iterator with ``threads`` read threads in each of ``processes`` worker processes
    (0: in this process), alone and inside the stand-in loop."""
    data = dataclasses.replace(config.data, read_threads=threads, read_processes=processes)
    iterator = make_iterator(data)
    for _ in range(5):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    alone = (time.perf_counter() - start) / batches
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
        _busy(python_ms / 1e3)
        time.sleep(wait_ms / 1e3)
    in_loop = (time.perf_counter() - start) / batches
    iterator.close()
    return {"read_threads": threads, "read_processes": processes, "ms_per_batch_alone": alone * 1e3,
            "ms_per_step_in_loop": in_loop * 1e3, "loop_work_ms": python_ms + wait_ms}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/window_sweep.py")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--processes", type=int, nargs="+", default=[0], help="worker processes (data.read_processes)")
    p.add_argument("--batches", type=int, default=60)
    p.add_argument("--python-ms", type=float, default=2.0, help="Python work a step, under the interpreter lock")
    p.add_argument("--wait-ms", type=float, default=15.0, help="wait a step without the lock (the device's time)")
    p.add_argument("--out", default="results/benchmarks/data_pipeline.json")
    p.add_argument("overrides", nargs="*", help="key=value overrides, as train.py takes them")
    args = p.parse_args(argv)
    if args.batches < 1 or min(args.threads) < 1:
        p.error("--batches and every --threads value must be at least 1")
    if min(args.processes) < 0:
        p.error("every --processes value must be at least 0")
    config = load_config(args.config, args.overrides)
    rows = [measure(config, t, n, args.batches, args.python_ms, args.wait_ms)
            for n in args.processes for t in args.threads]
    result = {**result_header("data_pipeline", "benchmarks.data_pipeline", argv), "config": args.config,
              "overrides": args.overrides, "batches": args.batches, "seq_len": config.data.seq_len,
              "global_batch_size": config.data.global_batch_size, "rows": rows}
    write_json(result, args.out)
    print(f"\n{'read threads':>12s} {'processes':>9s} {'ms/batch alone':>15s} {'ms/step in loop':>16s} {'loop work ms':>13s}")
    for row in rows:
        print(f"{row['read_threads']:12d} {row['read_processes']:9d} {row['ms_per_batch_alone']:15.2f} "
              f"{row['ms_per_step_in_loop']:16.2f} {row['loop_work_ms']:13.1f}")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
