"""Moved to :mod:`ppl_vae.runs.checkpoint`; this name stays until every import has moved."""

from .runs.checkpoint import *  # noqa: F403
from .runs.checkpoint import (  # noqa: F401
    CheckpointError,
    load_checkpoint,
    load_model_state,
    load_optimizer_state,
    load_params,
    read_config,
    save_checkpoint,
)
from .runs.files import write_json  # noqa: F401
