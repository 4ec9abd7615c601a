"""One run's share of a comparison: its evaluation, its table row, its per-point values and its curves.

Shared by :func:`~.compare.run_comparison` (runs it trains) and :func:`~.compare.compare_runs` (runs
read from disk), so both report the same columns from the same estimator settings.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..data import Dataset
from ..diagnostics import evaluate
from ..errors import UserError
from ..estimators.globals import per_point_program
from ..programs import as_program
from ..registry import REGISTRY
from .comparison import Comparison
from .methods import Method

__all__ = [
    "TABLE_COLUMNS",
    "assemble",
    "curve_frame",
    "evaluate_into",
    "table_row",
    "test_accuracy",
    "warn_small_k",
]

#: Columns of :attr:`Comparison.table`, in order.
TABLE_COLUMNS = [
    "method",
    "seed",
    "epochs",
    "test_elbo",
    "test_elbo_se",
    "test_iw_log_likelihood",
    "test_iw_se",
    "gap",
    "khat_share_above_0.7",
    "active_units",
    "latent_dim",
    "kl_mean",
    "kl_per_dim_mean",
    "reconstruction_error",
    "reconstruction_mse",
    "final_train_elbo",
    "train_seconds",
    "seconds_per_epoch",
    "fit_seconds",
    "num_samples",
    "n_test",
    "missing_fraction",
    "model",
    "guide",
    "objective",
    "test_accuracy",
    "test_ais_log_likelihood",
]


def test_accuracy(model: Any, data: Dataset | None) -> float:
    """The classifier's accuracy on the test labels for models that have one (M2), else NaN."""
    if data is None or data.test_labels is None or not callable(getattr(model, "accuracy", None)):
        return math.nan
    model.eval()
    return float(model.accuracy(data.test, data.test_labels))


def reconstruction_kind(likelihood: str) -> str:
    """``"nll"`` or ``"mse"``: the reconstruction error a likelihood's entry declares (its
    ``reconstruction`` trait; ``"mse"`` for a likelihood that is not registered)."""
    name = likelihood.partition(":")[0]
    if ("likelihood", name) not in REGISTRY:
        return "mse"
    return REGISTRY.entry("likelihood", name).trait("reconstruction", "mse")


def table_row(
    method: Method,
    seed: int,
    history: list[dict],
    report: Any,
    fit_seconds: float,
    likelihood: str,
    accuracy: float = math.nan,
) -> dict[str, Any]:
    """One row of :data:`TABLE_COLUMNS` from a run's history and its :func:`evaluate` report."""
    s = report.summary
    train_seconds = float(sum(r["seconds"] for r in history))
    d = s.get("latent_dim")
    recon = s.get(f"reconstruction_{reconstruction_kind(likelihood)}")
    return {
        "method": method.label,
        "seed": seed,
        "epochs": len(history),
        "test_elbo": s["elbo_mean"],
        "test_elbo_se": s["elbo_se"],
        "test_iw_log_likelihood": s["iw_mean"],
        "test_iw_se": s["iw_se"],
        "gap": s["gap_mean"],
        "khat_share_above_0.7": s["khat_share_above_0.7"],
        "active_units": s.get("active_units"),
        "latent_dim": d,
        "kl_mean": s.get("kl_mean"),
        "kl_per_dim_mean": float(np.mean(s["kl_per_dim"])) if s.get("kl_per_dim") else math.nan,
        "reconstruction_error": recon,
        "reconstruction_mse": s.get("reconstruction_mse"),
        "final_train_elbo": history[-1]["train_elbo"] if history else math.nan,
        "train_seconds": train_seconds,
        "seconds_per_epoch": train_seconds / len(history) if history else math.nan,
        "fit_seconds": fit_seconds,
        "num_samples": s["num_samples"],
        "n_test": s["n"],
        "missing_fraction": s.get("missing_fraction", 0.0),
        "model": method.model,
        "guide": method.guide,
        "objective": method.objective,
        "test_accuracy": accuracy,
        "test_ais_log_likelihood": s.get("ais_mean", math.nan),
    }


