r"""The estimator ladder: ELBO -> importance weighting with K doubling -> AIS, per row, until converged.

For each row ``x_n`` the ladder climbs only as far as it must, and says where it stopped and why:

1. **ELBO** (``K0`` draws of ``log w = log p(x, z) - log q(z | x)``): if the log weights of the row are
   equal to within ``target_se`` (``std(log w) <= target_se``), ``IW_K - ELBO <= var(log w) / 2`` is
   negligible and the ELBO is the estimate (``reason="weights constant"``: q is the posterior).
2. **IW with K doubling** (Burda et al., 2015): ``IW_K = log mean_k w_k`` on ``K`` draws, then ``K`` more
   draws give ``IW_2K``. The row has converged at ``2K`` when the Pareto k-hat of its ``2K`` weights is
   ``<= khat_threshold`` (Vehtari et al., 2024: above 0.7 the estimate is unreliable), the rise
   ``IW_2K - IW_K`` is no more than the estimate's standard error, and that standard error is
   ``<= target_se``. The s.e. is the delta method's, ``sqrt(var(w) / (2K)) / mean(w)``.
3. **AIS** (Neal, 2001; Wu et al., 2017) for the rows that have not converged by ``k_max``: annealed
   importance sampling from the guide (:func:`~ppl_vae.ais_log_likelihood`), its s.e. over chains.

The result is a per-row DataFrame (``estimator``, ``reason``, ``log_likelihood``, ``se`` and each
rung's numbers) and a summary dict (mean over rows, its Monte Carlo s.e. ``sqrt(sum se_n^2) / N`` and its
s.e. over rows, how many rows stopped where), as :func:`~ppl_vae.evaluate` reports.

References:
    Burda, Grosse & Salakhutdinov (2015), Importance Weighted Autoencoders.
    Vehtari, Simpson, Gelman, Yao & Gabry (2024), Pareto Smoothed Importance Sampling.
    Wu, Burda, Salakhutdinov & Grosse (2017), On the Quantitative Analysis of Decoder-Based Models.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..diagnostics.psis import psis_diagnostics
from ..errors import UserError
from .ais import ais_log_likelihood
from .importance import log_weights

__all__ = ["LadderResult", "add_to_report", "estimate_log_likelihood"]


@dataclass
class LadderResult:
    """What the ladder found: ``points`` (one row per data point) and ``summary`` (JSON-able)."""

    points: pd.DataFrame
    summary: dict[str, Any]


def _take(data: Any, idx: np.ndarray) -> Any:
    index = torch.as_tensor(idx, dtype=torch.long)
    if isinstance(data, torch.Tensor):
        return data[index.to(data.device)]
    if isinstance(data, tuple) and all(isinstance(t, torch.Tensor) for t in data):
        return tuple(t[index.to(t.device)] for t in data)
    raise UserError(
        "estimate_log_likelihood takes data as a tensor (N, ...) or a tuple of row-aligned tensors; got "
        f"{type(data).__name__} (pass dataset.tensors)"
    )


def _iw(lw: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``IW = log mean w`` per row and its delta-method s.e., ``sqrt(var(w) / K) / mean(w)``."""
    k = lw.shape[1]
    iw = torch.logsumexp(lw, 1) - math.log(k)
    w = torch.exp(lw - lw.max(1, keepdim=True).values)
    rel = w.std(1) / w.mean(1) / math.sqrt(k)
    return iw.double().cpu().numpy(), rel.double().cpu().numpy()


def _khat(lw: torch.Tensor) -> np.ndarray:
    with (
        warnings.catch_warnings()
    ):  # small K: the PSIS warning is the ladder's to give, not per level
        warnings.simplefilter("ignore", UserWarning)
        d = psis_diagnostics(lw)
    exact = d.exact if d.exact is not None else np.zeros(len(d.khat), bool)
    return np.where(exact, 0.0, d.khat)


