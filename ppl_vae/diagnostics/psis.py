r"""Pareto-smoothed importance sampling: is the importance-weighted estimate of a point trustworthy?

PSIS (Vehtari et al., 2024) fits a generalised Pareto distribution to the largest weights of each
point; its shape :math:`\hat k` says how many moments the weights have:

* :math:`\hat k < 0.5`: finite variance; the IW estimate is reliable (**good**);
* :math:`0.5 \le \hat k < 0.7`: infinite variance but still usable, with more noise (**usable**);
* :math:`\hat k \ge 0.7`: the IW estimate for that point is **unreliable**, however large K looks.

The effective sample size of the normalised weights :math:`\tilde w_k` is :math:`1 / \sum_k \tilde w_k^2`.
This module is the one home of the ArviZ calls (``az.psislw`` takes ``(N, K)`` log weights, samples last).

References:
    Vehtari, Simpson, Gelman, Yao & Gabry (2024), Pareto Smoothed Importance Sampling, JMLR 25(72).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..errors import UserError

__all__ = [
    "KHAT_BAD",
    "KHAT_GOOD",
    "PSISDiagnostics",
    "arviz",
    "importance_ess",
    "psis_diagnostics",
]

#: k-hat thresholds of Vehtari et al. (2024).
KHAT_GOOD = 0.5
KHAT_BAD = 0.7


def arviz() -> Any:
    """Import ArviZ, silencing only its import-time refactor FutureWarning."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*ArviZ is undergoing a major refactor.*", category=FutureWarning
        )
        import arviz

    return arviz


def importance_ess(log_w: torch.Tensor | np.ndarray) -> np.ndarray:
    """Effective sample size of the normalised weights per point: ``1 / sum_k w~_k^2``, in [1, K].

    ``log_w: (N, K)`` -> ``(N,)`` numpy array.
    """
    lw = torch.as_tensor(
        np.asarray(log_w) if not isinstance(log_w, torch.Tensor) else log_w
    ).double()
    if lw.dim() != 2:
        raise UserError(f"log weights must have shape (N, K); got {tuple(lw.shape)}")
    norm = lw - lw.logsumexp(-1, keepdim=True)
    return (-(2 * norm).logsumexp(-1)).exp().cpu().numpy()


@dataclass
class PSISDiagnostics:
    """Pareto-smoothed importance sampling diagnostics per data point.

    Attributes:
        khat: ``(N,)`` Pareto shape estimates: < 0.5 good, 0.5-0.7 usable, > 0.7 the IW estimate
            for that point is unreliable (``inf`` when too few tail draws to fit; NaN when every
            weight of the point is equal: nothing to fit, and the IW estimate is exact).
        ess: ``(N,)`` effective sample size of the raw normalised weights, in [1, K].
        num_samples: K.
        exact: ``(N,)`` True where every weight of the point is equal (a program without latent
            sites, or a guide equal to the posterior): k-hat is undefined there, and the estimate exact.
    """

    khat: np.ndarray
    ess: np.ndarray
    num_samples: int
    exact: np.ndarray | None = None

    def reliable(self, threshold: float = 0.7) -> np.ndarray:
        """``(N,)`` True where the IW estimate can be trusted: ``khat <= threshold``, or exact."""
        exact = self.exact if self.exact is not None else np.zeros(len(self.khat), bool)
        return (self.khat <= threshold) | exact

    def share_above(self, threshold: float) -> float:
        """Share of points with ``khat > threshold``."""
        return float(np.mean(self.khat > threshold))

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"khat": self.khat, "ess": self.ess})


def psis_diagnostics(
    log_w: torch.Tensor | np.ndarray, reff: float = 1.0, rows_per_call: int = 2048
) -> PSISDiagnostics:
    """PSIS k-hat (``arviz.psislw``) and ESS of ``(N, K)`` log weights, samples on the last axis.

    ``arviz.psislw`` (0.23) treats the last axis as samples and returns ``(smoothed, khat)``; it
    is called on blocks of ``rows_per_call`` points so memory stays bounded.

    Raises:
        ValueError: ``K < 2``: a Pareto tail cannot be fitted to fewer than 2 draws per point
            (ArviZ fits the largest ``min(K/5, 3 sqrt(K))`` draws and needs at least 5 of them;
            in practice use ``K >= 100``).

    Examples:
        >>> import torch
        >>> import ppl_vae as pv
        >>> log_w = 0.5 * torch.randn(3, 1000, generator=torch.Generator().manual_seed(0))  # (N, K)
        >>> d = pv.psis_diagnostics(log_w)
        >>> d.khat.shape, bool((d.khat < 0.5).all())  # light-tailed weights: k-hat < 0.5
        ((3,), True)
    """
    lw = (
        log_w.detach().cpu().double().numpy()
        if isinstance(log_w, torch.Tensor)
        else np.asarray(log_w, float)
    )
    if lw.ndim != 2:
        raise UserError(f"log weights must have shape (N, K), samples last; got shape {lw.shape}")
    k = lw.shape[1]
    if k < 2:
        raise UserError(
            f"PSIS k-hat needs at least 2 importance samples per point (num_samples >= 2); got K={k}: "
            "the Pareto tail is fitted to the largest weights of each point (ArviZ uses the largest "
            "min(K/5, 3*sqrt(K)) and needs 5 of them, so in practice K >= 100)"
        )
    if k < 100:
        warnings.warn(
            f"k-hat from K={k} samples per point is unreliable (inf when K <= 20: too few tail draws "
            "for the Pareto fit); use num_samples >= 100",
            UserWarning,
            stacklevel=2,
        )
    az = arviz()
    khat = np.empty(lw.shape[0])
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        for start in range(0, lw.shape[0], rows_per_call):
            _, kh = az.psislw(lw[start : start + rows_per_call], reff=reff)
            khat[start : start + rows_per_call] = kh
    exact = np.ptp(lw, axis=1) <= 1e-12 * np.maximum(1.0, np.abs(lw).max(axis=1))
    khat[exact] = np.nan  # every weight equal: no tail to fit (PSIS would say inf)
    return PSISDiagnostics(khat=khat, ess=importance_ess(lw), num_samples=k, exact=exact)
