r"""Compare inference methods: methods x seeds -> one tidy table, paired differences, an ArviZ data set.

A **method** is a model, a guide family and an objective with its parameters (:class:`~.methods.Method`;
``"iwae:k=5"``, ``"iaf:n=2/iwae:k=5,grad=dreg"``, ``"hvae/trace"``, ``"vae:nets=conv/fullrank/analytic"``).
For every seed the data are loaded once (same split, same binarisation for every method) and every
method starts from the **same initial weights** where the shapes allow: methods of one family (same model
and guide) start from identical weights, and a family built after the first of its model copies every
tensor whose name and shape agree (the decoder, the likelihood's parameters, the encoder's shared
layers). Each model is trained with :func:`ppl_vae.fit` (the same epochs, or the same ``time_budget`` in
seconds) and evaluated on the test split with the **same estimator settings**
(:func:`ppl_vae.diagnostics.evaluate`: K importance samples, one evaluation seed; ``estimator=`` is passed
through, e.g. ``"ais"``). Per run the table reports

* ``test_elbo``: mean over test points of the ELBO estimated from the same K draws
  (:math:`\frac{1}{K}\sum_k \log w_k`), nats per point;
* ``test_iw_log_likelihood``: mean of :math:`\log\frac{1}{K}\sum_k w_k` (Burda et al., 2015);
  ``gap`` = IW - ELBO >= 0 per point (Jensen), a lower bound on KL(q(z|x) || p(z|x));
* ``khat_share_above_0.7``: share of test points whose PSIS :math:`\hat k` > 0.7 (their IW
  estimate is unreliable);
* ``active_units`` (:math:`\mathrm{Var}_x \mathbb{E}_q[z_j] > 0.01`), ``kl_per_dim_mean`` (mean
  closed-form KL per latent unit; NaN where the guide does not factorise: full rank, flows, hierarchies),
  ``reconstruction_error`` (BCE in nats for a Bernoulli likelihood, else MSE per coordinate);
* ``train_seconds`` (the training loops, without per-epoch test evaluation),
  ``seconds_per_epoch``, ``fit_seconds`` (wall time of ``fit``);
* ``model``, ``guide``, ``objective``: the method's parts; ``test_accuracy``: the classifier's accuracy on
  the test labels for models that have one (M2), else NaN; ``test_ais_log_likelihood`` with
  ``estimator="ais"``, else NaN (the paired table then compares ``ais_log_likelihood`` per point too).

Paired differences: :mod:`.paired`. Results save to ``comparison.csv``, ``paired.csv``, ``comparison.nc``
(ArviZ ``InferenceData`` with per-point values, training curves and the summary on dims
``method, seed, point|epoch``) and ``comparison.png``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..data import Dataset, load_dataset
from ..errors import UserError
from ..programs import Program, as_program, hook_rows
from ..train import fit, resolve_device
from .comparison import Comparison, plot_comparison
from .methods import Method, ProgramMethod, method_of, model_axis
from .paired import DataMismatch, check_same_data, data_fingerprint, paired_differences
from .ranks import CellRanks
from .resume import Cell, CellStore
from .rows import (
    TABLE_COLUMNS,
    assemble,
    curve_frame,
    evaluate_into,
    table_row,
    test_accuracy,
    warn_small_k,
)

__all__ = [
    "TABLE_COLUMNS",
    "Comparison",
    "DataMismatch",
    "Method",
    "ProgramMethod",
    "compare",
    "compare_runs",
    "data_fingerprint",
    "paired_differences",
    "plot_comparison",
    "run_comparison",
]


def _params_digest(built: Any) -> str:
    """A digest of the initial weights of a built model or program (every module it belongs to)."""
    h = hashlib.sha1()
    for i, module in enumerate(as_program(built).modules):
        for name, t in sorted(module.state_dict().items()):
            h.update(f"{i}.{name}".encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _weights_of(built: Any) -> torch.nn.Module | None:
    """The one module whose ``state_dict`` holds a built model's weights (the model itself, or the owner of
    a :class:`~ppl_vae.programs.Program`); None for other programs (a plain object holding its networks,
    free functions): those are built under the seed instead, so they start from the same weights too."""
    if isinstance(built, torch.nn.Module):
        return built
    return as_program(built).module


def _owner(built: Any) -> Any:
    """Where a built program's hooks (``dataset_inputs``, ``accuracy``) live."""
    return built.owner if isinstance(built, Program) else built