def _check(target_se: float, k_start: int, k_max: int) -> None:
    if not (isinstance(target_se, (int, float)) and math.isfinite(target_se) and target_se > 0):
        raise UserError(
            f"target_se must be a positive number of nats (e.g. 0.05); got {target_se!r}"
        )
    if not (
        isinstance(k_start, int) and k_start >= 8 and isinstance(k_max, int) and k_max >= k_start
    ):
        raise UserError(
            f"k_start must be an integer >= 8 (k-hat needs tail draws) and k_max >= k_start; got "
            f"k_start={k_start!r}, k_max={k_max!r}"
        )


def _climb(
    program: Any, data: Any, frame: pd.DataFrame, opts: dict[str, Any], seed: int
) -> np.ndarray:
    """Rungs 1 and 2 on every row; fills ``frame``; returns the rows left for AIS."""
    k0, tol = opts["k_start"], opts["target_se"]
    lw = log_weights(program, data, k0, seed=seed).detach().double()
    frame["elbo"] = lw.mean(1).cpu().numpy()
    frame["elbo_se"] = (lw.std(1) / math.sqrt(k0)).cpu().numpy()
    flat = (lw.std(1) <= tol).cpu().numpy()
    frame.loc[flat, ["estimator", "reason"]] = ["elbo", "weights constant"]
    frame.loc[flat, "log_likelihood"] = frame.loc[flat, "elbo"]
    frame.loc[flat, "se"] = frame.loc[flat, "elbo_se"]
    todo, level = np.flatnonzero(~flat), 1
    lw = lw[torch.as_tensor(todo, dtype=torch.long)]
    while len(todo) and lw.shape[1] * 2 <= opts["k_max"]:
        k = lw.shape[1]
        more = log_weights(program, _take(data, todo), k, seed=seed + level).detach().double()
        old, _ = _iw(lw)
        lw = torch.cat([lw, more.to(lw.device)], 1)
        iw, se = _iw(lw)
        khat, rise = _khat(lw), iw - old
        frame.loc[todo, ["iw", "iw_se", "k", "khat", "iw_rise"]] = np.stack(
            [iw, se, np.full(len(todo), 2 * k), khat, rise], 1
        )
        done = (khat <= opts["khat_threshold"]) & (rise <= se) & (se <= tol)
        frame.loc[todo[done], ["estimator", "reason"]] = ["iw", "converged"]
        frame.loc[todo[done], "log_likelihood"] = iw[done]
        frame.loc[todo[done], "se"] = se[done]
        todo, lw, level = todo[~done], lw[torch.as_tensor(~done)], level + 1
    return todo


def _why(row: pd.Series, opts: dict[str, Any]) -> str:
    """Why IW did not serve the row at ``k_max`` (the first failed condition of rung 2)."""
    if not row["khat"] <= opts["khat_threshold"]:
        return "k-hat above threshold"
    if row["iw_rise"] > row["iw_se"]:
        return "IW still rising"
    return "IW s.e. above target"


