"""The write side of a checkpoint: one new immutable set, fsynced, renamed into place, one pointer switched.

See :mod:`ppl_vae.store.checkpoint` for the layout. ``PPL_VAE_FAULT_AT=KIND:N`` (a test hook) makes
the process exit with status 137 just before its N-th ``write``, ``fsync``, ``rename`` or ``remove``
here or in an output set's commit (:mod:`ppl_vae.store.outputs`, which shares :func:`write_set_folder`
and :func:`fault`; ``op:N``: any of them), so that a test can crash a save at every step.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as save_bytes

from ..errors import CheckpointError
from .files import disk_error, dumps, fsync_dir, read_json
from .keys import KEYS
from .validate import SET_NAME, check_pointer

FORMAT_VERSION = 2
POINTER = "CURRENT.json"
MANIFEST = "MANIFEST.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
PARAMS_FILE = "params.safetensors"
CONFIG_FILE = "config.json"
SETTINGS_FILE = "settings.json"
FAULT_ENV = "PPL_VAE_FAULT_AT"
_TMP = re.compile(r"^\.(tmp-epoch-|CURRENT\.json\.).*")
_fault_counts: dict[str, int] = {}


def fault(op: str) -> None:
    """Test hook: ``PPL_VAE_FAULT_AT=rename:3`` exits (status 137) before this process's 3rd rename.

    Kinds: ``write``, ``fsync``, ``rename``, ``remove``, or ``op`` (any of them).
    """
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    kind, _, n = spec.partition(":")
    for key in (op, "op"):
        _fault_counts[key] = _fault_counts.get(key, 0) + 1
    if kind in (op, "op") and n.isdigit() and _fault_counts[kind] == int(n):
        os._exit(137)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_set_folder(folder: Path, files: dict[str, bytes]) -> None:
    """Create ``folder`` (it must not exist) and write ``files`` into it, each fsynced, then the folder.

    The one writer of a set's files: checkpoint sets here, output sets in :mod:`ppl_vae.store.outputs`.
    """
    folder.mkdir()
    for fname, data in files.items():
        fault("write")
        with open(folder / fname, "wb") as f:
            f.write(data)
            f.flush()
            fault("fsync")
            os.fsync(f.fileno())
    fault("fsync")
    fsync_dir(folder)


# ------------------------------------------------------------------------------ save
def _optimizer_to_flat(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (for safetensors) and JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"state.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
        for g in state["param_groups"]
    ]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _tensors(values: dict[str, torch.Tensor]) -> bytes:
    return save_bytes({k: v.detach().cpu().contiguous() for k, v in values.items()})


def _run_settings(directory: Path) -> bytes | None:
    """``RUN/settings.json`` when ``directory`` is a run folder's ``checkpoint``."""
    if directory.name != "checkpoint":
        return None
    try:
        data = (directory.parent / SETTINGS_FILE).read_bytes()
    except OSError:
        return None
    return data if b'"format": "ppl_vae.run' in data[:200] else None


def commit(directory, model, optimizer, training, data_meta, extra, params) -> Path:
    training = dict(training or {})
    epoch = training.get("epoch", 0)
    epoch = epoch if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0 else 0
    files = _set_files(directory, model, optimizer, training, data_meta, extra, params)
    manifest = files[MANIFEST]
    previous = current_set_name(directory)
    name = f"epoch-{epoch:06d}"
    k = 1
    while (directory / name).exists():
        k += 1
        name = f"epoch-{epoch:06d}-{k}"
    final = _place(directory, files, name, epoch, manifest, previous)
    # with no valid pointer before this save, no older set is known to be superseded: keep them all
    _clean(directory, keep={name, previous}, sets=previous is not None)
    return final


