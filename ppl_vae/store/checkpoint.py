"""Checkpoints that commit as one unit: safetensors + JSON in an immutable folder, one pointer.

A checkpoint directory (``RUN/checkpoint`` in a run folder) holds::

    CURRENT.json          the pointer: {"set": "epoch-000007", "manifest_sha256": ...}
    epoch-000006/         the previous complete set (kept until the next commit)
    epoch-000007/         the current set, never changed once in place:
        model.safetensors      the module's state_dict (absent for a program of free functions)
        optimizer.safetensors  the optimizer's tensors (Adam's moments), if any
        params.safetensors     plain ``pyro.param`` values (unconstrained), if any
        config.json            model config, training state (epoch, step, history, objective, ...),
                               data metadata, optimizer hyper-parameters
        settings.json          in a run folder: a copy of RUN/settings.json
        MANIFEST.json          SHA-256 and size of every file above

A save writes the set into a temporary folder, ``fsync`` s every file and the folder, renames
it into place, then replaces ``CURRENT.json`` (written and ``fsync`` ed beside it) with one
:func:`os.replace`; only then are older sets removed. A crash at any point leaves the previous
set current and complete. Readers read the pointer, check the manifest's hash against it and
every file's hash against the manifest, so a torn, mixed, truncated or hand-edited set is
refused with the file's name; if a set is removed while it is read (a writer moved on), the
read starts again from the pointer. Nothing is unpickled.

The old layout (``config.json`` and the tensor files directly in the folder) is still read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes

from ..errors import CheckpointError
from .commit import (
    CONFIG_FILE,
    FORMAT_VERSION,
    MANIFEST,
    MODEL_FILE,
    OPTIMIZER_FILE,
    PARAMS_FILE,
    POINTER,
    SETTINGS_FILE,
    commit,
    sha256,
)
from .files import read_json
from .lock import lock_folder
from .validate import check_config, check_manifest, check_pointer

__all__ = [
    "CheckpointError",
    "load_checkpoint",
    "load_model_state",
    "load_optimizer_state",
    "load_params",
    "load_run_checkpoint",
    "read_config",
    "save_checkpoint",
    "verify_set",
]


# ------------------------------------------------------------------------------ save
def save_checkpoint(
    directory: str | os.PathLike[str],
    model: torch.nn.Module | None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    training: dict[str, Any] | None = None,
    data_meta: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    params: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Commit a new checkpoint set in ``directory`` (created if missing); returns the set's folder.

    Args:
        model: any ``nn.Module`` (its ``state_dict`` is saved; its ``config`` property, when it
            has one, lets :func:`load_checkpoint` rebuild it), or None for a program of free
            functions whose parameters are all in ``params``.
        optimizer: its state (tensors in safetensors, hyper-parameters in the config).
        training: epoch, step, history, objective, ... (JSON-able; non-finite floats become null).
        data_meta: the dataset's metadata (``DatasetMeta.to_dict()``).
        extra: anything else JSON-able.
        params: name -> tensor, the unconstrained values of plain ``pyro.param`` sites.

    Raises:
        ResourceError: a full disk, a file-size limit or a read-only folder; the previous
            checkpoint is left current and loadable, and no temporary file remains.
        RunLockedError: another process is writing to ``directory``.

    Examples:
        >>> import tempfile
        >>> import ppl_vae as pv
        >>> vae = pv.VAE(input_dim=6, latent_dim=2, hidden_dims=(8,))
        >>> folder = tempfile.mkdtemp()
        >>> _ = pv.save_checkpoint(folder, vae)
        >>> model, config = pv.load_checkpoint(folder)
        >>> type(model).__name__, model.config == vae.config
        ('VAE', True)
    """
    directory = Path(directory)
    with lock_folder(directory):
        return commit(directory, model, optimizer, training, data_meta, extra, params)


# ------------------------------------------------------------------------------ read
class _Set:
    """A committed set: its folder, validated manifest and config."""

    def __init__(
        self,
        folder: Path,
        files: dict[str, dict[str, Any]],
        config: dict[str, Any],
        legacy: bool = False,
    ) -> None:
        self.folder, self.files, self.config, self.legacy = folder, files, config, legacy

    def read(self, name: str) -> bytes | None:
        """Bytes of ``name`` checked against the manifest; None when the set has no such file."""
        if name not in self.files:
            return None
        path = self.folder / name
        data = path.read_bytes()  # FileNotFoundError: the set was removed under us (retried)
        actual = sha256(data)
        if actual != self.files[name]["sha256"]:
            raise CheckpointError(
                f"{path} does not match its manifest (sha256 {actual[:12]}... != "
                f"{self.files[name]['sha256'][:12]}...): the file is truncated, corrupt, edited, or from "
                "another checkpoint"
            )
        return data

    def tensors(self, name: str, device: str | torch.device) -> dict[str, torch.Tensor] | None:
        data = self.read(name)
        if data is None:
            return None
        try:
            values = load_bytes(data)
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"could not read {self.folder / name}: {err}") from None
        return {k: v.to(device) for k, v in values.items()}


