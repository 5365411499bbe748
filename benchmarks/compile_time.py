"""Compile time of a train step against model depth, with the blocks unrolled and scanned.

    python -m benchmarks.compile_time --out results/benchmarks/compile_time_cpu.json

For each depth and ``scan_layers`` setting: a narrow decoder LM (``--d-model``, DMA through the
XLA path unless ``--attention`` says otherwise, remat on, as the 1.7B config runs), the seconds
to lower and compile its jitted forward+backward+AdamW step for one batch. Prints a table last.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from benchmarks.common import result_header, write_json
from dma_jax.data import DataConfig
from dma_jax.models import ModelConfig
from dma_jax.sharding import MeshConfig, global_batch, make_mesh
from dma_jax.training.config import TrainConfig
from dma_jax.training.optimizer import OptimConfig
from dma_jax.training.step import config_train_step
from dma_jax.evaluation.throughput import random_batch


def compile_seconds(model: ModelConfig, seq_len: int, batch: int) -> float:
    """Seconds to lower and compile one train step of ``model`` (abstract state: nothing is run)."""
    config = TrainConfig(model=model, data=DataConfig(kind="mqar", seq_len=seq_len, global_batch_size=batch,
                                                      vocab_size=model.vocab_size), optim=OptimConfig(warmup_steps=1))
    mesh = make_mesh(MeshConfig())
    _, state, _, step = config_train_step(config, mesh, abstract=True)
    with jax.set_mesh(mesh):
        batch_arrays = global_batch(random_batch(np.random.default_rng(0), model.vocab_size, batch, seq_len), mesh)
        started = time.perf_counter()
        step.lower(state, batch_arrays).compile()
        return time.perf_counter() - started


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depths", type=int, nargs="+", default=[2, 8, 16, 28])
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--attention", default="dma")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    rows = []
    for depth in args.depths:
        for scan in (False, True):
            model = ModelConfig.preset("tiny", attention=args.attention, d_model=args.d_model, num_layers=depth,
                                       implementation="xla", remat=True, scan_layers=scan)
            rows.append(dict(layers=depth, scan_layers=scan, compile_s=compile_seconds(model, args.seq_len, args.batch)))
            print(rows[-1], flush=True)
    result = dict(**result_header("compile_time", "benchmarks.compile_time", argv), settings=dict(vars(args)), rows=rows)
    if args.out:
        write_json(result, args.out)
    print(f"\n{'layers':>6}{'unrolled s':>12}{'scanned s':>11}")
    for depth in args.depths:
        times = {r["scan_layers"]: r["compile_s"] for r in rows if r["layers"] == depth}
        print(f"{depth:>6}{times[False]:>12.1f}{times[True]:>11.1f}")
    return result


if __name__ == "__main__":
    main()