def _set_files(directory, model, optimizer, training, data_meta, extra, params) -> dict[str, bytes]:
    """The files of a new set by name: weights, optimizer state, params, config, settings, manifest."""
    files: dict[str, bytes] = {}
    if model is not None:
        files[MODEL_FILE] = _tensors(model.state_dict())
    optimizer_meta = None
    if optimizer is not None:
        tensors, optimizer_meta = _optimizer_to_flat(optimizer.state_dict())
        optimizer_meta["class"] = type(optimizer).__name__
        files[OPTIMIZER_FILE] = save_bytes(tensors)
    if params:
        files[PARAMS_FILE] = _tensors(dict(params))
    model_config = getattr(model, "config", None) if model is not None else None
    config = {
        KEYS.format: FORMAT_VERSION,
        "model": model_config if isinstance(model_config, dict) else None,
        "model_class": type(model).__name__ if model is not None else None,
        "training": training,
        "data": data_meta,
        "optimizer": optimizer_meta,
        "params": sorted(params) if params else [],
        "extra": extra or None,
        KEYS.torch: torch.version.__version__,
    }
    files[CONFIG_FILE] = dumps(config).encode()
    settings = _run_settings(directory)
    if settings is not None:
        files[SETTINGS_FILE] = settings
    files[MANIFEST] = dumps(
        {
            KEYS.format: FORMAT_VERSION,
            "files": {
                name: {"sha256": sha256(data), "bytes": len(data)} for name, data in files.items()
            },
        }
    ).encode()
    return files


def _place(
    directory: Path,
    files: dict[str, bytes],
    name: str,
    epoch: int,
    manifest: bytes,
    previous: str | None,
) -> Path:
    """Write the set under a temporary name, rename it to ``name``, switch the pointer, fsync; on a failure
    before the switch, nothing of it is left (an ``OSError`` becomes one line saying what is still current)."""
    tmp = directory / f".tmp-{name}-{os.getpid()}-{secrets.token_hex(4)}"
    final = directory / name
    pointer_tmp = directory / f".{POINTER}.{os.getpid()}.tmp"
    renamed = switched = False
    try:
        write_set_folder(tmp, files)
        fault("rename")
        os.rename(tmp, final)
        renamed = True
        fault("fsync")
        fsync_dir(directory)
        write_pointer(directory, name, epoch, manifest, pointer_tmp)
        switched = True
        fault("fsync")
        fsync_dir(directory)
    except BaseException as err:
        if not switched:
            for leftover in (pointer_tmp, final if renamed else tmp):
                remove(leftover)
        if isinstance(err, OSError):
            kept = (
                f"the previous checkpoint ({previous}) is still current and loadable"
                if previous
                else "no earlier checkpoint exists"
            )
            raise (
                disk_error(
                    err,
                    f"could not save a checkpoint in {str(directory)!r}",
                    f"{kept}; free space or choose a writable folder, then resume",
                )
                or err
            ) from None
        raise
    return final


def write_pointer(
    directory: Path, name: str, epoch: int, manifest: bytes, tmp: Path | None = None
) -> None:
    """Switch ``directory/CURRENT.json`` to set ``name`` (written and fsynced beside it, one rename);
    the caller fsyncs ``directory`` to make the switch durable."""
    tmp = tmp or directory / f".{POINTER}.{os.getpid()}.tmp"
    pointer = dumps(
        {
            KEYS.format: FORMAT_VERSION,
            "set": name,
            "epoch": epoch,
            "manifest_sha256": sha256(manifest),
        }
    ).encode()
    try:
        fault("write")
        with open(tmp, "wb") as f:
            f.write(pointer)
            f.flush()
            fault("fsync")
            os.fsync(f.fileno())
        fault("rename")
        os.replace(tmp, directory / POINTER)
    except BaseException:
        remove(tmp)
        raise


def remove(path: Path) -> None:
    """Remove a file, a link or a folder tree of ours (gone already is fine; a link is never followed)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


def _clean(directory: Path, keep: set[str | None], sets: bool = True) -> None:
    """Remove sets older than the previous one (``sets``) and leftovers of interrupted saves (ours only)."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        if entry.name in keep:
            continue
        if (sets and SET_NAME.fullmatch(entry.name)) or _TMP.fullmatch(entry.name):
            fault("remove")
            try:
                remove(Path(entry.path))
            except OSError:
                pass  # the commit stands; a leftover is removed by the next save


def current_set_name(directory: Path) -> str | None:
    """The set the pointer names now, or None (no checkpoint, or an unreadable pointer)."""
    try:
        pointer = check_pointer(
            read_json(directory / POINTER, CheckpointError), directory / POINTER, FORMAT_VERSION
        )
    except (OSError, CheckpointError):
        return None
    return pointer["set"]
