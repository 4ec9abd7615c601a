"""The figure of a predictive check (:func:`ppl_vae.predictive_check`, ``ppl-vae check``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._common import finish, png_bytes

#: a statistic with at most this many terms is drawn term by term; more as observed against replicated
STRIP_TERMS = 40


def _strip(ax: Axes, rows: pd.DataFrame) -> None:
    """Each term's 95% replicated interval (bar), replicated mean (tick) and observed value (dot)."""
    pos = np.arange(len(rows))
    low, high = rows["lower"].to_numpy(float), rows["upper"].to_numpy(float)
    ax.vlines(pos, low, high, color="tab:blue", alpha=0.5, linewidth=4, label="replicated 95%")
    ax.scatter(pos, rows["replicated_mean"], marker="_", s=60, color="tab:blue", zorder=3)
    bad = rows["extreme"].to_numpy(bool)
    obs = rows["observed"].to_numpy(float)
    ax.scatter(pos[~bad], obs[~bad], s=14, color="black", zorder=4, label="observed")
    ax.scatter(pos[bad], obs[bad], s=20, color="tab:red", zorder=4, label="observed, p < 0.01")
    if len(rows) <= 20:
        ax.set_xticks(pos, [str(t) for t in rows["term"]], rotation=60, fontsize=7, ha="right")
    else:
        ax.set_xlabel("term (column, level or pair; see check.csv)", fontsize=8)


def _scatter(ax: Axes, rows: pd.DataFrame) -> None:
    """Observed against replicated mean with the replicated interval, for many terms."""
    mean, obs = rows["replicated_mean"].to_numpy(float), rows["observed"].to_numpy(float)
    err = np.abs(np.stack([mean - rows["lower"].to_numpy(float), rows["upper"] - mean]))
    bad = rows["extreme"].to_numpy(bool)
    alpha = min(0.3, 15.0 / len(rows))  # a band, not a blot, for thousands of pairs
    ax.errorbar(mean, obs, xerr=err, fmt="none", ecolor="tab:blue", alpha=alpha, linewidth=0.8)
    ax.scatter(mean[~bad], obs[~bad], s=6, color="black", label="observed")
    ax.scatter(mean[bad], obs[bad], s=8, color="tab:red", label="observed, p < 0.01")
    finite = np.isfinite(np.concatenate([mean, obs]))
    if finite.any():
        both = np.concatenate([mean, obs])[finite]
        ax.plot([both.min(), both.max()], [both.min(), both.max()], color="grey", linewidth=0.8)
    ax.set_xlabel("replicated mean (bars: 95% interval)", fontsize=8)


def plot_predictive_check(
    check: Any, *, sources: tuple[str, ...] = ("posterior",), path: str | Path | None = None
) -> Figure:
    """Observed statistics against their replicated distributions: one panel per statistic and source.

    Args:
        check: a :class:`~ppl_vae.PredictiveCheck` or its ``table``.
        sources: which replicates to draw (``"posterior"``, ``"prior"``), one row of panels each.
        path: also write the figure there as a PNG.

    A statistic with up to :data:`STRIP_TERMS` terms shows each term's replicated 95% interval and
    its observed value (red: p < 0.01); one with more (pixels, column pairs) plots the observed values
    against the replicated means, the diagonal marking agreement.

    Example:
        >>> import torch, ppl_vae as pv
        >>> from ppl_vae.plots.checks import plot_predictive_check
        >>> vae = pv.LinearGaussianVAE(input_dim=3, latent_dim=1)
        >>> check = pv.predictive_check(vae, torch.randn(20, 3), num_samples=10)
        >>> len(plot_predictive_check(check).axes)  # mean, variance, zero fraction, correlation
        4
    """
    table = getattr(check, "table", check)
    stats = list(dict.fromkeys(table["statistic"]))
    fig = Figure(figsize=(3.6 * len(stats), 3.2 * len(sources)), layout="constrained")
    axes = fig.subplots(len(sources), len(stats), squeeze=False)
    for r, source in enumerate(sources):
        for c, stat in enumerate(stats):
            ax = axes[r][c]
            rows = table[(table["source"] == source) & (table["statistic"] == stat)]
            (_strip if len(rows) <= STRIP_TERMS else _scatter)(ax, rows)
            extreme = int(rows["extreme"].sum())
            ax.set_title(
                f"{stat.replace('_', ' ')} ({source})\n{extreme} of {len(rows)} with p < 0.01",
                fontsize=9,
            )
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7, loc="best")
    fig.suptitle("Predictive check: observed statistic against replicated data", fontsize=10)
    return finish(fig, path)


def predictive_check_png(check: Any, sources: tuple[str, ...] = ("posterior",)) -> bytes:
    """:func:`plot_predictive_check` as PNG bytes (what ``ppl-vae check`` commits as ``check.png``)."""
    return png_bytes(plot_predictive_check(check, sources=sources))
