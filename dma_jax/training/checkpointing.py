"""Orbax checkpoints of a training run: the train state and the data iterator, saved together.

``Checkpointer`` wraps an ``orbax.checkpoint.CheckpointManager``: saves every ``every`` steps
(asynchronously if asked; Orbax writes to a temporary directory and renames it, so a checkpoint
is either complete or absent), keeps the last ``keep``, and restores the state straight into its
shardings. Every process calls every method (Orbax coordinates multi-host writes; grain writes
each process's iterator state to its own file).

Restoring is defensive:
- ``restore_newest`` falls back to the newest checkpoint that restores cleanly, says which ones it
  skipped and why, and moves them aside (``damaged_checkpoints/`` beside ``checkpoints/``) so the
  run can save those steps again;
- before any restore, the checkpoint's parameter tree is compared with the model's, and a
  mismatch (a config that names another model) is refused with the first differing parameter,
  instead of Orbax's partial restore silently dropping or inventing parameters;
- so is a data iterator state of another form than the run's iterator (``data.read_processes``
  changed), which would otherwise fail as damage and set every checkpoint aside.

Directories may be local or remote (``gs://...``): they are ``etils.epath`` paths.
"""

from __future__ import annotations

import json
import logging
import os

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath

from dma_jax.sharding import path_name

log = logging.getLogger(__name__)


class CheckpointMismatch(ValueError):
    """A checkpoint's parameters do not match the model it is restored into."""


class NoCheckpointRestores(RuntimeError):
    """Checkpoints exist, and none of them restores."""


def as_directory(path) -> epath.Path:
    """An absolute ``epath.Path``: local paths are made absolute, URIs (``gs://...``) kept as they are."""
    text = os.fspath(path)
    return epath.Path(text if "://" in text else os.path.abspath(text))


