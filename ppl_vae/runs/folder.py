"""Run folders: the life of one training run on disk, from its settings to its last epoch.

A run folder holds::

    RUN/settings.json    what the run was started with (flags, model config, data provenance),
                         written before the first epoch; --resume appends, never rewrites
    RUN/checkpoint/      the committed checkpoint sets (ppl_vae.store.checkpoint); the history
                         lives inside, so the checkpoint is the record of the run
    RUN/metrics.json     views of the history, rewritten atomically after every epoch
    RUN/metrics.csv
    RUN/tensorboard/     event files (with log="tensorboard")
    RUN/mlflow.json      the MLflow run this folder logs into (with log="mlflow"; ppl_vae.store.tracking)
    RUN/.lock            the writer's lock (one writer per run folder)

After every epoch the folder is complete: a run killed at any moment can be resumed
(``train_run(..., resume=True)``), evaluated and plotted (:func:`load_run`).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._checks import (
    check_device,
    check_finite_number,
    check_output_path,
    check_positive_int,
)
from ..errors import CheckpointError, MissingFileError, RunError, UserError
from ..store.checkpoint import POINTER, load_run_checkpoint
from ..store.lock import is_main_process, lock_folder
from ..store.pointer import pointer_advice, rebuild_pointer
from ..store.tracking import check_mlflow
from ..train import History, fit
from .build import (
    check_objective,
    load_run_data,
    model_from_flags,
    older_run,
    rebuild_model,
    refuse_existing,
    refuse_run_links,
    remove_partial,
    run_data_args,
)
from .flags import (
    AUTOENCODERS,
    UNSET,
    check_overrides,
    complete,
    default_likelihood,
    given_flags,
    resolve_binarize,
)
from .logs import LOGS, Recorder, check_tensorboard, keep_edited_csv, metrics_config
from .settings import (
    SETTINGS_FILE,
    annotate,
    check_provenance,
    data_provenance,
    effective_settings,
    new_resume,
    now,
    read_settings,
    same_start,
    target_epochs,
    versions,
    write_settings,
)
from .tables import load_with_warnings, replay_warnings, schema_report

__all__ = [
    "UNSET",
    "Run",
    "default_likelihood",
    "load_run",
    "read_history",
    "resolve_binarize",
    "train_run",
]


@dataclass
class Run:
    """A trained model with its data, history (annotated with overrides), config and folder."""

    model: Any
    data: Any
    history: History
    config: dict[str, Any]
    path: Path | None = None
    settings: dict[str, Any] | None = None
    #: epochs trained by the call that returned this run (0: a resumed run had none left to train)
    trained: int | None = None
    #: the committed checkpoint set the model was loaded from (``"epoch-000020"``), by :func:`load_run`
    checkpoint: str | None = None


def _reinit(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Re-initialise every layer from ``seed`` so the same seed gives the same starting weights (a model
    that knows its own initialisation, an imported program, rebuilds itself: ``reinit(seed)``)."""
    reinit = getattr(model, "reinit", None)
    if callable(reinit):
        return reinit(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for module in model.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset) and module is not model:
                reset()
    return model


