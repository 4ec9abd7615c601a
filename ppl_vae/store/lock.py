"""One writer per folder: an exclusive ``fcntl.flock`` on ``FOLDER/.lock``.

The lock is held by an open file, so the kernel releases it when the holder exits, however it
exits (a ``kill -9`` leaves no stale lock). The file keeps the holder's PID so that a second
writer is told who holds it. Within one process the lock is re-entrant per folder, so
:func:`ppl_vae.runs.train_run` can hold a run folder while ``fit`` locks its checkpoint.

The lock file is opened with ``O_NOFOLLOW`` and must be a regular file with one link: a symbolic
or hard link named ``.lock`` (a shared folder can hold one) is refused by name, never truncated.
Every writing command (``train``, ``evaluate``, ``compare``, ``plot``, ...) takes it through
:func:`lock_folder`. The commands that write single files where the user says (``sample``, ``impute``,
``score``) take :func:`lock_outputs`: the folder's ``.lock`` when it is a folder of ppl_vae's (a run or an
output folder holds one), else an ``flock`` on the folder itself, which leaves no file in a user's folder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import ResourceError, RunExistsError, RunLockedError
from .files import disk_error, refuse_link

__all__ = ["LOCK_FILE", "is_main_process", "lock_folder", "lock_outputs", "refuse_if_locked"]

LOCK_FILE = ".lock"

_held: dict[str, list[int]] = {}  # realpath -> [fd, depth] (this process)
_guard = threading.Lock()


def is_main_process() -> bool:
    """Rank 0 of a ``torch.distributed`` group or of a ``torchrun`` launch; True in a plain process."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank() == 0
    except ImportError:  # pragma: no cover
        pass
    return os.environ.get("RANK", "0") in ("0", "")


_PID_WIDTH = 24  # one fixed-width write, so a reader never sees half of a shorter old PID
_PID_WAIT = 1.0  # seconds a refused writer waits for the holder to write its PID


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        pass
    return True


def _holder(fd: int) -> str:
    """The holder's PID as ``"PID n"``. The holder writes it just after it takes the lock, over the PID
    of an earlier holder (a killed one leaves its own): a writer refused in that instant polls briefly
    for a PID of a live process rather than name a dead one or none."""
    deadline = time.monotonic() + _PID_WAIT
    while True:
        try:
            text = os.pread(fd, 64, 0).decode(errors="replace").strip()
        except OSError:
            text = ""
        if text.isdigit() and (_alive(int(text)) or time.monotonic() >= deadline):
            return f"PID {text}"
        if time.monotonic() >= deadline:
            return "another process (PID unknown)"
        time.sleep(0.01)


def _open_lock(folder: Path, flags: int) -> int:
    """Open ``folder/.lock`` without following a link; refuse anything but our own regular file."""
    path = folder / LOCK_FILE
    try:
        fd = os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except FileNotFoundError:
        raise
    except OSError as err:
        if err.errno == errno.ELOOP:
            refuse_link(path)
        raise disk_error(err, f"cannot lock {str(folder)!r}") or err from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        kind = "not a regular file" if not stat.S_ISREG(st.st_mode) else "a hard link"
        raise RunExistsError(
            f"{str(path)!r} is {kind}: ppl_vae keeps its writer's PID in that file and will not write "
            "it into another file; remove it (it only marks the writer), or choose another folder"
        )
    return fd


@contextlib.contextmanager
def lock_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the writer's lock on folder ``path`` (created if missing) for the ``with`` block.

    Under ``torchrun`` only rank 0 writes files, so only rank 0 takes the lock; on the other
    ranks this is a no-op.

    Raises:
        RunLockedError: another process holds it (the message names its PID).
        ResourceError: the folder cannot be created or written.
    """
    folder = Path(path)
    if not is_main_process():
        yield folder
        return
    created = not os.path.lexists(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise RunExistsError(
            f"{str(folder)!r} (or a folder above it) is a file, not a folder"
        ) from None
    except OSError as err:  # the user's path: whatever the file system says is about it, not a bug
        raise disk_error(err, f"cannot create {str(folder)!r}") or ResourceError(
            f"cannot create {str(folder)!r}: {err.strerror or err}"
        ) from None
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
    fd = _open_lock(folder, os.O_RDWR | os.O_CREAT)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(
                f"{str(folder)!r} is being written by {_holder(fd)}: one writer per run folder; wait "
                "for it to finish (or stop it), or choose another --out"
            ) from None
        os.pwrite(fd, f"{os.getpid()}\n".ljust(_PID_WIDTH).encode(), 0)
        os.ftruncate(fd, _PID_WIDTH)
        with _guard:
            _held[key] = [fd, 1]
        try:
            yield folder
        finally:
            with _guard:
                del _held[key]
            if created:
                _remove_if_unused(folder)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _remove_if_unused(folder: Path) -> None:
    """A folder this lock created and nothing was written into (a command refused after taking it):
    remove it again, so that a refusal makes nothing."""
    try:
        if os.listdir(folder) == [LOCK_FILE]:
            os.unlink(folder / LOCK_FILE)
            os.rmdir(folder)
    except OSError:
        pass


def refuse_if_locked(path: str | os.PathLike[str]) -> None:
    """Raise :class:`RunLockedError` (naming the holder) if another process holds ``path``'s lock."""
    folder = Path(path)
    if not is_main_process():
        return
    with _guard:
        if os.path.realpath(folder) in _held:
            return
    try:
        fd = _open_lock(folder, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RunLockedError(
            f"{str(folder)!r} is being written by {_holder(fd)}: one writer per run folder; wait for it to "
            "finish (or stop it), or choose another --out"
        ) from None
    finally:
        os.close(fd)


@contextlib.contextmanager
def _lock_directory(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` on the directory itself: nothing is created in it."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(
                f"{str(folder)!r} is being written by another ppl-vae command (sample, impute or "
                "score): one writer per folder; wait for it to finish, or choose another --out"
            ) from None
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def lock_outputs(*paths: str | os.PathLike[str]) -> Iterator[None]:
    """Hold one writer's lock on the folder of every output file in ``paths`` for the ``with`` block.

    A folder holding a ``.lock`` (a run folder, an evaluation's or a comparison's ``--out``) is locked
    with :func:`lock_folder`, so a ``sample --out RUN/x.png`` waits for no ``train`` and is refused while
    one writes ``RUN``; any other folder is locked by an ``flock`` on the folder itself (no file left in
    it). Folders are locked in the order of their real paths, so two commands never deadlock.

    Raises:
        RunLockedError: another process writes into one of the folders.
    """
    folders = {os.path.realpath(Path(p).parent): Path(p).parent for p in paths}
    with contextlib.ExitStack() as stack:
        if is_main_process():
            for key in sorted(folders):
                folder = folders[key]
                folder.mkdir(parents=True, exist_ok=True)
                if os.path.lexists(folder / LOCK_FILE):
                    stack.enter_context(lock_folder(folder))
                else:
                    stack.enter_context(_lock_directory(folder))
        yield
