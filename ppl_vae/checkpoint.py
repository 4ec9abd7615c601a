"""Checkpoints: safetensors weights + a JSON config, written atomically, read without pickle.

A checkpoint is a directory::

    model.safetensors      the model's state_dict (networks and likelihood parameters)
    optimizer.safetensors  the optimizer's tensors (e.g. Adam's moments), if any
    config.json            model config, training state (epoch, step, history, objective,
                           optimizer hyper-parameters), data metadata, and the SHA-256
                           of both tensor files

Each file is written to a temporary name in the same directory, flushed and
``fsync``-ed, then moved into place with :func:`os.replace`; ``config.json`` goes
last and names the hashes of the tensor files, so a crash mid-save leaves the
previous checkpoint readable and a truncated or mixed-up set of files is caught
on load. Loading reads only safetensors and JSON: nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .models import VAE, build_model

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
CONFIG_FILE = "config.json"


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, corrupt, or does not match what it is loaded into."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then move the result onto ``path`` atomically."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    path = Path(path)

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, allow_nan=True)
            f.write("\n")

    _atomic_write(path, write)


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
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    for idx, entry in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(entry)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    directory: str | Path,
    model: torch.nn.Module,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    training: dict[str, Any] | None = None,
    data_meta: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save ``model`` (and optionally the optimizer) into ``directory`` atomically.

    Args:
        directory: the checkpoint folder (created if missing).
        model: any module with a JSON-able ``config`` property (a :class:`~ppl_vae.models.VAE`,
            or an autoencoder) — its ``state_dict`` goes to safetensors.
        training: epoch, step, history, objective spec, fit settings.
        data_meta: the dataset's metadata (``DatasetMeta.to_dict()``).
        extra: anything else JSON-able to keep beside the config.
    Returns:
        the checkpoint directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _atomic_write(directory / MODEL_FILE, lambda tmp: save_file(weights, tmp))
    files = {MODEL_FILE: _sha256(directory / MODEL_FILE)}
    optimizer_meta = None
    if optimizer is not None:
        tensors, optimizer_meta = _optimizer_to_flat(optimizer.state_dict())
        optimizer_meta["class"] = type(optimizer).__name__
        _atomic_write(directory / OPTIMIZER_FILE, lambda tmp: save_file(tensors, tmp))
        files[OPTIMIZER_FILE] = _sha256(directory / OPTIMIZER_FILE)
    config = {
        "format_version": FORMAT_VERSION,
        "model": model.config,
        "training": training or {},
        "data": data_meta,
        "optimizer": optimizer_meta,
        "files": files,
        "torch_version": torch.__version__,
        **({"extra": extra} if extra else {}),
    }
    write_json(directory / CONFIG_FILE, config)
    return directory


def read_config(directory: str | Path) -> dict[str, Any]:
    """Read and check ``config.json`` of a checkpoint (no tensors loaded)."""
    directory = Path(directory)
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint in {str(directory)!r}: {CONFIG_FILE} is missing "
            "(a run folder keeps its checkpoint in RUN_DIR/checkpoint)"
        )
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}): the checkpoint is corrupt") from None
    if not isinstance(config, dict) or "model" not in config or "files" not in config:
        raise CheckpointError(f"{path} is not a ppl_vae checkpoint config (keys 'model' and 'files' missing)")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format_version {config['format_version']}; this ppl_vae reads up to {FORMAT_VERSION}"
        )
    return config


def _load_tensors(directory: Path, name: str, expected_sha: str, device: str | torch.device) -> dict[str, torch.Tensor]:
    path = directory / name
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(directory)!r} is incomplete: {name} is missing")
    actual = _sha256(path)
    if actual != expected_sha:
        raise CheckpointError(
            f"{path} does not match its config.json (sha256 {actual[:12]}... != {expected_sha[:12]}...): "
            "the file is truncated, corrupt, or from another checkpoint"
        )
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"could not read {path}: {err}") from None


def load_model_state(directory: str | Path, model: torch.nn.Module, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Load weights from ``directory`` into an existing ``model``; returns the config.

    Raises :class:`CheckpointError` when the weights do not fit the model (names or shapes).
    """
    directory = Path(directory)
    config = read_config(directory)
    weights = _load_tensors(directory, MODEL_FILE, config["files"][MODEL_FILE], device)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {str(directory)!r} does not match the model: {err}") from None
    return config


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> tuple[VAE, dict[str, Any]]:
    """Rebuild the model stored in ``directory`` and load its weights onto ``device``.

    Returns ``(model, config)``; ``config["training"]`` holds the history and the
    state needed to resume, ``config["data"]`` the dataset metadata.
    """
    directory = Path(directory)
    config = read_config(directory)
    try:
        model = build_model(config["model"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {str(directory)!r} has an unusable model config: {err}") from None
    model.to(device)
    load_model_state(directory, model, device)
    return model, config


def load_optimizer_state(directory: str | Path, optimizer: torch.optim.Optimizer, device: str | torch.device = "cpu") -> bool:
    """Load the optimizer state saved beside the weights into ``optimizer``; False if none was saved."""
    directory = Path(directory)
    config = read_config(directory)
    meta = config.get("optimizer")
    if not meta or OPTIMIZER_FILE not in config["files"]:
        return False
    if meta.get("class") != type(optimizer).__name__:
        raise CheckpointError(
            f"checkpoint optimizer is {meta.get('class')}, cannot load it into {type(optimizer).__name__}"
        )
    tensors = _load_tensors(directory, OPTIMIZER_FILE, config["files"][OPTIMIZER_FILE], device)
    try:
        optimizer.load_state_dict(_optimizer_from_flat(tensors, meta))
    except (ValueError, KeyError, RuntimeError) as err:
        raise CheckpointError(f"optimizer state in {str(directory)!r} does not match the model: {err}") from None
    return True
