"""Load a trained run (its ``config.json`` and a checkpoint) as a model ready to evaluate."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from flax import nnx

from dma_jax.training.checkpointing import Checkpointer
from dma_jax.models import DecoderLM
from dma_jax.sharding import MeshConfig, make_mesh
from dma_jax.training.config import TrainConfig, config_from_dict
from dma_jax.training.optimizer import make_optimizer
from dma_jax.training.step import abstract_state, state_shapes


@dataclasses.dataclass
class LoadedRun:
    workdir: Path
    config: TrainConfig
    step: int
    model: DecoderLM


def load_run(workdir: str | Path, step: int | None = None) -> LoadedRun:
    """The model of ``workdir`` at checkpoint ``step`` (default: the newest that restores).

    Raises FileNotFoundError when the workdir has no config.json or no checkpoint, and
    ``CheckpointMismatch`` (naming the first differing parameter) when the checkpoint's parameters
    are not those of the model config.json describes.
    """
    workdir = Path(workdir)
    config_path = workdir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{workdir} has no config.json: is it a train.py workdir?")
    config = config_from_dict(json.loads(config_path.read_text()))
    checkpointer = Checkpointer(workdir / "checkpoints", every=0, keep=10**6, async_save=False)
    steps = checkpointer.all_steps()
    if not steps:
        raise FileNotFoundError(f"{workdir / 'checkpoints'} holds no checkpoint")
    if step is not None and step not in steps:
        raise FileNotFoundError(f"no checkpoint at step {step} in {workdir}; have {sorted(steps)}")
    mesh = make_mesh(MeshConfig())
    graphdef, shapes, shardings = state_shapes(config, make_optimizer(config.optim, config.steps), mesh)
    what = f"{config_path}'s model (attention={config.model.attention})"
    step, params = checkpointer.restore_params(step, abstract_state(shapes["params"], shardings["params"]), what)
    checkpointer.close()
    return LoadedRun(workdir, config, step, nnx.merge(graphdef, params))
