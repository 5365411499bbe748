"""Train a decoder LM (any attention kind) from a config in ``configs/``.

    python train.py --config configs/smoke.py --workdir runs/smoke [key=value ...]

Overrides address the config tree: ``model.attention=swa``, ``optim.peak_lr=1e-3``,
``data.seq_len=512``, ``mesh.fsdp=4``, ``steps=2000``. Running again in the same workdir resumes
from its newest good checkpoint. Several processes (GPU clusters, TPU pods): see docs/training.md.

Exit status: 0 when the run reached its steps or stopped cleanly (--stop-after, SIGTERM: a
checkpoint at the current step is saved first), 2 for a bad config or a checkpoint that does not
match it, 3 when another trainer holds the workdir, 1 for any other error.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_CACHE = "~/.cache/dma_jax/jax_compilation"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a Python file defining get_config() -> TrainConfig")
    parser.add_argument("--workdir", required=True, help="checkpoints, metrics.jsonl and config.json go here")
    parser.add_argument("--stop-after", type=int, default=None, help="leave after this many steps (as if preempted)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--compilation-cache", default=None, metavar="DIR",
                        help="JAX's persistent compilation cache, so a restarted job does not compile again "
                             f"(default {DEFAULT_CACHE}, or $JAX_COMPILATION_CACHE_DIR; 'none' turns it off)")
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

    _set_compilation_cache(jax, args.compilation_cache)
    if args.coordinator is not None:
        if jax.config.jax_platforms == "cpu" or jax.config.jax_platforms is None and not _has_accelerator():
            jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU processes talk over gloo
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    elif args.distributed:
        jax.distributed.initialize()
    from dma_jax.training.checkpointing import CheckpointMismatch, NoCheckpointRestores
    from dma_jax.training.loop import train
    from dma_jax.training.workdir import WorkdirBusy

    try:
        train(config, args.workdir, stop_after=args.stop_after, progress=not args.no_progress)
    except WorkdirBusy as error:
        print(f"train.py: {error}", file=sys.stderr)
        return 3
    except CheckpointMismatch as error:
        print(f"train.py: {error}", file=sys.stderr)
        return 2
    except NoCheckpointRestores as error:
        print(f"train.py: {error}", file=sys.stderr)
        return 1
    return 0


def _set_compilation_cache(jax, directory: str | None) -> None:
    """Point JAX's persistent compilation cache at ``directory`` (flag, then environment, then default)."""
    directory = directory or os.environ.get("JAX_COMPILATION_CACHE_DIR") or DEFAULT_CACHE
    if directory.lower() == "none":
        return
    if "://" not in directory:
        directory = os.path.expanduser(directory)
    jax.config.update("jax_compilation_cache_dir", directory)


def _has_accelerator() -> bool:
    import shutil

    return shutil.which("nvidia-smi") is not None or any(Path("/dev").glob("accel*"))


if __name__ == "__main__":
    sys.exit(main())