def estimate_log_likelihood(
    program: Any,
    data: Any,
    *,
    target_se: float = 0.05,
    k_start: int = 64,
    k_max: int = 4096,
    khat_threshold: float = 0.7,
    ais_steps: int = 500,
    ais_chains: int = 16,
    seed: int = 0,
) -> LadderResult:
    """``log p(x_n)`` per row by the ladder ELBO -> IW (K doubling) -> AIS (the rule: module docstring).

    Args:
        program: an object with ``.model``/``.guide`` (a :class:`~ppl_vae.VAE`, a run's model).
        data: a tensor ``(N, ...)`` or a tuple of row-aligned tensors.
        target_se: the Monte Carlo standard error (nats) a row's IW estimate must reach.
        k_start, k_max: the first and largest number of importance samples per row.
        khat_threshold: the PSIS k-hat above which IW is not trusted (0.7).
        ais_steps, ais_chains: AIS settings for the rows IW could not serve.
        seed: the random stream (each rung and level its own, derived from it).

    Examples:
        >>> import torch
        >>> import ppl_vae as pv
        >>> _ = torch.manual_seed(0)
        >>> lg = pv.LinearGaussianVAE(input_dim=3, latent_dim=1)
        >>> x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
        >>> res = pv.estimate_log_likelihood(lg, x, k_max=256, ais_steps=50)
        >>> set(res.summary["stopped_at"]) <= {"elbo", "iw", "ais"}, len(res.points)  # a row per point
        (True, 4)
        >>> list(res.points.columns[-4:])  # the estimate, its s.e., where it stopped and why
        ['log_likelihood', 'se', 'estimator', 'reason']
    """
    _check(target_se, k_start, k_max)
    opts = {
        "target_se": float(target_se),
        "k_start": k_start,
        "k_max": k_max,
        "khat_threshold": float(khat_threshold),
    }
    n = len(data[0] if isinstance(data, tuple) else data)
    nan = np.full(n, np.nan)
    cols = ["elbo", "elbo_se", "iw", "iw_se", "k", "khat", "iw_rise", "log_likelihood", "se"]
    frame = pd.DataFrame({**{c: nan.copy() for c in cols}, "estimator": "", "reason": ""})
    todo = _climb(program, data, frame, opts, seed)
    if len(todo):
        reasons = [_why(frame.loc[i], opts) for i in todo]
        res = ais_log_likelihood(
            program,
            _take(data, todo),
            num_steps=ais_steps,
            num_chains=ais_chains,
            seed=seed + 1000,
            return_diagnostics=True,
        )
        frame.loc[todo, "log_likelihood"] = res.log_likelihood.double().cpu().numpy()
        frame.loc[todo, "se"] = res.se.double().cpu().numpy()
        frame.loc[todo, "estimator"] = "ais"
        frame.loc[todo, "reason"] = reasons
    return LadderResult(frame, _summary(frame, opts, ais_steps, ais_chains))


def _summary(frame: pd.DataFrame, opts: dict[str, Any], steps: int, chains: int) -> dict[str, Any]:
    ll, se = frame["log_likelihood"].to_numpy(), frame["se"].to_numpy()
    n = len(frame)
    counts = frame["estimator"].value_counts()
    top = frame["estimator"].map({"elbo": 0, "iw": 1, "ais": 2}).max()
    return {
        "n": n,
        "log_likelihood_mean": float(ll.mean()),
        "mc_se": float(np.sqrt(np.nansum(se**2)) / n),
        "se_over_rows": float(ll.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan"),
        "stopped_at": {k: int(v) for k, v in counts.items()},
        "highest_rung": ["elbo", "iw", "ais"][int(top)],
        "reasons": {k: int(v) for k, v in frame["reason"].value_counts().items()},
        **opts,
        "ais_steps": steps,
        "ais_chains": chains,
    }


def add_to_report(
    report: Any, program: Any, data: Any, target_se: float, seed: int
) -> LadderResult:
    """Run the ladder and put it on an :class:`~ppl_vae.Report` (``evaluate --ladder``): ``ladder_*``
    columns per point and scalar ``ladder_*`` summary fields (``stopped_at`` as ``"iw: 95, ais: 5"``)."""
    res = estimate_log_likelihood(program, data, target_se=target_se, seed=seed)
    for col in ("log_likelihood", "se", "k", "khat", "estimator", "reason"):
        report.points[f"ladder_{col}"] = res.points[col].to_numpy()
    s = res.summary
    report.summary.update(
        ladder_log_likelihood_mean=s["log_likelihood_mean"],
        ladder_mc_se=s["mc_se"],
        ladder_target_se=s["target_se"],
        ladder_highest_rung=s["highest_rung"],
        ladder_stopped_at=", ".join(f"{k}: {v}" for k, v in s["stopped_at"].items()),
        ladder_reasons=", ".join(f"{k}: {v}" for k, v in s["reasons"].items()),
    )
    return res
