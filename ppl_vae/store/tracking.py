"""Experiment tracking in MLflow: a run's settings as parameters, its history as metrics, its files.

``ppl-vae train --log mlflow`` and ``fit(..., log="mlflow")`` log

- **parameters**: the run's settings (the flags with their defaults filled in, the model's config), once;
- **metrics**: every numeric field of each epoch's record (``train_elbo``, ``test_elbo``, ``seconds``,
  ...) at ``step = epoch``, so MLflow's history of a metric is the run's ``metrics.csv`` column;
- **the evaluation summary**: ``ppl-vae evaluate`` of a run trained with ``--log mlflow`` (or given
  ``--log mlflow``) logs each numeric field of ``evaluation.json`` as ``<split>/<field>`` and the
  evaluation files as artifacts;
- **artifacts**: the run folder (settings, checkpoint, metrics, TensorBoard events) after the last epoch.

Where to: MLflow's own tracking URI, so ``MLFLOW_TRACKING_URI`` (or ``mlflow.set_tracking_uri`` in a
script) decides; unset, MLflow 3 keeps a local store in the working directory (``mlflow.db``, SQLite,
with the artifacts under ``mlruns/``; MLflow 2 writes an ``mlruns/`` file store), which ``mlflow ui``
started in the same folder shows. The experiment is ``MLFLOW_EXPERIMENT_NAME`` or ``"ppl_vae"``. A run
folder remembers its MLflow run in ``RUN/mlflow.json``, so ``--resume`` goes on logging into the same
MLflow run and ``evaluate`` adds its summary to it. Inside a user's ``with mlflow.start_run():``,
``fit`` logs into that active run and leaves it open.

The client is used explicitly (:class:`mlflow.MlflowClient`), never the fluent API's global active run,
so nothing is left open in the user's process.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from ..errors import UserError

__all__ = [
    "MLFLOW_FILE",
    "MLflowLog",
    "check_fit_log",
    "check_mlflow",
    "fit_log",
    "flat_params",
    "log_evaluation",
    "numeric_items",
]

MLFLOW_FILE = "mlflow.json"
DEFAULT_EXPERIMENT = "ppl_vae"
#: files of a run folder that are not logged as artifacts: the writer's lock, our temporary files
SKIP = (".lock",)
Status = Literal["FINISHED", "FAILED", "KILLED"]


def check_mlflow(flag: str = "--log mlflow") -> Any:
    """Import MLflow, or fail in one line saying how to install it."""
    try:
        import mlflow
    except ImportError:
        raise UserError(
            f"{flag} needs the 'mlflow' package, which is not installed: "
            "pip install 'ppl_vae[mlflow]' (or pip install mlflow)"
        ) from None
    return mlflow


def numeric_items(record: Mapping[str, Any]) -> dict[str, float]:
    """The fields of ``record`` that are finite or non-finite numbers (not bools, not strings)."""
    return {
        str(k): float(v)
        for k, v in record.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def flat_params(settings: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested settings to ``{"a.b": "value"}`` (MLflow parameters are strings)."""
    out: dict[str, str] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flat_params(value, name + "."))
        elif value is not None:
            text = (
                value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
            )
            out[name] = text[:6000]  # MLflow's limit on a parameter's value
    return out


class MLflowLog:
    """One MLflow run of ppl_vae: parameters once, metrics per epoch, summaries, artifacts.

    Args:
        params: logged once when the MLflow run is created (or missing from a resumed one).
        run_id: an MLflow run to continue (a resumed run folder's); ``None`` creates one, unless
            ``use_active`` and the process has an active MLflow run, which is then logged into.
        run_name: the new MLflow run's name.
        tags: set on the MLflow run.
        use_active: log into ``mlflow.active_run()`` when there is one (and leave it open).
    """

    def __init__(
        self,
        params: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        use_active: bool = False,
    ) -> None:
        mlflow = check_mlflow()
        from mlflow.entities import Param, RunTag

        self.tracking_uri = mlflow.get_tracking_uri()
        self.owned = True
        try:
            self.client = mlflow.MlflowClient(tracking_uri=self.tracking_uri)
            active = mlflow.active_run() if use_active else None
            if active is not None:
                self.run_id, self.owned = active.info.run_id, False
            elif run_id is not None and self._exists(run_id):
                self.run_id = run_id
                self.client.update_run(run_id, status="RUNNING")
            else:
                self.run_id = self.client.create_run(
                    self._experiment_id(), run_name=run_name, tags=dict(tags or {})
                ).info.run_id
            have = self.client.get_run(self.run_id).data.params
            new = {k: v for k, v in flat_params(params or {}).items() if k not in have}
            self.client.log_batch(
                self.run_id,
                params=[Param(k, v) for k, v in new.items()],
                tags=[RunTag(k, v) for k, v in (tags or {}).items()] if active else [],
            )
        except mlflow.exceptions.MlflowException as err:
            raise UserError(f"--log mlflow: tracking URI {self.tracking_uri!r}: {err}") from None

    def _exists(self, run_id: str) -> bool:
        import mlflow

        try:
            self.client.get_run(run_id)
        except mlflow.exceptions.MlflowException:
            return False
        return True

    def _experiment_id(self) -> str:
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        return self.client.create_experiment(name)

    def add(self, record: Mapping[str, Any], step: int | None = None) -> None:
        """Log every numeric field of ``record`` (one epoch) at ``step`` (default: its ``epoch``)."""
        from mlflow.entities import Metric

        step = int(record.get("epoch", 0) if step is None else step)
        stamp = int(time.time() * 1000)
        metrics = [
            Metric(key, value if math.isfinite(value) else math.nan, stamp, step)
            for key, value in numeric_items(record).items()
            if key != "epoch"
        ]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def summary(self, values: Mapping[str, Any], prefix: str) -> None:
        """Log the numeric fields of a summary (e.g. ``evaluation.json``) as ``prefix/field``."""
        self.add({f"{prefix}/{k}": v for k, v in numeric_items(values).items()}, step=0)

    def artifacts(self, files: Iterable[Path], artifact_path: str | None = None) -> None:
        """Copy files and folders into the MLflow run's artifacts (under ``artifact_path``)."""
        for path in files:
            sub = path.name if artifact_path is None else f"{artifact_path}/{path.name}"
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), sub)
            elif path.is_file():
                self.client.log_artifact(self.run_id, str(path), artifact_path)

    def folder(self, run_dir: Path) -> None:
        """Log a run folder's files (not the writer's lock nor partial writes) as artifacts."""
        entries = sorted(
            p
            for p in run_dir.iterdir()
            if p.name not in SKIP and not (p.name.startswith(".") and p.name.endswith(".tmp"))
        )
        self.artifacts(entries, "run")

    def close(self, status: Status = "FINISHED") -> None:
        """End the MLflow run (not a user's active run, which stays theirs)."""
        if self.owned:
            self.client.set_terminated(self.run_id, status=status)

    def record(self) -> dict[str, str]:
        """What a run folder keeps in ``mlflow.json`` to find this MLflow run again."""
        return {"tracking_uri": self.tracking_uri, "run_id": self.run_id}