# ------------------------------------------------------------------------------ train
def train_run(
    out: str | os.PathLike[str] | None,
    *,
    dataset: Any = UNSET,
    objective: Any = UNSET,
    latent_dim: Any = UNSET,
    hidden_dims: Any = UNSET,
    likelihood: Any = UNSET,
    activation: Any = UNSET,
    binarize: Any = UNSET,
    data_dir: Any = UNSET,
    n_samples: Any = UNSET,
    epochs: Any = UNSET,
    batch_size: Any = UNSET,
    lr: Any = UNSET,
    seed: Any = UNSET,
    device: Any = UNSET,
    resume: bool = False,
    progress: bool = True,
    time_budget: float | None = None,
    model: Any = UNSET,
    ae_options: dict[str, Any] | None = None,
    override: Any = (),
    log: Any = UNSET,
    guide: Any = UNSET,
    nets: Any = UNSET,
    labelled_fraction: Any = UNSET,
    program: Any = UNSET,
    program_args: Any = UNSET,
    prior: Any = UNSET,
    column_types: Any = UNSET,
    column_likelihood: Any = UNSET,
    standardize: Any = UNSET,
    report: Callable[[str], None] | None = None,
) -> Run:
    """Train a model into run folder ``out`` (or in memory when ``out`` is None) and return the run.

    A new run refuses an ``out`` that exists and is not empty. Its settings (defaults: dataset
    ``"digits"``, objective ``"analytic"``, latent_dim 8, hidden_dims (256,), likelihood ``"auto"``,
    binarize ``"auto"``, epochs 20, batch_size 128, lr 1e-3, seed 0, device ``"auto"``, model
    ``"vae"``; or ``"ae"``, ``"dae"``, ``"sae"``, ``"cae"`` with ``ae_options``) are recorded before
    the first epoch; after each epoch the folder holds the checkpoint and metrics.

    Models trained by SVI (:func:`ppl_vae.models.make_model`): ``"vae"`` with ``guide``
    (``"meanfield"``, ``"fullrank"``, ``"iaf:n=K"``), ``nets`` (``"mlp"``, ``"conv"`` for images) and
    ``prior`` (``"standard_normal"``, ``"mog:k=K"``, ``"vamp:k=K"``: :mod:`ppl_vae.priors`);
    ``"hvae"`` (two stochastic layers, Burda et al.'s fixed sizes: ``latent_dim`` and ``hidden_dims``
    do not apply); ``"m2"`` (semi-supervised, ``labelled_fraction`` of the training labels kept, default
    0.1; objective ``"enum"`` unless given). An objective the library refuses for the program (e.g.
    ``"analytic"`` for m2) is refused before anything is written.

    A table (``dataset="csv:PATH"``): every column gets a family by its type (``likelihood="auto"``), or
    ``column_likelihood={column: spec}`` for some; ``column_types={column: type}`` overrides the inferred
    types and ``standardize=True`` z-scores the real columns (:mod:`ppl_vae.runs.tables`). ``report`` is
    called once with the table's schema and families (the CLI prints it); the schema is recorded in the
    settings (``settings.data.schema``).

    ``program="module:Name"`` trains the user's own program instead (a class or factory, imported, called
    with the keyword arguments ``program_args``, a dict or its JSON): recorded, and rebuilt on resume and by
    ``evaluate`` (:class:`~ppl_vae.program_import.ImportedProgram`).

    ``resume=True`` continues the run in ``out`` with its recorded settings: a setting given here
    that differs from the record is refused unless ``override`` names it (``objective``, ``lr``,
    ``batch_size``, ``seed``, ``device``; recorded in the settings and in the history); the model
    and data cannot change. ``epochs`` is then the number of further epochs (default: up to the
    number the run was asked for). ``log=["tensorboard"]`` also writes TensorBoard event files;
    ``log=["mlflow"]`` logs the settings, the per-epoch history and the folder to MLflow
    (:mod:`ppl_vae.store.tracking`).
    """
    given = given_flags(
        ae_options,
        dataset=dataset,
        objective=objective,
        latent_dim=latent_dim,
        hidden_dims=hidden_dims,
        likelihood=likelihood,
        activation=activation,
        binarize=binarize,
        data_dir=data_dir,
        n_samples=n_samples,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=device,
        model=model,
        guide=guide,
        nets=nets,
        prior=prior,
        labelled_fraction=labelled_fraction,
        program=program,
        program_args=program_args,
        column_types=column_types,
        column_likelihood=column_likelihood,
        standardize=standardize,
    )
    more = None if epochs is UNSET else check_positive_int(epochs, "epochs")
    if time_budget is not None:
        time_budget = check_finite_number(time_budget, "time_budget", positive=True)
    override = _override_names(override, resume)
    logs = _logs(log)
    main = is_main_process()
    if out is None:
        if resume:
            raise UserError("resume=True needs the run folder (out)")
        return _start(None, given, more, logs or [], progress, time_budget, main, report)
    path = check_output_path(out, "--out")
    if resume:
        return _resume(path, given, more, override, logs, progress, time_budget, main)
    if main:
        refuse_existing(path)
    return _start(path, given, more, logs or [], progress, time_budget, main, report)


def _override_names(override: Any, resume: bool) -> list[str]:
    """A flag's name as typed (``--override batch-size``, ``--override --lr``) or as a Python name."""
    names = [override] if isinstance(override, str) else list(override or ())
    names = [str(name).strip().lstrip("-").replace("-", "_") for name in names]
    if names and not resume:
        raise UserError("override applies to --resume only (a new run takes its settings as given)")
    return names


def _logs(log: Any) -> list[str] | None:
    """The loggers asked for (None: not given), each checked and its package found."""
    logs = None if log is UNSET else ([log] if isinstance(log, str) else list(log or ()))
    for name in logs or ():
        if name not in LOGS:
            raise UserError(f"unknown log {name!r}; choose from {', '.join(LOGS)}")
    if "tensorboard" in (logs or ()):
        check_tensorboard()
    if "mlflow" in (logs or ()):
        check_mlflow()
    return logs


