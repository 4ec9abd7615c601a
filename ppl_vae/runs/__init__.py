"""Runs on disk: checkpoints that commit as one unit, run folders, logs, one writer per folder.

- :mod:`~ppl_vae.runs.checkpoint`: ``save_checkpoint`` / ``load_checkpoint`` / ``read_config`` /
  ``load_model_state`` / ``load_optimizer_state`` / ``load_params`` (the read side and the layout);
  :mod:`~ppl_vae.runs.commit`: the write side (new set, fsync, rename, one pointer);
  :mod:`~ppl_vae.runs.validate`: field-by-field checks of the JSON files read back.
- :mod:`~ppl_vae.runs.folder`: ``train_run`` / ``load_run`` / ``read_history`` (the life of a run
  folder); :mod:`~ppl_vae.runs.settings`: ``settings.json`` and the data's provenance;
  :mod:`~ppl_vae.runs.flags`: the settings as flags, and what ``--resume`` may change.
- :mod:`~ppl_vae.runs.logs`: ``metrics.json``, ``metrics.csv``, TensorBoard.
- :mod:`~ppl_vae.runs.lock`: ``lock_folder``; :mod:`~ppl_vae.runs.files`: strict JSON, atomic files.

The run-folder names (``train_run``, ``load_run``, ``Run``, ...) load on first use, so that the
training modules can import the checkpoint functions from here without a cycle.
"""

from __future__ import annotations

from typing import Any

from ..errors import CheckpointError
from .checkpoint import (
    load_checkpoint,
    load_model_state,
    load_optimizer_state,
    load_params,
    read_config,
    save_checkpoint,
)
from .files import read_json, to_jsonable, write_json
from .lock import lock_folder

_FOLDER = (
    "UNSET",
    "Run",
    "default_likelihood",
    "load_run",
    "read_history",
    "resolve_binarize",
    "train_run",
)

__all__ = [
    "CheckpointError",
    "load_checkpoint",
    "load_model_state",
    "load_optimizer_state",
    "load_params",
    "lock_folder",
    "read_config",
    "read_json",
    "save_checkpoint",
    "to_jsonable",
    "write_json",
    *_FOLDER,
]


def __getattr__(name: str) -> Any:
    if name in _FOLDER or name == "fit":
        from . import folder

        return getattr(folder, name)
    raise AttributeError(f"module 'ppl_vae.runs' has no attribute {name!r}")
