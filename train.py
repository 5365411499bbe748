"""Train a decoder LM (any attention kind) from a config in ``configs/``.

    python train.py --config configs/smoke.py --workdir runs/smoke [key=value ...]

Overrides address the config tree: ``model.attention=swa``, ``optim.peak_lr=1e-3``,
``data.seq_len=512``, ``mesh.fsdp=4``, ``steps=2000``. Running again in the same workdir resumes
from its last checkpoint. Several processes (GPU clusters, TPU pods): see docs/training.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a Python file defining get_config() -> TrainConfig")
    parser.add_argument("--workdir", required=True, help="checkpoints, metrics.jsonl and config.json go here")
    parser.add_argument("--stop-after", type=int, default=None, help="leave after this many steps (as if preempted)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--distributed", action="store_true",
                        help="call jax.distributed.initialize() (auto-detects TPU pods, SLURM, Kubernetes)")
    parser.add_argument("--coordinator", default=None, help="host:port of process 0 (multi-process without auto-detection)")
    parser.add_argument("--num-processes", type=int, default=None)
    parser.add_argument("--process-id", type=int, default=None)
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # Validate the config before JAX touches a device.
    from dma_jax.training.config import load_config

    try:
        config = load_config(args.config, args.overrides)
    except (ValueError, FileNotFoundError) as error:
        print(f"train.py: bad config: {error}", file=sys.stderr)
        return 2
    import jax

    if args.coordinator is not None:
        if jax.config.jax_platforms == "cpu" or jax.config.jax_platforms is None and not _has_accelerator():
            jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU processes talk over gloo
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    elif args.distributed:
        jax.distributed.initialize()
    from dma_jax.training.loop import train

    train(config, args.workdir, stop_after=args.stop_after, progress=not args.no_progress)
    return 0


def _has_accelerator() -> bool:
    import shutil

    return shutil.which("nvidia-smi") is not None or any(Path("/dev").glob("accel*"))


if __name__ == "__main__":
    sys.exit(main())
