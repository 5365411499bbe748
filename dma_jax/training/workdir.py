"""A training run's folder: one writer at a time, and a metrics log that no kill can erase.

Files (``etils.epath`` paths, so the folder may be local or remote, ``gs://...``):
- ``train.lock``: taken before anything is written, holding the process id, host and start time
  of the trainer; a second trainer on a busy workdir is refused with the holder's name, and a lock
  left by a dead process on the same host is taken over with a message;
- ``metrics.jsonl``: one JSON object per line, appended only. On resume, records past the
  checkpoint's step (they will be logged again) and a torn last line (a kill mid-write) are
  dropped by writing a new file and renaming it over the old one, never by truncating in place;
- ``config.json``: the config the run trains with (written by the loop).

``fault_point`` lets tests kill the process at chosen moments (``DMA_FAULT=<name>``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import warnings

from etils import epath

FAULT_ENV = "DMA_FAULT"


def fault_point(name: str) -> None:
    """SIGKILL this process here when the environment variable ``DMA_FAULT`` equals ``name`` (tests)."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


class WorkdirBusy(RuntimeError):
    """Another live trainer holds the workdir's lock."""


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class WorkdirLock:
    """``workdir/train.lock``: at most one trainer writes a workdir. Use as a context manager."""

    def __init__(self, workdir):
        self.path = epath.Path(workdir) / "train.lock"
        self.holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}

    def _read(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def acquire(self) -> None:
        """Take the lock or raise ``WorkdirBusy`` naming its holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.holder)
        if self._create(text):
            return
        holder = self._read()
        stale = holder is not None and holder.get("host") == self.holder["host"] and not _process_alive(int(holder["pid"]))
        if holder is None or not stale:
            who = "an unreadable lock" if holder is None else (
                f"process {holder.get('pid')} on {holder.get('host')} (since {holder.get('started')})")
            raise WorkdirBusy(
                f"{self.path.parent} is in use by {who}: one trainer per workdir. If that process is gone, "
                f"delete {self.path}"
            )
        print(f"taking over {self.path}: its holder, process {holder['pid']} on this host, is gone", flush=True)
        temporary = self.path.parent / f"train.lock.{os.getpid()}"
        temporary.write_text(text)
        temporary.replace(self.path)
        if self._read() != self.holder:
            raise WorkdirBusy(f"{self.path.parent}: another trainer took over the stale lock first")

    def _create(self, text: str) -> bool:
        """Create the lock file if it does not exist (atomically on a local disk)."""
        if "://" not in os.fspath(self.path):
            try:
                descriptor = os.open(os.fspath(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return False
            with os.fdopen(descriptor, "w") as f:
                f.write(text)
            return True
        if self.path.exists():  # object stores: no exclusive create; check, write, read back
            return False
        self.path.write_text(text)
        return self._read() == self.holder

    def release(self) -> None:
        if self._read() == self.holder:
            self.path.unlink()

    def __enter__(self) -> "WorkdirLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def read_records(path) -> list[dict]:
    """The records of a metrics log; a torn last line (a kill mid-write) is skipped with a warning.
    A line that does not parse anywhere else is an error (the file is not a metrics log)."""
    path = epath.Path(path)
    if not path.exists():
        return []
    lines = path.read_text().split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            if number == len(lines):  # the last line, with no newline after it: torn
                warnings.warn(f"{path}: dropping a torn last line ({line[:60]!r}...), from a kill mid-write")
                continue
            raise ValueError(f"{path}: line {number} is not JSON: {line[:80]!r}") from None
    return records


class MetricsLog:
    """Append-only JSONL. On resume, the records after the checkpoint's step are dropped (they will
    be logged again by the resumed run): with no checkpoint (``resume_step`` 0) every record goes,
    ``start`` included. Dropping writes a new file and renames it over the old one."""

    def __init__(self, path, resume_step: int, write: bool):
        self.path, self.write = epath.Path(path), write
        if not write or not self.path.exists():
            return
        text = self.path.read_text()
        records = read_records(self.path)
        kept = [r for r in records if resume_step > 0 and r.get("step", 0) <= resume_step]
        torn = bool(text) and not text.endswith("\n")
        if len(kept) == len(records) and not torn:
            return
        temporary = self.path.parent / f"{self.path.name}.rewrite"
        temporary.write_text("".join(json.dumps(r) + "\n" for r in kept))
        fault_point("metrics_rewrite")
        temporary.replace(self.path)

    def __call__(self, record: dict):
        if not self.write:
            return
        line = json.dumps(record) + "\n"
        with self.path.open("a") as f:
            if os.environ.get(FAULT_ENV) == "metrics_append":  # a kill in the middle of a line
                f.write(line[: len(line) // 2])
                f.flush()
                fault_point("metrics_append")
            f.write(line)
