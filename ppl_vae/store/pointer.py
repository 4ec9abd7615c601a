r"""A checkpoint whose pointer is missing or damaged: find the newest verified set, rebuild the pointer.

``CURRENT.json`` is a checkpoint's commit record (:mod:`ppl_vae.store.commit`), but the sets beside it
are complete on their own: each holds a manifest with the SHA-256 of every file. A pointer can go
missing without any set being harmed (a copy that left it out, a hand-deleted file, a truncated
transfer). Then:

- a writer (``train --resume``, :func:`rebuild_pointer`) takes the newest set that verifies — its
  manifest parses, its config checks, every file matches its hash — and points ``CURRENT.json`` at it
  (one atomic write), saying so; when sets exist and none verifies it refuses, naming why each failed;
- a reader (``evaluate``, ``plot``, ``load_run``) refuses in one line that names that set and the
  command that rebuilds the pointer (:func:`pointer_advice`), so the advice is what resume does;
- nothing is deleted: with no valid pointer a save keeps every set (``commit``'s clean-up skips them).

Sets are ordered by epoch, then by the ``-k`` suffix a repeated epoch gets.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import CheckpointError
from .checkpoint import POINTER, verify_set
from .commit import FORMAT_VERSION, write_pointer
from .files import fsync_dir, read_json
from .validate import SET_NAME, check_pointer

__all__ = [
    "newest_verified_set",
    "pointer_advice",
    "pointer_problem",
    "rebuild_pointer",
    "set_names",
]


def _order(name: str) -> tuple[int, int]:
    parts = name.split("-")
    return int(parts[1]), int(parts[2]) if len(parts) > 2 else 1


def set_names(directory: Path) -> list[str]:
    """The set folders in ``directory``, newest first."""
    try:
        names = [e.name for e in os.scandir(directory) if SET_NAME.fullmatch(e.name) and e.is_dir()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(names, key=_order, reverse=True)


def pointer_problem(directory: Path) -> str | None:
    """What is wrong with ``directory/CURRENT.json`` (``"is missing"``, ...), or None when it names a set
    that exists. A pointer that parses but disagrees with its set's manifest is not a pointer problem:
    that set was changed, and loading it refuses by name."""
    path = directory / POINTER
    try:
        pointer = check_pointer(read_json(path, CheckpointError), path, FORMAT_VERSION)
    except FileNotFoundError:
        return "is missing"
    except CheckpointError as err:
        return f"is damaged ({str(err).removeprefix(str(path)).lstrip(': ')})"
    if not (directory / pointer["set"]).is_dir():
        return f"names {pointer['set']}, which does not exist"
    return None


def newest_verified_set(directory: Path) -> tuple[str | None, dict[str, str]]:
    """``(name of the newest set that verifies, {newer set: why it did not})``; ``(None, ...)`` if none does."""
    failed: dict[str, str] = {}
    for name in set_names(directory):
        try:
            verify_set(directory / name)
        except (CheckpointError, OSError) as err:
            failed[name] = str(err) if isinstance(err, CheckpointError) else f"{err.strerror}"
            continue
        return name, failed
    return None, failed


def _failures(failed: dict[str, str]) -> str:
    shown = "; ".join(f"{k}: {v}" for k, v in list(failed.items())[:2])
    return shown + (f"; and {len(failed) - 2} more" if len(failed) > 2 else "")


def pointer_advice(directory: Path, command: str) -> str | None:
    """For a reader: one sentence on a missing or damaged pointer (None when it is fine, or when there is
    no set at all: then the run simply has no completed epoch). ``command`` rebuilds the pointer."""
    problem = pointer_problem(directory)
    if problem is None or not set_names(directory):
        return None
    name, failed = newest_verified_set(directory)
    where = str(directory / POINTER)
    if name is None:
        return (
            f"{where} {problem} and none of the sets beside it verifies ({_failures(failed)}): nothing "
            "was deleted; restore the checkpoint folder from a copy, or train a new run"
        )
    return (
        f"{where} {problem}, but {name} is complete and hash-verified: `{command}` rebuilds the "
        "pointer from it, deleting nothing (and trains any epochs the run still lacks); then run "
        "this again"
    )


def rebuild_pointer(directory: str | os.PathLike[str]) -> str | None:
    """Under the writer's lock: when the pointer is missing or damaged and a set verifies, point it at the
    newest such set and return a sentence saying so; None when the pointer is fine or there is no set.

    Raises:
        CheckpointError: sets exist but none verifies (each one's reason named; nothing deleted).
    """
    directory = Path(directory)
    problem = pointer_problem(directory)
    if problem is None or not set_names(directory):
        return None
    name, failed = newest_verified_set(directory)
    if name is None:
        raise CheckpointError(
            f"{directory / POINTER} {problem} and none of the sets beside it verifies "
            f"({_failures(failed)}): nothing was deleted; restore the checkpoint folder from a copy, "
            "or start a new run with another --out"
        )
    manifest, config = verify_set(directory / name)
    epoch = config["training"].get("epoch", 0)
    write_pointer(directory, name, epoch if isinstance(epoch, int) else 0, manifest)
    fsync_dir(directory)
    newer = f" (newer sets that do not verify: {_failures(failed)})" if failed else ""
    return (
        f"{directory / POINTER} {problem}: rebuilt it from {name}, the newest complete, hash-verified "
        f"set{newer}; nothing was deleted"
    )