def _open(directory: Path) -> _Set:
    """The set the pointer names (or a set folder, or the old layout), validated."""
    if (
        not (directory / POINTER).is_file()
        and not (directory / MANIFEST).is_file()
        and (directory / "checkpoint" / POINTER).is_file()
    ):
        directory = directory / "checkpoint"  # a run folder
    pointer_path = directory / POINTER
    if pointer_path.is_file():
        pointer = check_pointer(
            read_json(pointer_path, CheckpointError), pointer_path, FORMAT_VERSION
        )
        folder = directory / pointer["set"]
        manifest_bytes = (folder / MANIFEST).read_bytes()
        if sha256(manifest_bytes) != pointer["manifest_sha256"]:
            raise CheckpointError(
                f"{folder / MANIFEST} does not match the hash in {pointer_path}: the "
                "manifest was edited or belongs to another checkpoint"
            )
    elif (directory / MANIFEST).is_file():
        folder, manifest_bytes = directory, (directory / MANIFEST).read_bytes()
    elif (directory / CONFIG_FILE).is_file():
        return _open_legacy(directory)
    else:
        raise CheckpointError(
            f"no checkpoint in {str(directory)!r}: {POINTER} is missing (a run folder keeps its "
            "checkpoint in RUN/checkpoint; a run stopped before its first epoch ended has none yet)"
        )
    files = check_manifest(
        _parse(manifest_bytes, folder / MANIFEST),
        folder / MANIFEST,
        {MODEL_FILE, OPTIMIZER_FILE, PARAMS_FILE, CONFIG_FILE, SETTINGS_FILE},
    )
    if CONFIG_FILE not in files:
        raise CheckpointError(f"{folder / MANIFEST} lists no {CONFIG_FILE}")
    partial = _Set(folder, files, {})
    config_bytes = partial.read(CONFIG_FILE)
    if config_bytes is None:  # listed above, so read() found it
        raise CheckpointError(f"{folder / MANIFEST} lists no {CONFIG_FILE}")
    config = check_config(
        _parse(config_bytes, folder / CONFIG_FILE),
        folder / CONFIG_FILE,
        FORMAT_VERSION,
    )
    return _Set(folder, files, config)