# ----------------------------------------------------------------------------- running


def _check_methods(methods: Sequence[Any]) -> list[Method]:
    if isinstance(methods, (str, Method)) or not isinstance(methods, Sequence) or not methods:
        raise UserError(
            f"methods must be a non-empty list of methods such as ['trace', 'iwae:k=5', "
            f"'iaf:n=2/iwae:k=5,grad=dreg']; got {methods!r}"
        )
    parsed = [
        m if isinstance(m, ProgramMethod) else Method.parse(m.strip() if isinstance(m, str) else m)
        for m in methods
    ]
    keys = [m.key for m in parsed]
    dup = sorted({m.label for m in parsed if keys.count(m.key) > 1})
    if dup:
        raise UserError(
            f"methods name the same method (model, guide and objective) more than once: {dup}"
        )
    return parsed


def _check_seeds(seeds: Sequence[int]) -> list[int]:
    if isinstance(seeds, int):
        seeds = [seeds]
    seeds = list(seeds)
    if not seeds or any(
        not isinstance(s, (int, np.integer)) or isinstance(s, bool) or s < 0 for s in seeds
    ):
        raise UserError(f"seeds must be a non-empty list of non-negative integers; got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"seeds must be distinct; got {seeds!r}")
    return [int(s) for s in seeds]


def _test_rows(
    model: Any, data: Dataset, test_points: int | None
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """The test split as the program takes it: ``x``, or ``(x, *inputs)`` from its ``dataset_inputs`` hook."""
    hook = getattr(_owner(model), "dataset_inputs", None)
    rows = (data.test, *hook_rows(hook, data, "test")) if callable(hook) else (data.test,)
    rows = tuple(t[:test_points] for t in rows) if test_points is not None else rows
    return rows if len(rows) > 1 else rows[0]


def _without_test(data: Dataset) -> Dataset:
    """The same data with an empty test split: ``fit`` then scores no test ELBO per epoch."""
    labels = None if data.test_labels is None else data.test_labels[:0]
    return dataclasses.replace(data, test=data.test[:0], test_labels=labels)


def _share_weights(model: torch.nn.Module, source: dict[str, torch.Tensor]) -> list[str]:
    """Copy every tensor of ``source`` whose name and shape ``model`` has; returns the names copied."""
    own = model.state_dict()
    shared = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict({**own, **shared})
    return sorted(shared)


def _build(
    method: Any,
    seed: int,
    data: Dataset,
    defaults: dict[str, Any],
    templates: dict,
    first_of_model: dict,
    settings: dict[str, Any],
) -> Any:
    """A method's model for a seed, starting from the seed's weights: methods of one family start from the
    same weights, a later family of the same model shares every tensor whose name and shape agree; a program
    without one module of weights (a plain object, free functions) is built under the seed."""
    if method.family not in templates:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            template = method.build(data.meta.input_dim, **defaults)
        weights = _weights_of(template)
        if weights is None:
            templates[method.family] = None
        else:
            if method.model in first_of_model:
                shared = _share_weights(weights, first_of_model[method.model])
                settings["shared_init"][f"{seed}:{method.model}/{method.guide}"] = shared
            else:
                first_of_model[method.model] = copy.deepcopy(weights.state_dict())
            templates[method.family] = copy.deepcopy(weights.state_dict())
        settings["init"][str(seed)]["/".join(method.family)] = _params_digest(template)
    if templates[method.family] is None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return method.build(data.meta.input_dim, **defaults)
    model = method.build(data.meta.input_dim, **defaults)
    weights = _weights_of(model)
    if weights is None:
        raise UserError(
            f"method {method.label!r}: its build returned a program without the module its first build had"
        )
    weights.load_state_dict(templates[method.family])
    return model


def run_comparison(
    methods: Sequence[Any] | None = None,
    dataset: str | Dataset = "digits",
    seeds: Sequence[int] = (0,),
    epochs: int = 20,
    *,
    num_samples: int = 1000,
    eval_seed: int = 0,
    reference: str | None = None,
    latent_dim: int = 8,
    hidden_dims: Sequence[int] = (256,),
    likelihood: str = "auto",
    activation: str = "relu",
    binarize: str | None = "auto",
    batch_size: int = 128,
    lr: float = 1e-3,
    n_samples: int | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    progress: bool = False,
    keep_models: bool = False,
    callback: Any = None,
    time_budget: float | None = None,
    estimator: str | None = None,
    evaluate_options: dict[str, Any] | None = None,
    fast: str = "auto",
    test_points: int | None = None,
    test_curve: bool = True,
    models: Mapping[str, Any] | None = None,
    objectives: Sequence[str] | None = None,
    cells: str | os.PathLike[str] | CellStore | None = None,
) -> Comparison:
    """Train every method for every seed on the same split and initialisation; evaluate all alike.

    Args:
        methods: methods (:class:`~.methods.Method` or strings: ``"trace"``, ``"iwae:k=5"``,
            ``"iaf:n=2/iwae:k=5,grad=dreg"``, ``"hvae/trace"``, ``"m2:labelled=0.1/enum"``; see :mod:`.methods`),
            or your own programs, :class:`~.methods.ProgramMethod` ``(name, build, objective)``.
        dataset: a name for :func:`ppl_vae.load_dataset` (``"digits"``, ``"mnist"``, ...), or a
            :class:`~ppl_vae.data.Dataset` (the same split for every seed; its seed stays its own).
        seeds: each seed fixes the split, binarisation, initial weights and SVI randomness of
            its runs; every method of a seed shares them.
        epochs: epochs per run (with ``time_budget``: at most this many).
        num_samples: K importance samples per test point for every evaluation (>= 2).
        eval_seed: the random stream of every evaluation.
        reference: method for paired differences (default: the first).
        latent_dim, hidden_dims, likelihood, activation: the defaults of ``vae`` and ``m2`` models (``hvae``
            keeps Burda et al.'s sizes; a method's model options override them).
        binarize, batch_size, lr, n_samples, data_dir, device: data and training settings (as in
            :func:`ppl_vae.runs.train_run`).
        progress: show training progress bars.
        keep_models: keep the trained models on the result (``.models``).
        callback: called with each finished row (a dict).
        time_budget: seconds of training per run (``fit(..., time_budget=...)``): the same budget for every
            method; the epochs each reached are in the table.
        estimator: passed to :func:`~ppl_vae.diagnostics.evaluate` (default: its IW estimator); e.g. ``"ais"``.
        evaluate_options: further keyword arguments of ``evaluate`` (e.g. ``{"ais_steps": 500}``).
        fast: ``fit``'s fast-path mode.
        test_points: evaluate on the first this many test points (default: all), the same for every method.
        test_curve: score the test ELBO after every epoch (the curves); ``False`` leaves the whole
            ``time_budget`` to training (the curves then hold the training bound only).
        models: the model axis instead of ``methods``: ``{name: spec or program factory}``
            (``{"d=2": "vae:latent=2", "d=8": "vae:latent=8"}``), each crossed with every objective of
            ``objectives`` (default ``["analytic"]``); :meth:`Comparison.ranking` then ranks them by name.
        cells: a folder (or :class:`~.resume.CellStore`) where each finished (method, seed) is committed,
            and read back instead of trained again when the same comparison is run again after a kill
            (:mod:`.resume`; cells of other settings are refused). Reused cells have no model in ``.models``.

    Under ``torchrun`` every rank runs whole cells (method x seed) and every rank returns the same result,
    equal to one process's (:mod:`.ranks`; ``.models`` then holds this rank's models only).

    Returns:
        :class:`Comparison` (``.table``, ``.paired()``, ``.points``, ``.curves``, ``.save(dir)``).

    Examples:
        >>> import ppl_vae as pv
        >>> data = pv.load_dataset("two_moons", n_samples=200, seed=0)
        >>> result = pv.run_comparison(["analytic", "iwae:k=3"], data, seeds=[0], epochs=1,
        ...                            num_samples=100, latent_dim=2, hidden_dims=(8,))
        >>> sorted(result.table["method"]), result.reference
        (['analytic', 'iwae:k=3'], 'analytic')
    """
    from ..runs import resolve_binarize

    methods, model_names = model_axis(methods, models, objectives)
    specs = _check_methods(methods)
    seeds = _check_seeds(seeds)
    reference = _reference_label(reference, specs)
    _check_counts(num_samples, test_points)
    given = dataset if isinstance(dataset, Dataset) else None
    if given is not None:
        dataset = given.meta.name
    lik = _likelihood(likelihood, given, dataset)
    binarize = resolve_binarize(binarize, lik.partition(":")[0])
    dev = resolve_device(device)
    settings = {
        "methods": [m.label for m in specs],
        "model_names": model_names,
        "dataset": dataset,
        "seeds": seeds,
        "epochs": epochs,
        "num_samples": num_samples,
        "eval_seed": eval_seed,
        "latent_dim": latent_dim,
        "hidden_dims": list(hidden_dims),
        "likelihood": lik,
        "activation": activation,
        "binarize": binarize,
        "batch_size": batch_size,
        "lr": lr,
        "n_samples": n_samples,
        "device": str(dev),
        "time_budget": time_budget,
        "estimator": estimator or "iw",
        "test_points": test_points,
        "test_curve": test_curve,
        "init": {},
        "shared_init": {},
    }
    fit_options = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "device": dev,
        "progress": progress,
        "time_budget": time_budget,
        "fast": fast,
    }
    scoring = _Scoring(
        num_samples, eval_seed, estimator, evaluate_options, test_points, test_curve, lik
    )
    out = _Results(keep_models=keep_models, callback=callback)
    store = _cell_store(cells)
    ranks = CellRanks.of(dev)  # under torchrun: whole cells per rank (.ranks), gathered below
    if store is not None:
        ranks.start(store, {**settings, "evaluate_options": evaluate_options, "fast": fast})
    mine: dict[tuple[str, int], Cell] = {}
    with ranks.computing():
        for i, seed in enumerate(seeds):
            data = _load(
                given if given is not None else dataset,
                lik,
                binarize=binarize,
                seed=seed,
                data_dir=data_dir,
                n_samples=n_samples,
            )
            fp = data_fingerprint(data)
            defaults = _model_defaults(data, latent_dim, hidden_dims, lik, activation)
            templates: dict[tuple[str, str], dict[str, torch.Tensor] | None] = {}
            first_of_model: dict[str, dict[str, torch.Tensor]] = {}
            settings["init"][str(seed)] = {}
            for j, method in enumerate(specs):
                model = _build(method, seed, data, defaults, templates, first_of_model, settings)
                if ranks.owns(i, j):  # every rank builds every model: the same weights per cell
                    with ranks.alone():
                        _run_cell(method, model, seed, data, fp, fit_options, scoring, out, store)
                    mine[(method.label, seed)] = out.cell(method.label, seed)
    out = _gathered(out, ranks, mine, [(m.label, s) for s in seeds for m in specs], store)
    return out.assemble(settings, reference, {m.label: m for m in specs})


def _likelihood(likelihood: str, given: Dataset | None, dataset: str) -> str:
    """``"auto"``: a family per column for a table (a CSV, or a Dataset with a schema), else the dataset's."""
    from ..runs import default_likelihood

    if likelihood != "auto":
        return likelihood
    if given is not None and given.meta.schema is not None:
        return "table"
    return default_likelihood(dataset)


def _cell_store(cells: Any) -> CellStore | None:
    """``cells=``: a folder (or a :class:`CellStore`) where finished cells are kept, or None."""
    return cells if isinstance(cells, CellStore) or cells is None else CellStore(cells)


def _gathered(out: Any, ranks: CellRanks, mine: dict, order: list, store: CellStore | None) -> Any:
    """Under torchrun: every rank's cells, in the single-process order; else ``out`` as it is."""
    if not ranks.active:
        return out
    return out.regathered(dict(zip(order, ranks.gather(mine, order, store), strict=True)))


def _run_cell(
    method: Any,
    model: Any,
    seed: int,
    data: Dataset,
    fp: dict,
    fit_options: dict[str, Any],
    scoring: _Scoring,
    out: _Results,
    store: CellStore | None,
) -> None:
    """One method x seed: read back from ``store`` when it finished before, else trained, scored and
    committed there. (Its model is built either way, so the cells after it start from the same weights.)"""
    cell = None if store is None else store.load(seed, method.label, fp)
    if cell is not None:
        out.add_cell(method.label, seed, cell)
        return
    _fit_and_score(method, model, seed, data, fp, fit_options, scoring, out)
    if store is not None:
        store.save(seed, method.label, out.cell(method.label, seed))


@dataclasses.dataclass(frozen=True)
class _Scoring:
    """How :func:`run_comparison` evaluates every trained model (the same for all)."""

    num_samples: int
    eval_seed: int
    estimator: str | None
    evaluate_options: dict[str, Any] | None
    test_points: int | None
    test_curve: bool
    likelihood: str


@dataclasses.dataclass
class _Results:
    """What the runs of a comparison collect, row by row, before :func:`~.rows.assemble`."""

    keep_models: bool = False
    callback: Any = None
    rows: list[dict] = dataclasses.field(default_factory=list)
    points: list[pd.DataFrame] = dataclasses.field(default_factory=list)
    curves: list[pd.DataFrame] = dataclasses.field(default_factory=list)
    fingerprints: dict[tuple[str, int], dict] = dataclasses.field(default_factory=dict)
    kl: dict[tuple[str, int], list[float]] = dataclasses.field(default_factory=dict)
    models: dict[tuple[str, int], Any] = dataclasses.field(default_factory=dict)

    def add(
        self, label: str, seed: int, row: dict, history: Any, report: Any, fp: dict, model: Any
    ) -> None:
        """One run's row, curve, data fingerprint and KL per unit (and model, with ``keep_models``)."""
        self.rows.append(row)
        self.curves.append(curve_frame(label, seed, history))
        self.fingerprints[(label, seed)] = fp
        self.kl[(label, seed)] = list(report.summary.get("kl_per_dim") or [])
        if self.keep_models:
            self.models[(label, seed)] = model
        if self.callback is not None:
            self.callback(row)

    def cell(self, label: str, seed: int) -> Cell:
        """The last run added (``label``, ``seed``) as a :class:`~.resume.Cell` to commit."""
        return Cell(
            self.rows[-1],
            self.points[-1],
            self.curves[-1],
            self.fingerprints[(label, seed)],
            self.kl[(label, seed)],
        )

    def add_cell(self, label: str, seed: int, cell: Cell) -> None:
        """A cell read back from disk, in the place its run would have taken."""
        self.rows.append(cell.row)
        self.points.append(cell.points)
        self.curves.append(cell.curve)
        self.fingerprints[(label, seed)] = cell.fingerprint
        self.kl[(label, seed)] = cell.kl
        if self.callback is not None:
            self.callback(cell.row)

    def regathered(self, cells: dict[tuple[str, int], Cell]) -> _Results:
        """Every rank's ``cells`` (in the single-process order) with this rank's models."""
        out = _Results(keep_models=self.keep_models, models=self.models)
        for (label, seed), cell in cells.items():
            out.add_cell(label, seed, cell)
        return out

    def assemble(self, settings: dict, reference: str | None, specs: dict) -> Comparison:
        return assemble(
            self.rows,
            self.points,
            self.curves,
            settings,
            self.fingerprints,
            self.kl,
            reference,
            self.models,
            specs,
        )


def _reference_label(reference: str | None, specs: list[Method]) -> str | None:
    """``reference`` as the label of one of the methods (a spec naming the same method is matched by key)."""
    labels = [m.label for m in specs]
    if reference is None or reference in labels:
        return reference
    by_key = {m.key: m.label for m in specs}
    ref_key = Method.parse(reference).key
    if ref_key not in by_key:
        raise UserError(f"reference={reference!r} is not among the methods {labels}")
    return by_key[ref_key]


def _check_counts(num_samples: Any, test_points: Any) -> None:
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 2:
        raise UserError(
            f"num_samples must be an integer >= 2 (K importance samples per test point); "
            f"got {num_samples!r}"
        )
    warn_small_k(num_samples)
    if test_points is not None and (
        not isinstance(test_points, int) or isinstance(test_points, bool) or test_points < 1
    ):
        raise UserError(
            f"test_points must be a positive integer (or None: all); got {test_points!r}"
        )


def _load(dataset: str | Dataset, lik: str, **options: Any) -> Dataset:
    """The data of one seed (a Dataset given: itself); a table's raw-scale warning is left out when every
    column gets its family (the table likelihoods standardise for their networks and score the data in its
    own units)."""
    import warnings

    from ..data.table import ScaleWarning

    if isinstance(dataset, Dataset):
        return dataset
    with warnings.catch_warnings():
        if lik == "table":
            warnings.simplefilter("ignore", ScaleWarning)
        return load_dataset(dataset, **options)


def _model_defaults(
    data: Dataset, latent_dim: int, hidden_dims: Sequence[int], lik: str, activation: str
) -> dict[str, Any]:
    """The keyword arguments every method's ``build`` gets for this data."""
    from ..runs.tables import table_likelihood

    image = data.meta.image_shape
    flags = {"likelihood": lik, "model": "vae", "dataset": data.meta.name}
    return {
        **table_likelihood(flags, data.meta),  # a table's families (schema=) for vae and hvae
        "latent_dim": latent_dim,
        "hidden_dims": tuple(hidden_dims),
        "activation": activation,
        "num_classes": data.meta.num_classes,
        "image_shape": (1, *image) if image is not None and len(image) == 2 else image,
    }


def _fit_and_score(
    method: Any,
    model: Any,
    seed: int,
    data: Dataset,
    fp: dict,
    fit_options: dict[str, Any],
    scoring: _Scoring,
    out: _Results,
) -> None:
    """Train one method's model for a seed, evaluate it on the test rows and add its row to ``out``."""
    t0 = time.perf_counter()
    history = fit(
        model,
        data if scoring.test_curve else _without_test(data),
        method.objective,
        seed=seed,
        data_plate=getattr(method, "data_plate", None),
        **fit_options,
    )
    fit_seconds = time.perf_counter() - t0
    test_x = _test_rows(model, data, scoring.test_points)
    plate = {"data_plate": method.data_plate} if getattr(method, "data_plate", None) else {}
    report = evaluate_into(
        model,
        test_x,
        method.label,
        seed,
        scoring.num_samples,
        scoring.eval_seed,
        out.points,
        scoring.estimator,
        {**plate, **(scoring.evaluate_options or {})},
    )
    row = table_row(
        method,
        seed,
        list(history),
        report,
        fit_seconds,
        scoring.likelihood.partition(":")[0],
        test_accuracy(_owner(model), data),
    )
    out.add(method.label, seed, row, history, report, fp, model)


def compare(
    methods: Sequence[Any] | None = None,
    dataset: str | Dataset = "digits",
    seeds: Sequence[int] = (0,),
    epochs: int = 20,
    *,
    data: str | Dataset | None = None,
    **kwargs: Any,
) -> pd.DataFrame:
    """The per-run table of :func:`run_comparison` (one row per method and seed).

    ``pv.compare(["trace", "analytic", "iaf:n=2/iwae:k=5,grad=dreg"], "digits", seeds=[0, 1, 2], epochs=50)``;
    keyword arguments as in :func:`run_comparison`. Use :func:`run_comparison` for the paired
    differences, the ranking of ``models=``, per-point values, curves and saving. A model axis:
    ``pv.compare(models={"d=2": "vae:latent=2", "d=8": "vae:latent=8"}, objectives=["analytic"],
    data="digits", seeds=[0, 1, 2])`` (``data`` is ``dataset`` by another name).

    Examples:
        >>> import ppl_vae as pv
        >>> table = pv.compare(["trace", "analytic"], "two_moons", seeds=[0], epochs=1,
        ...                    num_samples=100, latent_dim=2, hidden_dims=(8,))
        >>> sorted(table["method"])
        ['analytic', 'trace']
    """
    return run_comparison(methods, dataset if data is None else data, seeds, epochs, **kwargs).table


def compare_runs(
    runs: Sequence[Any],
    *,
    num_samples: int = 1000,
    eval_seed: int = 0,
    reference: str | None = None,
    estimator: str | None = None,
    evaluate_options: dict[str, Any] | None = None,
) -> Comparison:
    """Evaluate already-trained runs (run folders or :class:`ppl_vae.runs.Run`) with the same settings.

    Runs are keyed by (method, seed), the method read from the run's model (class, guide) and objective.
    Runs of the same seed must share their data exactly (same dataset, split sizes, binarisation and
    tensors), else :class:`DataMismatch`: a paired comparison of different test sets would be meaningless.

    Examples:
        >>> import tempfile
        >>> import ppl_vae as pv
        >>> from ppl_vae.runs import train_run
        >>> root = tempfile.mkdtemp()
        >>> runs = [train_run(f"{root}/{o}", dataset="two_moons", objective=o, epochs=1, latent_dim=2,
        ...                   hidden_dims=(8,), progress=False) for o in ("trace", "analytic")]
        >>> result = pv.compare_runs(runs, num_samples=100)
        >>> sorted(result.table["method"])
        ['analytic', 'trace']
    """
    from ..runs import Run, load_run

    if not runs:
        raise UserError("compare_runs needs at least one run (a run folder or a Run)")
    warn_small_k(num_samples)
    loaded = [r if isinstance(r, Run) else load_run(r) for r in runs]
    out = _Results()
    by_seed: dict[int, tuple[str, dict]] = {}
    specs: dict[str, Method] = {}
    for run in loaded:
        method, seed, fp = _run_key(run, out, by_seed)
        history = list(run.history)
        report = evaluate_into(
            run.model,
            run.data.test,
            method.label,
            seed,
            num_samples,
            eval_seed,
            out.points,
            estimator,
            evaluate_options,
        )
        lik = run.model.likelihood.name if hasattr(run.model, "likelihood") else ""
        row = table_row(
            method, seed, history, report, math.nan, lik, test_accuracy(run.model, run.data)
        )
        out.add(method.label, seed, row, history, report, fp, run.model)
        specs[method.label] = method
    settings = {
        "runs": [str(r.path) for r in loaded],
        "num_samples": num_samples,
        "eval_seed": eval_seed,
        "estimator": estimator or "iw",
    }
    if reference is not None:
        by_key = {m.key: label for label, m in specs.items()}
        reference = by_key.get(Method.parse(reference).key, reference)
    return out.assemble(settings, reference, specs)


def _run_key(
    run: Any, out: _Results, by_seed: dict[int, tuple[str, dict]]
) -> tuple[Method, int, dict]:
    """A loaded run's method, seed and data fingerprint; two runs of one (method, seed), or runs of one seed
    on different data (:class:`DataMismatch`), are refused."""
    if run.data is None:
        raise UserError(f"run {run.path} was loaded without its data (load_data=False)")
    method = method_of(run.model, str(run.config.get("objective", "analytic")))
    seed = int(run.config.get("seed", run.data.meta.seed))
    if (method.label, seed) in out.fingerprints:
        raise UserError(
            f"two runs have the same method {method.label!r} and seed {seed}: "
            f"{run.path} and an earlier one"
        )
    fp = data_fingerprint(run.data)
    if seed in by_seed:
        check_same_data(
            by_seed[seed][1],
            fp,
            f"run {run.path or method.label!r} and run {by_seed[seed][0]!r}",
        )
    else:
        by_seed[seed] = (str(run.path or method.label), fp)
    return method, seed, fp
