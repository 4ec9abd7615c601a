"""Rubin's rules: the formulas by hand, the refusals, and coverage with exact conditional imputations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import ppl_vae as pv
from ppl_vae.errors import UserError


def test_rubin_matches_the_formulas_by_hand():
    q = np.array([1.0, 1.4, 0.8, 1.2])
    u = np.array([0.04, 0.05, 0.03, 0.04])
    out = pv.rubin(q, u, dof=50)
    m, b, ubar = 4, q.var(ddof=1), u.mean()
    t = ubar + (1 + 1 / m) * b
    lam = (1 + 1 / m) * b / t
    nu_obs = 51 / 53 * 50 * (1 - lam)
    nu = 1 / (lam**2 / (m - 1) + 1 / nu_obs)
    assert out.estimate[0] == pytest.approx(q.mean())
    assert out.total[0] == pytest.approx(t)
    assert out.dof[0] == pytest.approx(nu)
    low, high = out.interval(0.9)
    assert high[0] - q.mean() == pytest.approx(stats.t.ppf(0.95, nu) * np.sqrt(t))
    assert pv.rubin(q, u).dof[0] == pytest.approx((m - 1) / lam**2)  # large-sample
    frame = out.to_frame()
    assert list(frame.columns[:4]) == ["estimate", "se", "low_95", "high_95"]


def test_pool_keeps_component_names_and_refuses_what_it_cannot_pool():
    tables = [pd.DataFrame({"a": [1.0, 2.0, 3.0 + i], "b": [0.0, 1.0, i]}) for i in range(3)]
    out = pv.pool(tables, lambda t: (t.mean(), t.var() / len(t)))
    assert out.names == ["a", "b"] and out.m == 3
    assert out.to_frame().index.tolist() == ["a", "b"]
    with pytest.raises(UserError, match="at least 2 completed tables"):
        pv.pool(tables[:1], lambda t: (t.a.mean(), 0.1))
    with pytest.raises(UserError, match=r"return \(estimate, variance\)"):
        pv.pool(tables, lambda t: t.a.mean())
    with pytest.raises(TypeError, match="list of completed DataFrames"):
        pv.pool(tables[0], lambda t: (1.0, 1.0))


def _proper_imputations(rng, n: int, m: int):
    """y = 1 + 0.6 v + N(0, 0.8^2), v observed, half the y missing at random; M proper imputations
    (Rubin 1987, Sec. 5.3): sigma^2 and beta drawn from their posterior on the complete cases, then y_mis."""
    v = rng.normal(size=n)
    y = 1.0 + 0.6 * v + 0.8 * rng.normal(size=n)
    obs = rng.random(n) > 0.5
    obs[:3] = True
    x = np.column_stack([np.ones(n), v])
    xo, yo = x[obs], y[obs]
    gram = np.linalg.inv(xo.T @ xo)
    beta = gram @ xo.T @ yo
    dof = int(obs.sum()) - 2
    s2 = float(((yo - xo @ beta) ** 2).sum() / dof)
    tables = []
    for _ in range(m):
        sigma2 = s2 * dof / rng.chisquare(dof)
        b = rng.multivariate_normal(beta, sigma2 * gram)
        filled = y.copy()
        filled[~obs] = x[~obs] @ b + np.sqrt(sigma2) * rng.normal(size=int((~obs).sum()))
        tables.append(pd.DataFrame({"y": filled, "v": v}))
    single = y.copy()
    single[~obs] = x[~obs] @ beta  # the conditional mean: single imputation
    return tables, single


def test_rubin_intervals_cover_with_proper_imputations():
    """200 data sets, half of y missing, M = 10 proper imputations: Rubin's 95% interval for the mean of
    y covers the truth about 95% of the time; the table completed by the conditional mean (single
    imputation) and treated as complete data covers far less: its spread is too small."""
    rng = np.random.default_rng(0)
    reps, n = 200, 60
    covered = naive = 0
    for _ in range(reps):
        tables, single = _proper_imputations(rng, n, 10)
        low, high = pv.pool(tables, lambda t: (t.y.mean(), t.y.var() / n), dof=n - 1).interval()
        covered += int(low[0] < 1.0 < high[0])
        half = stats.t.ppf(0.975, n - 1) * single.std(ddof=1) / np.sqrt(n)
        naive += int(abs(single.mean() - 1.0) < half)
    share, share_naive = covered / reps, naive / reps
    assert 0.91 < share < 0.985, share  # binomial s.e. 1.5%
    assert share_naive < 0.9, share_naive
