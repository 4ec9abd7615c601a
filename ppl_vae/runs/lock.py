"""One writer per folder: an exclusive ``fcntl.flock`` on ``FOLDER/.lock``.

The lock is held by an open file, so the kernel releases it when the holder exits, however it
exits (a ``kill -9`` leaves no stale lock). The file keeps the holder's PID so that a second
writer is told who holds it. Within one process the lock is re-entrant per folder, so
:func:`ppl_vae.runs.train_run` can hold a run folder while ``fit`` locks its checkpoint.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from ..errors import RunLockedError
from .files import disk_error

__all__ = ["LOCK_FILE", "lock_folder"]

LOCK_FILE = ".lock"

_held: dict[str, list[int]] = {}  # realpath -> [fd, depth] (this process)
_guard = threading.Lock()


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return f"PID {text}" if text.isdigit() else "another process (PID unknown)"


@contextlib.contextmanager
def lock_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the writer's lock on folder ``path`` (created if missing) for the ``with`` block.

    Raises:
        RunLockedError: another process holds it (the message names its PID).
        ResourceError: the folder cannot be created or written.
    """
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise disk_error(err, f"cannot create {str(folder)!r}") or err from None
    key = os.path.realpath(folder)
    with _guard:
        entry = _held.get(key)
        if entry is not None:
            entry[1] += 1
    if entry is not None:
        try:
            yield folder
        finally:
            with _guard:
                entry[1] -= 1
        return
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise disk_error(err, f"cannot lock {str(folder)!r}") or err from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(
                f"{str(folder)!r} is being written by {_holder(fd)}: one writer per run folder; wait "
                "for it to finish (or stop it), or choose another --out"
            ) from None
        pid = str(os.getpid()).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, pid + b"\n", 0)
        with _guard:
            _held[key] = [fd, 1]
        try:
            yield folder
        finally:
            with _guard:
                del _held[key]
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
