r"""A command's outputs committed as one unit: a folder swapped in whole, never one file at a time.

An evaluation (``evaluation.json``, ``.csv``, ``.nc``, ``khat.png``, ``gap_hist.png``) or a comparison
(``comparison.csv``, ``paired.csv``, ``comparison.nc``, ``comparison.png``) is an *output set*: the
folder ``OUT/evaluation`` (``OUT/comparison``) holds its files and ``MANIFEST.json``, which records what
produced them (the command, the evaluated epoch and checkpoint set, K, the seed, ...) and each file's
SHA-256 and size. Renaming files into place one by one leaves a mixed set when the process dies
between two renames (K=3000 numbers beside K=100 figures); a set is committed as checkpoints are
(:mod:`ppl_vae.store.commit`, whose writer and fault-injection hook it shares):

1. every file is written into ``OUT/.evaluation.tmp-PID-HEX`` and fsynced, then that folder;
2. the new folder and ``OUT/evaluation`` are swapped in one step, ``renameat2(RENAME_EXCHANGE)``
   (Linux 3.15+; a plain rename when there is no set yet), and ``OUT`` is fsynced;
3. the previous set, now under the temporary name, is removed.

At every moment ``OUT/evaluation`` is one complete set, so a script that reads
``runs/a/evaluation/evaluation.csv`` with pandas never sees half of one. Where the file system cannot
exchange (``EINVAL``), step 2 is two renames (the old set aside to ``OUT/.evaluation.old-PID-HEX``,
the new one in): in that instant, or after a crash there, readers read the ``.old`` set and the next
writer puts it back first. A reader (:func:`read_output_set`) opens the set folder once and reads every
file through that descriptor, so it sees one set even while a writer swaps, checking each file
against the manifest. Nothing the user made is removed: a set folder holding files the manifest does
not list, or one with no manifest, is refused by name; no path is followed through a symbolic link.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MissingFileError, RunError, RunExistsError
from .commit import fault, remove, sha256, write_set_folder
from .files import disk_error, dumps, fsync_dir, refuse_link

__all__ = [
    "MANIFEST",
    "OutputSet",
    "check_replaceable",
    "commit_output_set",
    "describe_output_set",
    "read_output_set",
]

MANIFEST = "MANIFEST.json"
FORMAT = "ppl_vae.outputs/1"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _leftover(name: str) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(name)}\.(tmp|old)-\d+-[0-9a-f]{{8}}")


# ------------------------------------------------------------------------------ the switch
def _renameat2():
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # not glibc >= 2.28 (or not Linux)
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _renameat2()


def exchange(a: Path, b: Path) -> bool:
    """Swap the paths ``a`` and ``b`` in one step; False where the system or file system cannot."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


# ------------------------------------------------------------------------------ reading
@dataclass(frozen=True)
class OutputSet:
    """One committed output set: its folder, what produced it, and its files' bytes (hash-checked)."""

    path: Path
    record: dict[str, Any]
    files: dict[str, bytes]
    #: every file the manifest lists (``files`` holds those that were asked for)
    listed: tuple[str, ...] = ()

    def json(self, name: str) -> Any:
        return json.loads(self.files[name])


def _read_manifest(fd: int, where: Path) -> dict[str, Any]:
    try:
        with open(os.open(MANIFEST, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd), "rb") as f:
            doc = json.loads(f.read())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as err:
        raise RunError(f"{where / MANIFEST} cannot be read ({err})") from None
    files = doc.get("files") if isinstance(doc, dict) else None
    if doc.get("format") != FORMAT or not isinstance(files, dict):
        raise RunError(f"{where / MANIFEST} is not an output manifest of this ppl_vae")
    return doc


