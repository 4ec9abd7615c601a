r"""Rubin's rules: one estimate and an honest standard error from a statistic on M completed tables.

For M completed tables (multiple imputations), a statistic with estimate :math:`\hat q_m` and
complete-data variance :math:`u_m` (its squared standard error) on table m pools as (Rubin, 1987)

.. math::

    \bar q = \frac1M \sum_m \hat q_m, \quad \bar u = \frac1M \sum_m u_m, \quad
    b = \frac{1}{M-1} \sum_m (\hat q_m - \bar q)^2, \quad t = \bar u + (1 + 1/M)\, b,

with :math:`\bar q \pm t_{\nu, 1-\alpha/2} \sqrt t` as the interval. The degrees of freedom are
Barnard & Rubin's (1999) small-sample ones when the complete-data ``dof`` is given,
:math:`\nu = (1/\nu_m + 1/\nu_{obs})^{-1}`, :math:`\nu_m = (M - 1)/\lambda^2`,
:math:`\nu_{obs} = \frac{\nu_c + 1}{\nu_c + 3} \nu_c (1 - \lambda)`, and Rubin's :math:`\nu_m` without;
:math:`\lambda = (1 + 1/M) b / t` is the share of the variance due to the missing values (the
fraction of missing information, before the df correction).

**What it does not cover.** Imputations from one trained model (``pv.impute(..., multiple=M)``)
condition on its fitted parameters; Rubin's rules assume *proper* imputations that also draw the
parameters, so ``t`` is too small by the uncertainty of the fit (small for a model trained on many
more rows than it imputes). Pool imputations from several seeds or bootstrap fits to include it.

References:
    Rubin (1987), Multiple Imputation for Nonresponse in Surveys, Wiley. Barnard & Rubin (1999),
    Small-sample degrees of freedom with multiple imputation, Biometrika 86(4).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .._checks import check_finite_number
from ..errors import ArgumentTypeError, UserError

__all__ = ["Pooled", "pool", "rubin"]


@dataclass(frozen=True)
class Pooled:
    """A statistic pooled across M completed tables by Rubin's rules (one entry per component).

    Attributes:
        estimate: the mean of the M estimates. within: mean complete-data variance. between: variance
            of the M estimates. total: ``within + (1 + 1/M) between``. dof: degrees of freedom of the
            t reference. missing_information: ``(1 + 1/M) between / total``. m: M. names: component names.
    """

    estimate: np.ndarray
    within: np.ndarray
    between: np.ndarray
    total: np.ndarray
    dof: np.ndarray
    missing_information: np.ndarray
    m: int
    names: list[str]

    @property
    def se(self) -> np.ndarray:
        """The pooled standard error ``sqrt(total)``."""
        return np.sqrt(self.total)

    def interval(self, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """The t interval ``estimate -/+ t_{dof} se`` at ``level``."""
        level = check_finite_number(level, "level")
        if not 0 < level < 1:
            raise UserError(f"level must be in (0, 1); got {level}")
        half = stats.t.ppf(0.5 + level / 2, self.dof) * self.se
        return self.estimate - half, self.estimate + half

    def to_frame(self, level: float = 0.95) -> pd.DataFrame:
        """One row per component: estimate, se, interval, dof, within, between, missing information."""
        low, high = self.interval(level)
        pct = f"{100 * level:g}"
        return pd.DataFrame(
            {
                "estimate": self.estimate,
                "se": self.se,
                f"low_{pct}": low,
                f"high_{pct}": high,
                "dof": self.dof,
                "within": self.within,
                "between": self.between,
                "missing_information": self.missing_information,
            },
            index=pd.Index(self.names, name="statistic"),
        )


def _as_matrix(values: Any, what: str) -> tuple[np.ndarray, list[str] | None]:
    rows, names = [], None
    for v in values:
        if isinstance(v, pd.Series):
            names = [str(i) for i in v.index] if names is None else names
        elif np.ndim(v) == 0:
            names = ["statistic"]
        rows.append(np.atleast_1d(np.asarray(v, dtype=float)))
    if not rows:
        raise UserError(f"{what}: no completed tables to pool")
    shapes = {r.shape for r in rows}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise UserError(f"{what} must be numbers or 1-D arrays of one length; got shapes {shapes}")
    out = np.stack(rows)
    if not np.isfinite(out).all():
        raise UserError(f"{what} must be finite; got {out[~np.isfinite(out)][:3]}")
    return out, names


def rubin(estimates: Sequence[Any], variances: Sequence[Any], dof: float | None = None) -> Pooled:
    """Pool M estimates and their complete-data variances (numbers or equal-length vectors).

    Args:
        estimates: ``q_m`` per completed table. variances: ``u_m`` (squared standard errors).
        dof: the complete-data degrees of freedom (e.g. ``n - 1`` for a mean); None: large-sample.

    Examples:
        >>> import ppl_vae as pv
        >>> pooled = pv.rubin([1.0, 1.2, 0.9], [0.04, 0.05, 0.04], dof=99)
        >>> round(float(pooled.estimate[0]), 4), pooled.m
        (1.0333, 3)
        >>> round(float(pooled.total[0]), 4)  # within + (1 + 1/M) between
        0.0744
    """
    q, names = _as_matrix(estimates, "estimates")
    u, _ = _as_matrix(variances, "variances")
    if q.shape != u.shape:
        raise UserError(f"estimates {q.shape} and variances {u.shape} must have the same shape")
    if (u < 0).any():
        raise UserError("variances must be >= 0 (squared standard errors)")
    m = len(q)
    if m < 2:
        raise UserError(
            "Rubin's rules need at least 2 completed tables (multiple >= 2); with one there is no "
            "between-imputation variance"
        )
    qbar, ubar, b = q.mean(0), u.mean(0), q.var(0, ddof=1)
    t = ubar + (1 + 1 / m) * b
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = np.where(t > 0, (1 + 1 / m) * b / t, 0.0)
        nu_m = np.where(lam > 0, (m - 1) / lam**2, np.inf)
        if dof is not None:
            dof = check_finite_number(dof, "dof", positive=True)
            nu_obs = (dof + 1) / (dof + 3) * dof * (1 - lam)
            nu = 1 / (1 / nu_m + 1 / nu_obs)
        else:
            nu = nu_m
    return Pooled(
        estimate=qbar,
        within=ubar,
        between=b,
        total=t,
        dof=nu,
        missing_information=lam,
        m=m,
        names=names or [str(i) for i in range(q.shape[1])],
    )


def pool(
    tables: Sequence[pd.DataFrame],
    statistic: Callable[[pd.DataFrame], tuple[Any, Any]],
    dof: float | None = None,
) -> Pooled:
    """Compute ``statistic(table) -> (estimate, variance)`` on each completed table and pool them.

    ``pv.pool(imputation.tables, lambda t: (t.age.mean(), t.age.var() / len(t)), dof=len(t) - 1)``;
    estimates may be vectors (a pandas Series keeps its index as the component names).

    Examples:
        >>> import pandas as pd
        >>> import ppl_vae as pv
        >>> tables = [pd.DataFrame({"age": [30.0, 40.0, 50.0 + m]}) for m in range(3)]
        >>> pooled = pv.pool(tables, lambda t: (t.age.mean(), t.age.var() / len(t)), dof=2)
        >>> round(float(pooled.estimate[0]), 4), pooled.m
        (40.3333, 3)
    """
    if isinstance(tables, pd.DataFrame) or not all(isinstance(t, pd.DataFrame) for t in tables):
        raise ArgumentTypeError(
            "tables must be a list of completed DataFrames (Imputation.tables, from multiple=M)"
        )
    if not callable(statistic):
        raise ArgumentTypeError("statistic must be a function table -> (estimate, variance)")
    pairs = [statistic(t) for t in tables]
    if not all(isinstance(p, tuple) and len(p) == 2 for p in pairs):
        raise UserError(
            "statistic must return (estimate, variance): the variance is the squared standard error "
            "of the estimate on one complete table"
        )
    return rubin([p[0] for p in pairs], [p[1] for p in pairs], dof)
