"""Experiment logs a person looks at: ``metrics.json``, a per-epoch ``metrics.csv``, TensorBoard, MLflow.

All of them are derived from the committed checkpoint after each epoch (the checkpoint, which
holds the history, is the record; these are views of it), and the two files are rewritten
atomically, so a reader never sees half of one.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..store.checkpoint import read_config
from ..store.files import read_json, to_jsonable, write_bytes, write_json
from ..store.tracking import MLFLOW_FILE, MLflowLog
from .settings import annotate

__all__ = [
    "METRICS_CSV",
    "METRICS_FILE",
    "Recorder",
    "TensorBoardLog",
    "check_tensorboard",
    "keep_edited_csv",
    "metrics_config",
    "write_metrics",
]

METRICS_FILE = "metrics.json"
METRICS_CSV = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
LOGS = ("tensorboard", "mlflow")


def history_csv(history: Sequence[dict[str, Any]]) -> str:
    """One row per epoch; columns in order of first appearance; nested values as JSON text."""
    columns: list[str] = []
    for record in history:
        columns += [k for k in record if k not in columns]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for record in history:
        row = []
        for key in columns:
            value = to_jsonable(record.get(key))
            row.append(
                ""
                if value is None
                else json.dumps(value, sort_keys=True)
                if isinstance(value, (dict, list))
                else value
            )
        writer.writerow(row)
    return buf.getvalue()


def write_metrics(
    run_dir: Path,
    history: Sequence[dict[str, Any]],
    config: dict[str, Any],
    training: dict[str, Any] | None = None,
) -> None:
    """Rewrite ``metrics.json`` and ``metrics.csv`` of ``run_dir`` (atomically, strict JSON)."""
    final_test = history[-1].get("test_elbo") if history else None
    doc: dict[str, Any] = {
        "history": list(history),
        "config": config,
        "final_test_elbo": final_test,
    }
    if history and "train_loss" in history[0]:
        doc["final_test_loss"] = history[-1].get("test_loss")
    if training is not None:
        doc["training"] = training
    write_json(run_dir / METRICS_FILE, doc)
    write_bytes(run_dir / METRICS_CSV, history_csv(history).encode())


def keep_edited_csv(run_dir: Path, doc: dict[str, Any]) -> Path | None:
    """Before a resume rewrites ``metrics.csv``: when the file is not a view ppl_vae wrote of the run's
    committed history (of all its epochs or of the first ones: a view lags one epoch after a crash), it
    was edited by hand or comes from epochs that were not kept; move it aside as
    ``metrics.edited-TIME.csv`` (never overwritten), warn, and return where it went. None otherwise."""
    import warnings
    from datetime import datetime

    path = run_dir / METRICS_CSV
    try:
        current = path.read_bytes()
    except FileNotFoundError:
        return None
    history = annotate(read_config(run_dir / "checkpoint")["training"]["history"], doc)
    if any(current == history_csv(history[:n]).encode() for n in range(len(history), -1, -1)):
        return None
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    aside, k = run_dir / f"metrics.edited-{stamp}.csv", 1
    while os.path.lexists(aside):
        k += 1
        aside = run_dir / f"metrics.edited-{stamp}-{k}.csv"
    os.link(path, aside)  # the user's bytes under a new name, then the old name is free
    os.unlink(path)
    warnings.warn(
        f"{path} does not match the run's checkpoint (edited by hand, or from epochs that were not "
        f"kept): kept it as {aside.name}; {METRICS_CSV} is written again from the checkpoint",
        stacklevel=3,
    )
    return aside


def check_tensorboard() -> None:
    """Fail early, in one line, when ``--log tensorboard`` cannot work."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise UserError(
            "--log tensorboard needs the 'tensorboard' package, which is not installed: "
            "pip install 'ppl_vae[tensorboard]' (or pip install tensorboard)"
        ) from None


class TensorBoardLog:
    """Scalars of each epoch record, written to ``RUN/tensorboard`` (one event file per call)."""

    def __init__(self, run_dir: Path) -> None:
        check_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR))

    def add(self, record: dict[str, Any]) -> None:
        epoch = record.get("epoch", 0)
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, global_step=epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def metrics_config(
    doc: dict[str, Any], flags: dict[str, Any], history: list[dict], data_meta: Any
) -> dict:
    """The ``config`` of metrics.json: the run's settings as trained now, flat (as older tools read it)."""
    s = doc["settings"]
    objective = history[-1].get("objective") if history else None
    return {
        "dataset": s["data"]["args"]["name"],
        "data_args": s["data"]["args"],
        "data_provenance": s["data"]["provenance"],
        "data_meta": data_meta,
        "model": s["model"],
        "model_kind": s["model_kind"],
        "objective": objective or flags.get("objective"),
        "epochs": history[-1]["epoch"] if history else 0,
        "batch_size": flags["batch_size"],
        "lr": flags["lr"],
        "seed": flags["seed"],
        "device": flags["device"],
        "overrides": [e for e in doc["resumes"] if e.get("overrides")],
    }


def mlflow_log(run_dir: Path, doc: dict[str, Any], flags: dict[str, Any]) -> MLflowLog:
    """The MLflow run of a run folder: the one ``RUN/mlflow.json`` names, or a new one recorded there."""
    path = run_dir / MLFLOW_FILE
    known = read_json(path) if path.is_file() else {}
    settings = doc["settings"]
    log = MLflowLog(
        {"model_kind": settings.get("model_kind"), **flags, "model_config": settings.get("model")},
        run_id=known.get("run_id"),
        run_name=run_dir.resolve().name,
        tags={"ppl_vae.run_dir": str(run_dir.resolve())},
    )
    overrides = [e for e in doc.get("resumes", []) if e.get("overrides")]
    if (
        overrides
    ):  # a parameter cannot change in MLflow: the overrides are a tag, as in settings.json
        log.client.set_tag(log.run_id, "ppl_vae.overrides", json.dumps(overrides, default=str))
    if known != log.record():
        write_json(path, log.record())
    return log


class Recorder:
    """fit's per-epoch callback: metrics.json / .csv / TensorBoard / MLflow from the committed checkpoint."""

    def __init__(
        self,
        run_dir: Path,
        doc: dict[str, Any],
        flags: dict[str, Any],
        tensorboard: bool,
        mlflow: bool = False,
    ) -> None:
        self.run_dir, self.doc, self.flags = run_dir, doc, flags
        self.tb = TensorBoardLog(run_dir) if tensorboard else None
        self.mlflow = mlflow_log(run_dir, doc, flags) if mlflow else None

    def write(self, training: dict[str, Any] | None = None) -> list[dict]:
        config = read_config(self.run_dir / "checkpoint")
        history = annotate(config["training"]["history"], self.doc)
        write_metrics(
            self.run_dir,
            history,
            metrics_config(self.doc, self.flags, history, config["data"]),
            training,
        )
        return history

    def __call__(self, record: dict[str, Any]) -> None:
        history = self.write()
        mine = [r for r in history if r.get("epoch") == record.get("epoch")]
        if self.tb is not None:
            self.tb.add(mine[-1] if mine else record)
        if self.mlflow is not None:
            self.mlflow.add(mine[-1] if mine else record)

    def close(self, failed: bool = False) -> None:
        """Close the logs; MLflow gets the run folder as artifacts unless training ``failed``."""
        if self.tb is not None:
            self.tb.close()
        if self.mlflow is not None:
            if not failed:
                self.mlflow.folder(self.run_dir)
            self.mlflow.close("FAILED" if failed else "FINISHED")