def _read_set(folder: Path, names: list[str] | None) -> OutputSet:
    """Read a set through one descriptor of its folder (FileNotFoundError: it was swapped away)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as err:
        if err.errno == errno.ELOOP:
            refuse_link(folder)
        raise
    try:
        doc = _read_manifest(fd, folder)
        data: dict[str, bytes] = {}
        for name in doc["files"] if names is None else names:
            entry = doc["files"].get(name)
            if entry is None:
                raise MissingFileError(
                    f"{folder} holds no {name} (its manifest lists {sorted(doc['files'])})"
                )
            with open(os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd), "rb") as f:
                data[name] = f.read()
            if sha256(data[name]) != entry.get("sha256"):
                raise RunError(
                    f"{folder / name} does not match {folder / MANIFEST}: it was edited, truncated or "
                    "copied from another set; run the command again (with --force) to remake the set"
                )
    finally:
        os.close(fd)
    return OutputSet(folder, dict(doc.get("record") or {}), data, tuple(doc["files"]))


def _aside(out: Path, name: str) -> list[Path]:
    """Sets moved aside by a two-rename switch (``.NAME.old-...``), newest first."""
    pattern = _leftover(name)
    try:
        found = [e for e in os.scandir(out) if pattern.fullmatch(e.name) and ".old-" in e.name]
    except OSError:
        return []
    return [Path(e.path) for e in sorted(found, key=lambda e: e.stat().st_mtime, reverse=True)]


def read_output_set(
    out: str | os.PathLike[str], name: str, files: list[str] | None = None
) -> OutputSet:
    """The committed set ``OUT/NAME`` with the bytes of ``files`` (default: all), each checked against the
    manifest. A set swapped while it is read is read again from the start.

    Raises:
        MissingFileError: there is no such set.
        RunError: a file does not match the manifest (named), or the folder is not an output set.
    """
    out = Path(out)
    for _ in range(20):
        candidates = [out / name, *_aside(out, name)]
        for folder in candidates:
            try:
                return _read_set(folder, files)
            except FileNotFoundError:
                continue
        if not any(os.path.lexists(c) for c in candidates):
            break
    raise MissingFileError(f"{str(out)!r} holds no {name} set ({out / name / MANIFEST} is missing)")


def describe_output_set(out: Path, name: str) -> str:
    """A few words on the set in ``out`` for a refusal: ``"evaluation/ (K=1000, epoch 20)"``."""
    try:
        record = read_output_set(out, name, files=[]).record
    except (RunError, OSError):
        return f"{name}/"
    keys = (("num_samples", "K={}"), ("epoch", "epoch {}"), ("seed", "seed {}"))
    said = [fmt.format(record[k]) for k, fmt in keys if record.get(k) is not None]
    return f"{name}/ ({', '.join(said)})" if said else f"{name}/"


# ------------------------------------------------------------------------------ writing
def check_replaceable(target: Path) -> None:
    """``target`` absent, or a set of ours holding only what its manifest lists (else refused by name)."""
    refuse_link(target)
    if not os.path.lexists(target):
        return
    if not target.is_dir():
        raise RunExistsError(f"{str(target)!r} is a file, not an output set ppl_vae wrote: move it")
    try:
        listed = set(_read_set(target, names=[]).listed)
    except (RunError, OSError):
        raise RunExistsError(
            f"{str(target)!r} exists but is not an output set ppl_vae wrote (no valid {MANIFEST}): "
            "move it, or choose another --out (nothing was changed)"
        ) from None
    extra = sorted(set(os.listdir(target)) - listed - {MANIFEST})
    if extra:
        raise RunExistsError(
            f"{str(target)!r} holds files ppl_vae did not write ({', '.join(extra[:3])}"
            f"{', ...' if len(extra) > 3 else ''}): replacing the set would remove them; move them "
            "first (nothing was changed)"
        )


def _tidy(out: Path, name: str) -> None:
    """Under the lock: put back a set a crash left aside, then remove our own leftovers."""
    aside = _aside(out, name)
    if not os.path.lexists(out / name) and aside:
        os.rename(aside[0], out / name)
        fsync_dir(out)
    pattern = _leftover(name)
    for entry in os.scandir(out):
        if pattern.fullmatch(entry.name):
            fault("remove")
            remove(Path(entry.path))


def commit_output_set(
    out: str | os.PathLike[str],
    name: str,
    files: Mapping[str, bytes],
    record: Mapping[str, Any],
) -> Path:
    """Commit ``files`` as the set ``OUT/NAME`` (replacing the previous one as one unit); returns its folder.

    The caller holds ``OUT``'s writer lock (:func:`ppl_vae.store.lock.lock_folder`). ``record`` (JSON-able)
    says what produced the set; it goes into the manifest.

    Raises:
        RunExistsError: ``OUT/NAME`` is a link, a file, or a folder holding files not of the set it holds.
        ResourceError: a full disk, a file-size limit, an I/O error or a read-only folder; the previous
            set (if any) is left in place and no temporary folder remains.
    """
    out = Path(out)
    target = out / name
    check_replaceable(target)
    body = dict(files)
    body[MANIFEST] = dumps(
        {
            "format": FORMAT,
            "kind": name,
            "record": json.loads(json.dumps(dict(record), default=str)),  # anything else as text
            "files": {k: {"sha256": sha256(v), "bytes": len(v)} for k, v in files.items()},
        }
    ).encode()
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    tmp, old = out / f".{name}.tmp-{token}", out / f".{name}.old-{token}"
    switched, existed = False, os.path.lexists(target)
    try:
        _tidy(out, name)
        existed = os.path.lexists(target)
        write_set_folder(tmp, body)
        fault("rename")
        if not existed:
            os.rename(tmp, target)
        elif not exchange(tmp, target):
            os.rename(target, old)  # the two-rename switch: readers fall back to `old` meanwhile
            fault("rename")
            os.rename(tmp, target)
        switched = True
        fault("fsync")
        fsync_dir(out)
    except BaseException as err:
        if not switched:
            remove(tmp)
            if os.path.lexists(old) and not os.path.lexists(target):
                os.rename(old, target)
        if isinstance(err, OSError) and not isinstance(err, RunExistsError):
            kept = "the previous set is unchanged" if existed else "nothing was written"
            raise (
                disk_error(
                    err,
                    f"could not write {str(target)!r}",
                    f"{kept}; free space or choose another --out, then run the command again",
                )
                or err
            ) from None
        raise
    for leftover in (tmp, old):  # the previous set, under whichever name it now has
        fault("remove")
        try:
            remove(leftover)
        except OSError:
            pass  # the commit stands; the next writer removes it
    return target
