"""Strict JSON and atomic files: what every file ppl_vae writes goes through.

- :func:`to_jsonable` turns what the package records (floats, NumPy scalars, tensors of one
  element, tuples, paths) into plain JSON types; a non-finite float becomes ``null``, so the
  output never holds ``NaN``/``Infinity`` tokens (which are not JSON).
- :func:`write_json` / :func:`write_bytes` write a temporary file beside the target, ``fsync``
  it, move it into place with :func:`os.replace` and ``fsync`` the folder: a reader sees the
  old file or the new one, never a torn one. A full disk, an I/O error or a read-only folder
  raises :class:`~ppl_vae.errors.ResourceError` (temporary file removed, old file untouched).
- No write follows a symbolic link: :func:`refuse_link` (``lstat``) refuses a link at any path
  the package writes, so a link left in a shared run folder (tarballs and ``cp -a`` keep them)
  cannot make it change a file outside; the rename itself replaces a directory entry and never
  writes through one. ``replace=False`` commits with :func:`os.link`, which refuses a file
  another process created meanwhile.
- :func:`read_json` reads a file that must hold a JSON object, naming the file in every error.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ArgumentTypeError, ResourceError, RunError, RunExistsError

__all__ = [
    "disk_error",
    "fsync_dir",
    "netcdf_bytes",
    "read_json",
    "refuse_link",
    "refuse_links",
    "to_jsonable",
    "write_bytes",
    "write_json",
]

#: errno values that mean "the file system cannot take this write" (not a bug): full, too large, over
#: quota, read-only, not permitted, or an I/O error of the device
DISK_ERRNOS = {
    errno.ENOSPC,
    errno.EFBIG,
    errno.EDQUOT,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.EIO,
}


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types; non-finite floats -> None; anything else is an ArgumentTypeError (a TypeError)."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    item = getattr(obj, "item", None)  # NumPy scalars, one-element tensors
    if callable(item) and getattr(obj, "ndim", 1) == 0:
        return to_jsonable(item())
    raise ArgumentTypeError(f"cannot record a {type(obj).__name__} in JSON: {obj!r}")


def dumps(obj: Any) -> str:
    """Strict, stable JSON text (sorted keys are not imposed; indent 2, trailing newline)."""
    return json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n"


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make a rename or a new entry in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def refuse_link(path: str | os.PathLike[str], what: str = "") -> None:
    """Refuse (:class:`~ppl_vae.errors.RunExistsError`) a symbolic link at ``path``, dangling or not.

    ``what`` says where the path came from (``"--out"``); the message names the link and its target.
    """
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(path)
        except OSError:  # pragma: no cover - raced away
            target = "?"
        raise RunExistsError(
            f"{what + ': ' if what else ''}{os.fspath(path)!r} is a symbolic link (to {target!r}): "
            "ppl_vae never writes or locks through a link (it could change a file outside the "
            "folder); remove the link (nothing was written), or choose another path"
        )


def refuse_links(folder: str | os.PathLike[str], names: Any, what: str = "") -> None:
    """:func:`refuse_link` for each of ``names`` inside ``folder`` (before any work starts)."""
    for name in names:
        refuse_link(Path(folder) / name, what)


def disk_error(err: OSError, what: str, after: str = "") -> ResourceError | None:
    """A :class:`ResourceError` for a full disk, a file-size limit or a read-only folder, else None."""
    if err.errno not in DISK_ERRNOS:
        return None
    reason = os.strerror(err.errno) if err.errno else str(err)
    return ResourceError(
        f"{what}: {reason} ({errno.errorcode.get(err.errno, err.errno)})"
        + (f"; {after}" if after else "")
    )


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def remove_stale_temps(path: Path) -> None:
    """Remove the temporary files of earlier writes of ``path`` whose process is gone (killed mid-write:
    ``.NAME.PID.XXXX.tmp``, the name only this module gives a file); a live writer's are kept."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[A-Za-z0-9_]+\.tmp")
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if m is None or int(m.group(1)) == os.getpid() or _alive(int(m.group(1))):
            continue
        if entry.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)


def _atomic(path: Path, write: Callable[[Any], None], mode: str, replace: bool) -> None:
    path = Path(path)
    refuse_link(path)
    if path.is_dir():
        raise RunExistsError(f"{str(path)!r} is a folder; ppl_vae writes a file there: move it")
    remove_stale_temps(path)
    try:
        fd, tmp = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp"
        )
    except OSError as err:  # the folder vanished, is not one, or will not take a file: not a bug
        raise disk_error(err, f"could not write {os.fspath(path)}") or ResourceError(
            f"could not write {os.fspath(path)}: cannot create a file in {os.fspath(path.parent)} "
            f"({err.strerror or err})"
        ) from None
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # as open() would make it, not mkstemp's 0600
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)  # replaces the entry (a link that raced in too), never its target
        else:
            try:
                os.link(
                    tmp, path
                )  # fails if the name exists: no file another process made is replaced
            except FileExistsError:
                raise RunExistsError(
                    f"{str(path)!r} was created by another process while this one wrote it; it was "
                    "left as it is: choose another name, or pass --force to replace it"
                ) from None
            os.unlink(tmp)
        fsync_dir(path.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes, *, replace: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename, fsync of the folder).

    A symbolic link at ``path`` is refused; ``replace=False`` refuses a file that exists by then.
    """
    try:
        _atomic(Path(path), lambda f: f.write(data), "wb", replace)
    except OSError as err:
        if isinstance(err, (RunExistsError, ResourceError)):
            raise
        raise disk_error(err, f"could not write {os.fspath(path)}") or err from None


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as strict JSON to ``path`` atomically (non-finite floats become null)."""
    write_bytes(path, dumps(obj).encode())


def netcdf_bytes(idata: Any) -> bytes:
    """An ArviZ ``InferenceData`` as netCDF-4 (HDF5) bytes, rendered in memory.

    The bytes are then written like any other file: h5py writing to a full disk has crashed the process
    (a segfault, exit 139) and left a truncated file, where a plain write fails with ``ENOSPC``.
    ``arviz.from_netcdf`` reads the file back with its groups and attributes.
    """
    import io

    buf = io.BytesIO()
    idata.to_datatree().to_netcdf(buf, engine="h5netcdf")
    return buf.getvalue()


def _no_constant(token: str) -> Any:
    raise ValueError(f"{token} is not a JSON value")


def read_json(
    path: str | os.PathLike[str], error: type[Exception] = RunError, what: str = ""
) -> dict[str, Any]:
    """Read a JSON object from ``path``; a missing, unreadable or non-object file raises ``error``."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as err:
        raise error(f"cannot read {path}: {err.strerror or err}") from None
    try:
        obj = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError, deep nesting
        detail = "nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise error(f"{path} is not valid JSON ({detail}){what}") from None
    if not isinstance(obj, dict):
        raise error(f"{path} must hold a JSON object; got a {type(obj).__name__}{what}")
    return obj
