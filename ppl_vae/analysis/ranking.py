r"""Rank compared models by held-out log p(x), ArviZ ``compare``-style.

Every run of a comparison is evaluated on the same test rows of its seed with the same estimator and K,
so two models are compared **per row**: for seed :math:`s` and row :math:`i` the difference
:math:`d_{si} = \log\hat p_m(x_i) - \log\hat p_{best}(x_i)`. Columns of :func:`rank_models`:

* ``log_px``: the mean over seeds of the per-seed mean held-out log p(x) (nats per row), with ``log_px_se``
  = sqrt(sum_s se_s^2) / S, se_s the s.e. over the rows of seed s;
* ``diff``: ``log_px`` minus the best model's (<= 0), ``diff_se``: its **paired** s.e. over rows and seeds,
  sqrt(sum_s se(d_s)^2) / S with se(d_s) the s.d. of the per-row differences of seed s / sqrt(n_s)
  (the point-to-point variation cancels); ``diff_se_seeds``: the s.d. of the per-seed mean differences /
  sqrt(S) (it carries the training randomness too; NaN for one seed);
* ``khat_share``: share of a model's rows whose PSIS :math:`\hat k` > 0.7; ``unreliable`` is True when it
  exceeds 0.1 (a warning names those models: their IW estimate may be far below log p(x));
* ``within_2se``: ``diff + 2 * se >= 0`` (not distinguishable from the best), ``se`` the larger of
  ``diff_se`` and ``diff_se_seeds`` when there are several seeds: the paired row s.e. alone says nothing
  of how much the difference moves when the models are trained again, and seeds that disagree must not
  read as a clear winner.

No ``weight`` column: ArviZ's stacking/pseudo-BMA weights are for predictive densities of one data set
under LOO; here the summed held-out log p(x) over hundreds of rows makes pseudo-BMA weights 0 or 1, which
would read as certainty the seeds do not support. The paired s.e. is the honest measure.

Reference: Vehtari, Gelman & Gabry (2017), Practical Bayesian model evaluation using leave-one-out
cross-validation and WAIC (the elpd difference and its paired s.e.); ``arviz.compare``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..errors import UserError

__all__ = ["KHAT_UNRELIABLE_SHARE", "RANKING_COLUMNS", "rank_models"]

#: A model is flagged when more than this share of its rows has k-hat > 0.7.
KHAT_UNRELIABLE_SHARE = 0.1

RANKING_COLUMNS = [
    "rank",
    "model",
    "method",
    "log_px",
    "log_px_se",
    "diff",
    "diff_se",
    "diff_se_seeds",
    "within_2se",
    "khat_share",
    "unreliable",
    "n_rows",
    "n_seeds",
    "metric",
]


def _metric_of(points: pd.DataFrame) -> str:
    """The best held-out estimate present: AIS when every run has it, else IW."""
    if "ais_log_likelihood" in points and points["ais_log_likelihood"].notna().all():
        return "ais_log_likelihood"
    return "iw_log_likelihood"


def _per_seed(points: pd.DataFrame, method: str, metric: str) -> pd.DataFrame:
    """One method's per-row values as a (point x seed) frame."""
    own = points[points["method"] == method]
    return own.pivot(index="point", columns="seed", values=metric)


def _mean_se(frame: pd.DataFrame) -> tuple[float, float]:
    """Mean over seeds of per-seed means, and sqrt(sum of per-seed squared s.e.) / S."""
    means = frame.mean(axis=0)
    ses = frame.std(axis=0, ddof=1) / np.sqrt(frame.count(axis=0))
    s_count = frame.shape[1]
    return float(means.mean()), float(math.sqrt(float((ses**2).sum())) / s_count)


def _paired(frame: pd.DataFrame, best: pd.DataFrame) -> tuple[float, float, float]:
    """Mean per-row difference to the best, its paired s.e. over rows and its s.e. over seeds."""
    diff = frame - best
    mean, se = _mean_se(diff)
    means = diff.mean(axis=0)
    se_seeds = float(means.std(ddof=1) / math.sqrt(len(means))) if len(means) > 1 else math.nan
    return mean, se, se_seeds