def assemble(
    rows: list[dict],
    points: list[pd.DataFrame],
    curves: list[pd.DataFrame],
    settings: dict,
    fingerprints: dict,
    kl: dict,
    reference: str | None,
    models: dict,
    specs: dict,
) -> Comparison:
    """The :class:`Comparison` of all runs; ``reference`` (default: the first method) must be one of them."""
    table = pd.DataFrame(rows)[TABLE_COLUMNS]
    methods = list(dict.fromkeys(table["method"]))
    reference = methods[0] if reference is None else reference
    if reference not in methods:
        raise UserError(f"reference={reference!r} is not among the methods {methods}")
    return Comparison(
        table=table,
        points=pd.concat(points, ignore_index=True),
        curves=pd.concat(curves, ignore_index=True),
        settings=settings,
        fingerprints=fingerprints,
        kl_per_dim=kl,
        reference=reference,
        models=models,
        method_specs=specs,
    )


def evaluate_into(
    model: Any,
    test_x: torch.Tensor | tuple[torch.Tensor, ...],
    label: str,
    seed: int,
    num_samples: int,
    eval_seed: int,
    points: list[pd.DataFrame],
    estimator: str | None = None,
    evaluate_options: dict[str, Any] | None = None,
) -> Any:
    """:func:`evaluate` one trained model on ``test_x`` (``(n, ...)`` or ``(x, *inputs)``) with K =
    ``num_samples`` and seed ``eval_seed``; appends its per-point frame (``method, seed, point, ...``)
    to ``points`` and returns the report. Global latents are fixed at their guide means, with a warning."""
    params = [p for m in as_program(model).modules for p in m.parameters()]
    if params:
        dev = params[0].device
        test_x = tuple(t.to(dev) for t in test_x) if isinstance(test_x, tuple) else test_x.to(dev)
    extra = dict(evaluate_options or {})
    if estimator not in (None, "iw"):
        extra["estimator"] = estimator
    target, names = per_point_program(model, test_x, data_plate=extra.get("data_plate"))
    if names:
        warnings.warn(
            f"compare: {label} has global latent site(s) {names}: its per-point values are "
            "log p(x_n | theta) at their guide means (pv.fix_globals)",
            UserWarning,
            stacklevel=2,
        )
    with warnings.catch_warnings():  # the small-K k-hat warning is given once, by warn_small_k
        warnings.filterwarnings("ignore", message=".*k-hat from .*", category=UserWarning)
        try:
            report = evaluate(
                target,
                test_x,
                num_samples,
                seed=eval_seed,
                keep_log_weights=False,
                name=f"{label} seed {seed}",
                **extra,
            )
        except TypeError as err:
            if not extra or "unexpected keyword" not in str(err):
                raise
            raise UserError(
                f"evaluate does not take {sorted(extra)} in this version of ppl_vae ({err}); "
                "compare with the IW estimator (estimator='iw')"
            ) from None
    pts = report.points.copy()
    pts.insert(0, "point", np.arange(len(pts)))
    pts.insert(0, "seed", seed)
    pts.insert(0, "method", label)
    points.append(pts)
    return report


def warn_small_k(num_samples: int) -> None:
    """Warn once per comparison (at the caller's caller) when K is too small for PSIS k-hat."""
    if num_samples < 100:
        warnings.warn(
            f"num_samples={num_samples}: PSIS k-hat (khat_share_above_0.7) is unreliable below 100 "
            "importance samples per point",
            UserWarning,
            stacklevel=3,
        )


def curve_frame(label: str, seed: int, history: list[dict]) -> pd.DataFrame:
    """The training curves of one run: ``method, seed, epoch, step, train_elbo, test_elbo, ...``."""
    columns = ("epoch", "step", "train_elbo", "test_elbo", "seconds", "kl_weight")
    frame = pd.DataFrame(list(history), columns=None if history else list(columns))
    keep = [c for c in columns if c in frame.columns]
    frame = frame[keep].astype(float).astype({"epoch": int})
    frame.insert(0, "seed", seed)
    frame.insert(0, "method", label)
    return frame