def _start(path, given, epochs, logs, progress, time_budget, main, report=None) -> Run:
    flags = complete(given)
    if flags["model"] in AUTOENCODERS and "likelihood" in given and given["likelihood"] != "auto":
        raise UserError(
            "likelihood is for the VAE; an autoencoder takes reconstruction='bce'|'mse'"
        )
    args = run_data_args(flags)
    provenance = data_provenance(args)
    if (
        provenance["kind"] == "files"
    ):  # the IDX folder that was found (not $PPL_VAE_DATA at a later time)
        args["data_dir"] = str(Path(next(iter(provenance["files"]))).parent)
    data, caught = load_with_warnings(load_run_data, args)
    model = _reinit(model_from_flags(flags, data.meta, epochs or 20), flags["seed"])
    replay_warnings(caught, model)
    check_objective(model, data, flags["objective"])
    shown = schema_report(model, data)
    if shown is not None and report is not None and main:
        report(shown)
    settings = {
        "flags": flags,
        "model_kind": flags["model"],
        "model": getattr(model, "config", None),
        "data": {
            "args": args,
            "provenance": provenance,
            **({"schema": data.meta.schema} if data.meta.schema is not None else {}),
        },
        "epochs": epochs or 20,
        "time_budget": time_budget,
        "log": logs,
        "created": now(),
        "versions": versions(),
    }
    doc = {"settings": settings, "resumes": []}
    if path is None or not main:
        return _train(
            path, doc, flags, model, data, epochs or 20, 0, logs, progress, time_budget, main
        )
    with lock_folder(path):
        refuse_existing(path)
        remove_partial(path)
        doc = write_settings(path, settings)
        return _train(
            path, doc, flags, model, data, epochs or 20, 0, logs, progress, time_budget, main
        )


def _committed(path: Path) -> tuple[int, bytes | None, dict | None]:
    """(epochs completed, the checkpoint's copy of settings.json, its data meta) of a run folder."""
    ckpt = path / "checkpoint"
    if not (ckpt / POINTER).is_file():
        return 0, None, None
    config, copy = load_run_checkpoint(ckpt, model=False)[1:]
    return int(config["training"].get("epoch", 0)), copy, config.get("data")


def _check_resumable(path: Path) -> None:
    if not path.is_dir():
        raise MissingFileError(
            f"cannot resume: {str(path)!r} does not exist; start the run without --resume"
        )
    if not (path / SETTINGS_FILE).is_file():
        raise RunError(
            f"cannot resume {str(path)!r}: it has no settings.json, so it is not a run of this "
            "ppl_vae (an older ppl_vae's runs cannot be resumed); start a new run with another --out"
        )


def _repair(path: Path) -> None:
    """Under the lock, before a resume reads anything: no links, no half-written files of ours, the
    pointer rebuilt if it is missing (never a reason to delete), a hand-edited metrics.csv kept beside."""
    refuse_run_links(path)
    remove_partial(path)
    rebuilt = rebuild_pointer(path / "checkpoint")
    if rebuilt is not None:
        warnings.warn(rebuilt, stacklevel=4)
    if (path / "checkpoint" / POINTER).is_file():
        keep_edited_csv(path, read_settings(path))


def _resume(path, given, more, override, logs, progress, time_budget, main) -> Run:
    _check_resumable(path)
    with lock_folder(path) if main else contextlib.nullcontext():
        if main:
            _repair(path)
        doc = read_settings(path)
        flags = effective_settings(doc)
        if flags["model"] in AUTOENCODERS and "objective" in given:
            raise UserError(
                f"--objective is for the VAE; this run is an autoencoder ({flags['model']})"
            )
        changes = check_overrides(given, flags, override)
        for name, change in changes.items():
            flags[name] = change["to"]
        check_device(flags["device"])
        check_provenance(doc["settings"]["data"]["provenance"], str(path))
        done, copy, _ = _committed(path)
        same_start(doc, copy, str(path))
        target = done + more if more else target_epochs(doc)
        if target <= done:
            if changes:
                raise RunError(
                    f"{str(path)!r} already has {done} epochs (it was asked for {target}): pass "
                    "--epochs N to train N more"
                )
            if main:  # nothing left to train (e.g. killed after its last commit): bring the views up to date
                Recorder(path, doc, flags, False).write()
            run = load_run(path)
            run.trained = 0
            return run
        logs = doc["settings"].get("log", []) if logs is None else logs
        data, caught = load_with_warnings(load_run_data, doc["settings"]["data"]["args"])
        model = rebuild_model(
            doc["settings"]["model"],
            flags["batch_size"],
            str(path / SETTINGS_FILE),
            rows=getattr(data.meta, "n_train", None),
            objective=flags.get("objective"),
            epochs=target,
        )
        replay_warnings(caught, model)
        if "objective" in changes:
            check_objective(model, data, flags["objective"])
        if main:
            doc = write_settings(path, doc["settings"], new_resume(doc, done, target, changes))
        if done == 0:
            _reinit(model, flags["seed"])
        return _train(
            path, doc, flags, model, data, target - done, done, logs, progress, time_budget, main
        )