def _shapes(tree, prefix: str = "") -> dict[str, tuple]:
    """{parameter path: shape} of a tree of arrays or array metadata (paths as ``path_name``)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {prefix + path_name(path): tuple(getattr(leaf, "shape", ())) for path, leaf in leaves}


def first_mismatch(saved: dict[str, tuple], expected: dict[str, tuple]) -> str | None:
    """A sentence naming the first parameter (sorted by path) where two {path: shape} maps differ."""
    for name in sorted(set(saved) | set(expected)):
        if name not in expected:
            return f"{name} {saved[name]} is in the checkpoint but not in the model"
        if name not in saved:
            return f"{name} {expected[name]} is in the model but not in the checkpoint"
        if saved[name] != expected[name]:
            return f"{name} has shape {saved[name]} in the checkpoint and {expected[name]} in the model"
    return None


class Checkpointer:
    def __init__(self, directory, *, every: int, keep: int, async_save: bool = True):
        """``every``: save interval in steps (0: only when forced)."""
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=every if every > 0 else 2**31 - 1,
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self.directory = as_directory(directory)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state, data_iterator, *, metadata: dict | None = None, force: bool = False) -> bool:
        """Save if ``step`` is on the interval (or ``force``); returns whether a save started."""
        items = {"state": ocp.args.StandardSave(state), "data": grain.checkpoint.CheckpointSave(data_iterator)}
        if metadata is not None:
            items["metadata"] = ocp.args.JsonSave(metadata)
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def reached_preemption(self, step: int) -> bool:
        """Whether every process has been told to stop (multi-process runs: JAX's preemption sync)."""
        return bool(self.manager.reached_preemption(step))

    def saved_params(self, step: int) -> dict[str, tuple]:
        """{parameter path: shape} of the parameters saved at ``step``, from the checkpoint's metadata."""
        metadata = ocp.StandardCheckpointHandler().metadata(self.directory / str(step) / "state")
        return _shapes(metadata["params"])

    def check_params(self, step: int, target_params, what: str = "the model") -> None:
        """Raise ``CheckpointMismatch`` naming the first parameter where the checkpoint at ``step``
        and ``target_params`` (arrays or ShapeDtypeStructs) differ in name or shape."""
        mismatch = first_mismatch(self.saved_params(step), _shapes(target_params))
        if mismatch:
            raise CheckpointMismatch(f"checkpoint {step} in {self.directory} does not match {what}: {mismatch}")

    def check_data_state(self, step: int, data_iterator) -> None:
        """Raise ``CheckpointMismatch`` if the iterator state saved at ``step`` (this process's file)
        has other keys than ``data_iterator``'s own: another pipeline, e.g. another
        ``data.read_processes``. A file that cannot be read is left to ``restore`` (damage)."""
        name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        try:
            saved = json.loads((self.directory / str(step) / "data" / name).read_text())
        except (OSError, ValueError):
            return
        own = data_iterator.get_state()
        if isinstance(saved, dict) and isinstance(own, dict) and saved.keys() != own.keys():
            raise CheckpointMismatch(
                f"checkpoint {step} in {self.directory} holds the data iterator state of another pipeline "
                f"(keys {sorted(saved)}; this run's iterator has {sorted(own)}): resume with the data config "
                "that saved it (data.read_processes changes the state's form)")

    def restore(self, step: int, target_state, data_iterator):
        """The state at ``step`` restored into ``target_state``'s shapes and shardings (a tree of
        ``jax.ShapeDtypeStruct``); ``data_iterator`` is moved to where it was at that step."""
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(target_state), data=grain.checkpoint.CheckpointRestore(data_iterator)
        )
        return self.manager.restore(step, args=args)["state"]

    def restore_newest(self, target_state, data_iterator, what: str = "the model"):
        """(step, state) of the newest checkpoint that restores cleanly, or (0, None) without any.

        A checkpoint that fails to restore (a truncated array file, missing metadata, an empty
        iterator state, ...) is reported, moved to ``damaged_checkpoints/`` beside the checkpoint
        folder, and the one before it is tried. A parameter tree that does not match
        ``target_state["params"]`` is not damage: ``CheckpointMismatch`` is raised at once.
        Raises ``NoCheckpointRestores`` naming the folder when checkpoints exist and none restores.
        """
        steps = sorted(self.all_steps(), reverse=True)
        failures = []
        for step in steps:
            try:
                self.check_params(step, target_state["params"], what)
                self.check_data_state(step, data_iterator)
                return step, self.restore(step, target_state, data_iterator)
            except CheckpointMismatch:
                raise
            except Exception as error:  # noqa: BLE001 -- any failure to read a checkpoint is damage
                reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:300]
                failures.append(f"checkpoint {step}: {reason}")
                moved = self._set_aside(step)
                log.warning("checkpoint %d in %s does not restore (%s); %s; trying the one before", step,
                            self.directory, reason, f"moved to {moved}" if moved else "left in place")
                print(f"warning: skipped checkpoint {step} ({reason})" + (f"; moved to {moved}" if moved else ""),
                      flush=True)
        if failures:
            raise NoCheckpointRestores(f"no checkpoint in {self.directory} restores: " + "; ".join(failures))
        return 0, None

    def _set_aside(self, step: int) -> epath.Path | None:
        """Move a damaged checkpoint out of the manager's folder, so its step can be saved again.
        Only the lead process moves it (the others wait for it at the next save)."""
        if jax.process_index() != 0:
            return None
        source = self.directory / str(step)
        target_root = self.directory.parent / "damaged_checkpoints"
        target_root.mkdir(parents=True, exist_ok=True)
        target = target_root / str(step)
        suffix = 1
        while target.exists():
            target, suffix = target_root / f"{step}.{suffix}", suffix + 1
        try:
            source.rename(target)
        except OSError:
            return None
        self.manager.reload()
        return target

    def restore_params(self, step: int | None, target_params, what: str = "the model"):
        """Only the parameters of the train state at ``step`` (None: the newest that restores): no
        optimizer moments are read, so evaluating needs about a third of the memory that restoring
        the whole state would. Returns (step, params). The parameter tree is checked first."""
        steps = [step] if step is not None else sorted(self.all_steps(), reverse=True)
        failures = []
        target = {"params": target_params}
        only_params = ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True
        )
        for candidate in steps:
            try:
                self.check_params(candidate, target_params, what)
                restored = self.manager.restore(candidate, args=ocp.args.Composite(state=only_params))
            except CheckpointMismatch:
                raise
            except Exception as error:  # noqa: BLE001 -- damage: try the one before when no step was asked
                if step is not None:
                    raise
                failures.append(f"checkpoint {candidate}: {type(error).__name__}")
                print(f"warning: skipped checkpoint {candidate} ({type(error).__name__}: {error})"[:400], flush=True)
                continue
            return candidate, restored["state"]["params"]
        raise NoCheckpointRestores(f"no checkpoint in {self.directory} restores: " + "; ".join(failures))

    def metadata(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore()))["metadata"]

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()
