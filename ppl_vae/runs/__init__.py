"""Run folders: the life of one training run on disk, above :mod:`ppl_vae.train`.

- :mod:`~ppl_vae.runs.folder`: ``train_run`` / ``load_run`` / ``read_history`` (the life of a run
  folder); :mod:`~ppl_vae.runs.settings`: ``settings.json`` and the data's provenance;
  :mod:`~ppl_vae.runs.flags`: the settings as flags, and what ``--resume`` may change;
  :mod:`~ppl_vae.runs.build`: the model, data and objective a run's flags describe (sized against memory).
- :mod:`~ppl_vae.runs.logs`: ``metrics.json``, ``metrics.csv``, TensorBoard, MLflow.

What a run folder is written with lives below training, in :mod:`ppl_vae.store` (checkpoints that commit
as one unit, output sets, the writer's lock, atomic files, MLflow tracking), so ``train`` imports the
store and this package imports ``train``: no cycle. The store's checkpoint functions are re-exported
here for scripts that import them from ``ppl_vae.runs``; the old module paths
(``ppl_vae.runs.checkpoint``, ``.files``, ``.lock``, ...) re-export the store's modules.
"""

from __future__ import annotations

from ..errors import CheckpointError
from ..store.checkpoint import (
    load_checkpoint,
    load_model_state,
    load_optimizer_state,
    load_params,
    read_config,
    save_checkpoint,
)
from ..store.files import read_json, to_jsonable, write_json
from ..store.lock import lock_folder
from .flags import UNSET, default_likelihood, resolve_binarize
from .folder import Run, load_run, read_history, train_run

__all__ = [
    "UNSET",
    "CheckpointError",
    "Run",
    "default_likelihood",
    "load_checkpoint",
    "load_model_state",
    "load_optimizer_state",
    "load_params",
    "load_run",
    "lock_folder",
    "read_config",
    "read_history",
    "read_json",
    "resolve_binarize",
    "save_checkpoint",
    "to_jsonable",
    "train_run",
    "write_json",
]
