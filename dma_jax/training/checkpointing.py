"""Orbax checkpoints of a training run: the train state and the data iterator, saved together.

``Checkpointer`` wraps an ``orbax.checkpoint.CheckpointManager``: saves every ``every`` steps
(asynchronously if asked; Orbax writes to a temporary directory and renames it, so a checkpoint
is either complete or absent), keeps the last ``keep``, and restores the state straight into its
shardings. Every process calls every method (Orbax coordinates multi-host writes; grain writes
each process's iterator state to its own file).
"""

from __future__ import annotations

from pathlib import Path

import grain
import orbax.checkpoint as ocp


class Checkpointer:
    def __init__(self, directory: str | Path, *, every: int, keep: int, async_save: bool = True):
        """``every``: save interval in steps (0: only when forced)."""
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=every if every > 0 else 2**31 - 1,
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self.manager = ocp.CheckpointManager(Path(directory).absolute(), options=options)

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

    def restore(self, step: int, target_state, data_iterator):
        """The state at ``step`` restored into ``target_state``'s shapes and shardings (a tree of
        ``jax.ShapeDtypeStruct``); ``data_iterator`` is moved to where it was at that step."""
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(target_state), data=grain.checkpoint.CheckpointRestore(data_iterator)
        )
        return self.manager.restore(step, args=args)["state"]

    def restore_params(self, step: int, target_params):
        """Only the parameters of the train state at ``step``: no optimizer moments are read, so
        evaluating needs about a third of the memory that restoring the whole state would."""
        target = {"params": target_params}
        only_params = ocp.args.PyTreeRestore(item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                                             partial_restore=True)
        return self.manager.restore(step, args=ocp.args.Composite(state=only_params))["state"]["params"]

    def metadata(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore()))["metadata"]

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()