LOG_CHOICES = ("mlflow",)


def check_fit_log(log: str | None) -> str | None:
    """``fit``'s ``log`` argument, checked (and MLflow importable) before anything is trained."""
    if log is None:
        return None
    if log not in LOG_CHOICES:
        raise UserError(
            f"log={log!r} is not a tracker fit can log to; choose log='mlflow' or None "
            "(TensorBoard: ppl-vae train --log tensorboard, or ppl_vae.runs.train_run(log=...))"
        )
    check_mlflow("fit(..., log='mlflow')")
    return log


@contextlib.contextmanager
def fit_log(
    log: str | None,
    params: Mapping[str, Any],
    callback: Callable[[dict[str, Any]], None] | None,
    folder: Path | None = None,
    main: bool = True,
) -> Iterator[Callable[[dict[str, Any]], None] | None]:
    """``fit``'s per-epoch callback, logging each record to MLflow before calling ``callback``.

    The MLflow run is the active one (``with mlflow.start_run():`` around ``fit``, left open) or a new
    one, ended FINISHED after the last epoch (with ``folder``, the checkpoint, as artifacts), FAILED when
    training raised, KILLED on Ctrl-C. Only the main process of a data-parallel group logs.
    """
    if log is None or not main:
        yield callback
        return
    tracker = MLflowLog(params, use_active=True, tags={"ppl_vae.entry": "fit"})

    def logged(record: dict[str, Any]) -> None:
        tracker.add(record)
        if callback is not None:
            callback(record)

    try:
        yield logged
    except KeyboardInterrupt:
        tracker.close("KILLED")
        raise
    except BaseException:
        tracker.close("FAILED")
        raise
    if folder is not None and Path(folder).is_dir():
        tracker.artifacts([Path(folder)])
    tracker.close("FINISHED")


def log_evaluation(
    run_dir: Path,
    doc: Mapping[str, Any],
    summary: Mapping[str, Any],
    files: Iterable[Path],
    split: str,
    asked: bool = False,
) -> dict[str, str] | None:
    """Log ``ppl-vae evaluate``'s summary (``<split>/<field>`` metrics) and files to MLflow.

    Into the MLflow run the folder recorded (``RUN/mlflow.json``: it was trained with ``--log mlflow``),
    or, when ``asked`` (``evaluate --log mlflow``) and it has none, into a new MLflow run with the run's
    settings as parameters (not recorded in the folder: evaluate does not write into a run it reads).
    Returns the tracking URI and run id logged to, or None when nothing was logged.
    """
    path = Path(run_dir) / MLFLOW_FILE
    known = json.loads(path.read_text()) if path.is_file() else {}
    if not known and not asked:
        return None
    check_mlflow()
    settings = doc.get("settings", {})
    tracker = MLflowLog(
        {
            "model_kind": settings.get("model_kind"),
            **settings.get("flags", {}),
            "model_config": settings.get("model"),
        },
        run_id=known.get("run_id"),
        run_name=Path(run_dir).resolve().name,
        tags={"ppl_vae.run_dir": str(Path(run_dir).resolve())},
    )
    tracker.summary(summary, f"evaluation/{split}")
    tracker.artifacts([Path(f) for f in files], f"evaluation/{split}")
    tracker.close()
    return tracker.record()
