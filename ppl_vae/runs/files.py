"""Strict JSON and atomic files: what every file ppl_vae writes goes through.

- :func:`to_jsonable` turns what the package records (floats, NumPy scalars, tensors of one
  element, tuples, paths) into plain JSON types; a non-finite float becomes ``null``, so the
  output never holds ``NaN``/``Infinity`` tokens (which are not JSON).
- :func:`write_json` / :func:`write_bytes` write a temporary file beside the target, ``fsync``
  it, move it into place with :func:`os.replace` and ``fsync`` the folder: a reader sees the
  old file or the new one, never a torn one. A full disk or a read-only folder raises
  :class:`~ppl_vae.errors.ResourceError` (temporary file removed, old file untouched).
- :func:`read_json` reads a file that must hold a JSON object, naming the file in every error.
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ArgumentTypeError, ResourceError, RunError

__all__ = ["disk_error", "fsync_dir", "read_json", "to_jsonable", "write_bytes", "write_json"]

#: errno values that mean "the file system cannot take this write" (not a bug)
DISK_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


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


def _atomic(path: Path, write: Callable[[Any], None], mode: str) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # as open() would make it, not mkstemp's 0600
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename, fsync of the folder)."""
    try:
        _atomic(Path(path), lambda f: f.write(data), "wb")
    except OSError as err:
        raise disk_error(err, f"could not write {os.fspath(path)}") or err from None


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as strict JSON to ``path`` atomically (non-finite floats become null)."""
    write_bytes(path, dumps(obj).encode())


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