def _row(
    method: str,
    frame: pd.DataFrame,
    best: pd.DataFrame,
    mean_se: tuple[float, float],
    points: pd.DataFrame,
    name: str,
    metric: str,
) -> dict[str, object]:
    """One model's line of the ranking (before ``rank``): its estimate, paired difference, k-hat share."""
    diff, diff_se, diff_se_seeds = _paired(frame, best)
    is_best = frame is best
    se = max(diff_se, diff_se_seeds) if math.isfinite(diff_se_seeds) else diff_se
    khat = points.loc[points["method"] == method, "khat"] if "khat" in points else pd.Series([])
    share = float((khat > 0.7).mean()) if len(khat) else math.nan
    return {
        "model": name,
        "method": method,
        "log_px": mean_se[0],
        "log_px_se": mean_se[1],
        "diff": diff,
        "diff_se": 0.0 if is_best else diff_se,
        # the best's difference to itself is 0 with no spread; with one seed there is no seed-to-seed s.e.
        "diff_se_seeds": (0.0 if frame.shape[1] > 1 else math.nan) if is_best else diff_se_seeds,
        "within_2se": True if is_best else bool(diff + 2 * se >= 0),
        "khat_share": share,
        "unreliable": bool(share > KHAT_UNRELIABLE_SHARE),
        "n_rows": int(frame.count().sum()),
        "n_seeds": frame.shape[1],
        "metric": metric,
    }


def rank_models(
    points: pd.DataFrame,
    names: Mapping[str, str] | None = None,
    metric: str | None = None,
) -> pd.DataFrame:
    """Rank the methods of a comparison's per-row table by held-out log p(x) (see the module docstring).

    Args:
        points: ``Comparison.points`` (``method, seed, point``, the metric columns and ``khat``).
        names: ``{method label: model name}`` shown in the ``model`` column (default: the label).
        metric: the per-row column ranked (default: ``ais_log_likelihood`` when present, else
            ``iw_log_likelihood``).

    Returns:
        One row per method, best first, with :data:`RANKING_COLUMNS`.

    Examples:
        >>> import pandas as pd
        >>> from ppl_vae.analysis.ranking import rank_models
        >>> pts = pd.DataFrame({"method": ["a"] * 3 + ["b"] * 3, "seed": 0, "point": [0, 1, 2] * 2,
        ...                     "iw_log_likelihood": [-1.0, -2.0, -3.0, -1.5, -2.4, -3.2],
        ...                     "khat": 0.1})
        >>> rank_models(pts)[["rank", "model", "diff"]].round(2).to_dict("list")
        {'rank': [1, 2], 'model': ['a', 'b'], 'diff': [0.0, -0.37]}
    """
    metric = metric or _metric_of(points)
    if metric not in points:
        raise UserError(f"rank_models: no per-row column {metric!r}; columns: {list(points)}")
    methods = list(dict.fromkeys(points["method"]))
    frames = {m: _per_seed(points, m, metric) for m in methods}
    shapes = {m: (tuple(f.index), tuple(f.columns)) for m, f in frames.items()}
    if len(set(shapes.values())) > 1:
        raise UserError(
            "rank_models: the models were not evaluated on the same rows and seeds "
            f"({ {m: (len(i), list(s)) for m, (i, s) in shapes.items()} }); rank runs of one comparison"
        )
    means = {m: _mean_se(f) for m, f in frames.items()}
    best = max(methods, key=lambda m: means[m][0])
    rows = [
        _row(m, frames[m], frames[best], means[m], points, (names or {}).get(m, m), metric)
        for m in methods
    ]
    out = pd.DataFrame(rows).sort_values("log_px", ascending=False, kind="stable")
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    flagged = list(out.loc[out["unreliable"], "model"])
    if flagged:
        warnings.warn(
            f"ranking: the held-out estimate of {flagged} is unreliable (more than "
            f"{KHAT_UNRELIABLE_SHARE:.0%} of rows have k-hat > 0.7); raise K or use estimator='ais'",
            UserWarning,
            stacklevel=2,
        )
    return out[RANKING_COLUMNS].reset_index(drop=True)
