"""Field-by-field checks of the JSON files in a checkpoint: a bad file is named with its field.

A checkpoint's files are covered by hashes, so an edited file is caught before it is parsed;
these checks are the second line, for a file that parses and hashes right but holds the wrong
thing (an older or newer layout, a consistent hand edit): every field that is read is checked
for its type here, so no ``KeyError``/``TypeError`` leaks out of a load.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from .keys import KEYS

SET_NAME = re.compile(r"epoch-\d{6,}(-\d+)?")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FILE_NAME = re.compile(r"[A-Za-z0-9_.-]+")

_TYPES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    type(None): "null",
}


def _describe(types: tuple[type, ...]) -> str:
    return " or ".join(_TYPES.get(t, t.__name__) for t in types)


def field(
    obj: dict[str, Any],
    key: str,
    types: tuple[type, ...],
    path: Path | str,
    *,
    required: bool = True,
    default: Any = None,
    prefix: str = "",
) -> Any:
    """``obj[key]`` if it has one of ``types`` (ints are not bools; a number may be an int)."""
    name = f"{prefix}{key}"
    if key not in obj:
        if required:
            raise CheckpointError(f"{path}: field {name!r} is missing")
        return default
    value = obj[key]
    ok = isinstance(value, types)
    if isinstance(value, bool) and bool not in types:
        ok = False
    if not ok and float in types and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise CheckpointError(
            f"{path}: field {name!r} must be {_describe(types)}; got "
            f"{type(value).__name__} {str(value)[:60]!r}"
        )
    return value


def _non_negative(
    obj: dict[str, Any], key: str, path: Path | str, prefix: str = "", required: bool = False
) -> None:
    value = field(obj, key, (int,), path, required=required, prefix=prefix)
    if value is not None and value < 0:
        raise CheckpointError(f"{path}: field '{prefix}{key}' must be >= 0; got {value}")


def check_format(obj: dict[str, Any], path: Path | str, newest: int) -> int:
    version = field(obj, KEYS.format, (int,), path)
    if version > newest:
        raise CheckpointError(
            f"{path} has {KEYS.format} {version}; this ppl_vae reads up to {newest}: "
            "upgrade ppl_vae to read it"
        )
    return version


def check_pointer(obj: dict[str, Any], path: Path, newest: int) -> dict[str, Any]:
    check_format(obj, path, newest)
    name = field(obj, "set", (str,), path)
    if not SET_NAME.fullmatch(name):
        raise CheckpointError(
            f"{path}: field 'set' must name a set folder like 'epoch-000003'; got {name[:60]!r}"
        )
    if not _HEX64.fullmatch(field(obj, "manifest_sha256", (str,), path)):
        raise CheckpointError(f"{path}: field 'manifest_sha256' must be 64 hexadecimal digits")
    return obj


def check_manifest(obj: dict[str, Any], path: Path, known: set[str]) -> dict[str, dict[str, Any]]:
    check_format(obj, path, 10**9)
    files = field(obj, "files", (dict,), path)
    for name, entry in files.items():
        if name not in known or not _FILE_NAME.fullmatch(name):
            raise CheckpointError(f"{path}: field 'files' lists an unknown file {name[:60]!r}")
        if not isinstance(entry, dict):
            raise CheckpointError(f"{path}: field 'files.{name}' must be an object")
        if not _HEX64.fullmatch(str(field(entry, "sha256", (str,), path, prefix=f"files.{name}."))):
            raise CheckpointError(
                f"{path}: field 'files.{name}.sha256' must be 64 hexadecimal digits"
            )
    return files


def check_config(
    obj: dict[str, Any], path: Path, newest: int, legacy: bool = False
) -> dict[str, Any]:
    """Check every field :mod:`ppl_vae.store.checkpoint` and ``fit`` read; returns ``obj``."""
    check_format(obj, path, newest) if not legacy else field(
        obj, KEYS.format, (int,), path, required=False
    )
    field(obj, "model", (dict, type(None)), path)
    if legacy:
        files = field(obj, "files", (dict,), path)
        for name, sha in files.items():
            if name not in ("model.safetensors", "optimizer.safetensors") or not isinstance(
                sha, str
            ):
                raise CheckpointError(
                    f"{path}: field 'files' has an unexpected entry {str(name)[:60]!r}"
                )
    obj["training"] = _check_training(obj, path)
    obj["data"] = field(obj, "data", (dict, type(None)), path, required=False)
    obj["extra"] = field(obj, "extra", (dict, type(None)), path, required=False)
    obj["params"] = field(obj, "params", (list,), path, required=False, default=[])
    obj["optimizer"] = _check_optimizer(obj, path)
    return obj


def _check_training(obj: dict[str, Any], path: Path) -> dict[str, Any]:
    """The config's ``training`` object (``{}`` when absent): counters, settings and the history."""
    training = field(obj, "training", (dict,), path, required=False, default={})
    for key in ("epoch", "step"):
        _non_negative(training, key, path, "training.")
    field(training, "seed", (int,), path, required=False, prefix="training.")
    field(training, "objective", (str, type(None)), path, required=False, prefix="training.")
    field(training, "lr", (float,), path, required=False, prefix="training.")
    _non_negative(training, "batch_size", path, "training.")
    history = field(
        training, "history", (list,), path, required=False, default=[], prefix="training."
    )
    for i, record in enumerate(history):
        if not isinstance(record, dict):
            raise CheckpointError(f"{path}: field 'training.history[{i}]' must be an object")
        _non_negative(record, "epoch", path, f"training.history[{i}].", required=True)
    return training


def _check_optimizer(obj: dict[str, Any], path: Path) -> dict[str, Any] | None:
    """The config's ``optimizer`` object (or None): its class, parameter groups and per-parameter scalars."""
    optimizer = field(obj, "optimizer", (dict, type(None)), path, required=False)
    if optimizer is None:
        return None
    field(optimizer, "class", (str,), path, prefix="optimizer.")
    groups = field(optimizer, "param_groups", (list,), path, prefix="optimizer.")
    for i, group in enumerate(groups):
        if not isinstance(group, dict):
            raise CheckpointError(f"{path}: field 'optimizer.param_groups[{i}]' must be an object")
        params = field(group, "params", (list,), path, prefix=f"optimizer.param_groups[{i}].")
        if not all(isinstance(p, int) and not isinstance(p, bool) for p in params):
            raise CheckpointError(
                f"{path}: field 'optimizer.param_groups[{i}].params' must list integers"
            )
        field(group, "lr", (float,), path, required=False, prefix=f"optimizer.param_groups[{i}].")
    scalars = field(
        optimizer, "scalars", (dict,), path, required=False, default={}, prefix="optimizer."
    )
    optimizer["scalars"] = scalars
    for idx, entry in scalars.items():
        if not idx.isdigit() or not isinstance(entry, dict):
            raise CheckpointError(
                f"{path}: field 'optimizer.scalars.{idx[:20]}' must be an object "
                "under a parameter index"
            )
    return optimizer