def _train(path, doc, flags, model, data, epochs, done, logs, progress, time_budget, main) -> Run:
    """Fit ``epochs`` more epochs after the ``done`` on disk (0: from the start)."""
    from ..autoencoders import Autoencoder
    from ..train.autoencoder import fit_autoencoder

    recorder = (
        Recorder(path, doc, flags, "tensorboard" in logs, "mlflow" in logs)
        if path is not None and main
        else None
    )
    common = dict(
        epochs=epochs,
        batch_size=flags["batch_size"],
        lr=flags["lr"],
        seed=flags["seed"],
        device=flags["device"],
        checkpoint_dir=path / "checkpoint" if path is not None else None,
        resume=done > 0,
        progress=progress,
        time_budget=time_budget,
        callback=recorder,
    )
    try:
        if isinstance(model, Autoencoder):
            history = fit_autoencoder(model, data, **common)
        else:
            history = fit(model, data, flags["objective"], **common)
    except BaseException:
        if recorder is not None:
            recorder.close(failed=True)
        raise
    state = getattr(history, "state", None)
    training = (
        None
        if state is None
        else {
            "epoch": state.epoch,
            "step": state.step,
            "seed": state.seed,
            "objective": state.objective,
        }
    )
    if recorder is not None:
        if (path / "checkpoint" / POINTER).is_file():
            recorder.write(training)
        recorder.close()
    annotated = History(annotate(list(history), doc))
    annotated.state = state
    config = metrics_config(doc, flags, annotated, data.meta.to_dict())
    trained = (state.epoch if state is not None else len(annotated)) - done
    return Run(model, data, annotated, config, path, doc if path is not None else None, trained)


# ------------------------------------------------------------------------------ load
def _open_run(run_dir: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    path = Path(run_dir)
    if not path.is_dir():
        raise MissingFileError(
            f"{str(path)!r} does not exist or is not a folder; make a run with "
            "`ppl-vae train --out DIR`"
        )
    if not (path / SETTINGS_FILE).is_file():
        if older_run(path):
            raise RunError(
                f"{str(path)!r} was made by an older ppl_vae (no settings.json, so its data are not "
                "recorded in a form this version trusts): load its model with "
                f"pv.load_checkpoint('{path / 'checkpoint'}'), or train it again"
            )
        raise RunError(
            f"{str(path)!r} is not a ppl_vae run folder (no settings.json); make one with "
            "`ppl-vae train --out DIR`"
        )
    doc = read_settings(path)
    advice = pointer_advice(path / "checkpoint", f"ppl-vae train --out {path} --resume")
    if advice is not None:
        raise CheckpointError(advice)
    if not (path / "checkpoint" / POINTER).is_file():
        raise RunError(
            f"{str(path)!r} has no completed epoch yet (the run stopped before its first epoch "
            f"ended): resume it with `ppl-vae train --out {path} --resume`"
        )
    return path, doc


def read_history(run_dir: str | os.PathLike[str]) -> tuple[dict[str, Any], History]:
    """``(config, history)`` of a run folder from its committed checkpoint (no tensors, no data)."""
    path, doc = _open_run(run_dir)
    config, copy = load_run_checkpoint(path / "checkpoint", model=False)[1:]
    same_start(doc, copy, str(path))
    history = History(annotate(config["training"]["history"], doc))
    return metrics_config(doc, effective_settings(doc), history, config.get("data")), history


def load_run(run_dir: str | os.PathLike[str], device: str = "cpu", load_data: bool = True) -> Run:
    """Load a run folder: the model of its last completed epoch, its history, and the same data split.

    Refuses a run whose data file has changed or disappeared, a settings.json edited by hand, and a
    run with no completed epoch yet (resume it first).
    """
    path, doc = _open_run(run_dir)
    model, config, copy = load_run_checkpoint(path / "checkpoint", device=check_device(device))
    same_start(doc, copy, str(path))
    data = None
    if load_data:
        check_provenance(doc["settings"]["data"]["provenance"], str(path))
        data, caught = load_with_warnings(load_run_data, doc["settings"]["data"]["args"])
        replay_warnings(caught, model)
        saved = config.get("data") or {}
        for key in ("input_dim", "n_train", "n_test", "binarize", "seed"):
            if key in saved and saved[key] != getattr(data.meta, key, saved[key]):
                raise RunError(
                    f"{str(path)!r}: the data now load with {key}={getattr(data.meta, key)!r}, but the "
                    f"run was trained with {key}={saved[key]!r}: the data or their loader changed"
                )
    history = History(annotate(config["training"]["history"], doc))
    flags = effective_settings(doc)
    return Run(
        model,
        data,
        history,
        metrics_config(doc, flags, history, config.get("data")),
        path,
        doc,
        checkpoint=config.get("set"),
    )