def _parse(data: bytes, path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as err:
        raise CheckpointError(
            f"{path} is not valid JSON ({'nested too deeply' if isinstance(err, RecursionError) else err})"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} must hold a JSON object; got a {type(obj).__name__}")
    return obj


def _open_legacy(directory: Path) -> _Set:
    """The first layout: config.json beside the tensor files, with their hashes (read only)."""
    path = directory / CONFIG_FILE
    config = check_config(read_json(path, CheckpointError), path, FORMAT_VERSION, legacy=True)
    files = {name: {"sha256": sha} for name, sha in config.pop("files").items()}
    return _Set(directory, files, config, legacy=True)


def _with_set(directory: str | os.PathLike[str], action):
    """Run ``action(set)`` on the current set; start again if a writer removed it meanwhile."""
    directory = Path(directory)
    for _ in range(20):
        try:
            return action(_open(directory))
        except FileNotFoundError as err:
            missing = err.filename
        except IsADirectoryError as err:
            raise CheckpointError(f"{err.filename} is a folder, not a checkpoint file") from None
    raise CheckpointError(
        f"checkpoint {str(directory)!r} is incomplete or keeps changing: {missing} is missing"
    )


def verify_set(folder: Path) -> tuple[bytes, dict[str, Any]]:
    """Check a set folder on its own: its manifest, its config and every file's SHA-256; returns the
    manifest's bytes and the config. Raises :class:`CheckpointError` (or ``OSError``) naming the first
    bad file."""
    s = _open(folder)
    for name in s.files:
        s.read(name)
    return (folder / MANIFEST).read_bytes(), s.config


def read_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The checked config of the current checkpoint: ``model``, ``training``, ``data``, ``optimizer``,
    ``params``, ``extra`` (no tensors loaded); ``set`` names the set folder it came from."""

    def action(s: _Set) -> dict[str, Any]:
        return {**s.config, "set": s.folder.name}

    return _with_set(directory, action)


def _load_state(s: _Set, model: torch.nn.Module, device) -> dict[str, Any]:
    weights = s.tensors(MODEL_FILE, device)
    if weights is None:
        raise CheckpointError(
            f"checkpoint {str(s.folder)!r} holds no model weights (saved with model=None)"
        )
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"checkpoint {str(s.folder)!r} does not match the model: {err}"
        ) from None
    return {**s.config, "set": s.folder.name}


def load_model_state(
    directory: str | os.PathLike[str], model: torch.nn.Module, device: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load the saved weights into ``model``; returns the config. Weights that do not fit are refused."""
    return _with_set(directory, lambda s: _load_state(s, model, device))


def load_checkpoint(
    directory: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the saved model from its config and load its weights onto ``device``: ``(model, config)``.

    ``config["training"]`` holds the history and the state needed to resume, ``config["data"]``
    the dataset metadata.

    Examples:
        >>> import tempfile
        >>> import torch
        >>> import ppl_vae as pv
        >>> vae = pv.VAE(input_dim=6, latent_dim=2, hidden_dims=(8,))
        >>> folder = tempfile.mkdtemp()
        >>> _ = pv.save_checkpoint(folder, vae)
        >>> model, config = pv.load_checkpoint(folder)
        >>> all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), vae.state_dict().values()))
        True
    """

    def action(s: _Set):
        model = _build(s, device)
        return model, {**s.config, "set": s.folder.name}

    return _with_set(directory, action)


def _build(s: _Set, device: str | torch.device) -> torch.nn.Module:
    from ..models import build_model

    if s.config.get("model") is None:
        raise CheckpointError(
            f"checkpoint {str(s.folder)!r} holds no model config ({s.config.get('model_class') or 'no module'} "
            "has no .config): build the model yourself and call load_model_state / load_params"
        )
    try:
        model = build_model(s.config["model"])
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(
            f"{s.folder / CONFIG_FILE}: field 'model' is unusable: {err}"
        ) from None
    model.to(device)
    _load_state(s, model, device)
    return model


def load_run_checkpoint(
    directory: str | os.PathLike[str], device: str | torch.device = "cpu", *, model: bool = True
) -> tuple[Any, dict[str, Any], bytes | None]:
    """``(model or None, config, settings.json copy or None)``, all from the same committed set."""

    def action(s: _Set):
        config = {**s.config, "set": s.folder.name}
        built = _build(s, device) if model else None
        return built, config, s.read(SETTINGS_FILE)

    return _with_set(directory, action)


def _optimizer_from_flat(
    tensors: dict[str, torch.Tensor], meta: dict[str, Any], where: Path
) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        parts = name.split(".", 2)
        if len(parts) != 3 or parts[0] != "state" or not parts[1].isdigit():
            raise CheckpointError(f"{where}: unexpected tensor {name!r} in the optimizer state")
        state.setdefault(int(parts[1]), {})[parts[2]] = value
    for idx, entry in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(entry)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def load_optimizer_state(
    directory: str | os.PathLike[str],
    optimizer: torch.optim.Optimizer,
    device: str | torch.device = "cpu",
) -> bool:
    """Load the saved optimizer state into ``optimizer``; False when none was saved."""

    def action(s: _Set) -> bool:
        meta = s.config.get("optimizer")
        if not meta or OPTIMIZER_FILE not in s.files:
            return False
        if meta["class"] != type(optimizer).__name__:
            raise CheckpointError(
                f"checkpoint optimizer is {meta['class']}, cannot load it into "
                f"{type(optimizer).__name__}"
            )
        tensors = s.tensors(OPTIMIZER_FILE, device)
        if tensors is None:
            return False
        try:
            optimizer.load_state_dict(
                _optimizer_from_flat(tensors, meta, s.folder / OPTIMIZER_FILE)
            )
        except (ValueError, KeyError, RuntimeError, TypeError, IndexError) as err:
            raise CheckpointError(
                f"optimizer state in {str(s.folder)!r} does not match the model: {err}"
            ) from None
        return True

    return _with_set(directory, action)


def load_params(
    directory: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """The saved ``pyro.param`` values (unconstrained), name -> tensor; ``{}`` when none were saved."""
    return _with_set(directory, lambda s: s.tensors(PARAMS_FILE, device) or {})
