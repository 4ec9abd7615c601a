"""Figures of an evaluation report: PSIS k-hat per point, the IW - ELBO gap, ELBO against IW."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ._common import add_legend, add_title, finish, integer_ticks, new_axes, png_bytes, save_png


# --------------------------------------------------------------------------- diagnostics (evaluate)
def plot_khat(report: Any, *, path: str | Path | None = None) -> Figure:
    """PSIS k-hat per point of an :class:`ppl_vae.diagnostics.Report` (thresholds 0.5 and 0.7)."""
    from ..diagnostics.psis import KHAT_BAD, KHAT_GOOD

    khat = report.points["khat"].to_numpy()
    idx = np.arange(len(khat))
    fig, ax = new_axes(None, (7, 3.6))
    finite = np.isfinite(khat)
    colour = np.where(
        khat > KHAT_BAD, "tab:red", np.where(khat > KHAT_GOOD, "tab:orange", "tab:blue")
    )
    ax.scatter(idx[finite], khat[finite], s=6, c=colour[finite], alpha=0.7, linewidths=0)
    for level, style, label in (
        (KHAT_GOOD, ":", "0.5 (good below)"),
        (KHAT_BAD, "--", "0.7 (unreliable above)"),
    ):
        ax.axhline(level, color="grey", linestyle=style, linewidth=1, label=label)
    s = report.summary
    ax.set_xlabel("data point")
    ax.set_ylabel("PSIS k-hat (Pareto shape)")
    integer_ticks(ax.xaxis)
    add_title(
        ax,
        f"Importance-weight tails per point, K={s['num_samples']}: "
        f"{100 * s['khat_share_above_0.5']:.1f}% above 0.5, {100 * s['khat_share_above_0.7']:.1f}% "
        f"above 0.7\n{report.name}",
    )
    add_legend(ax, markerscale=1)
    return finish(fig, path)


def plot_gap_hist(report: Any, *, path: str | Path | None = None) -> Figure:
    """Histogram of the per-point gap IW log p(x) - ELBO of an :class:`ppl_vae.diagnostics.Report`."""
    gap = report.points["gap"].to_numpy()
    gap = gap[np.isfinite(gap)]
    fig, ax = new_axes(None, (6, 3.6))
    ax.hist(gap, bins=min(60, max(10, len(gap) // 10)), color="tab:blue", alpha=0.8)
    s = report.summary
    ax.axvline(
        s["gap_mean"],
        color="black",
        linestyle="--",
        linewidth=1,
        label=f"mean {s['gap_mean']:.3f} ± {s['gap_se']:.3f} (s.e.)",
    )
    ax.set_xlabel("IW log p(x) - ELBO (nats per data point)")
    ax.set_ylabel("number of points")
    integer_ticks(ax.yaxis)
    add_title(ax, f"Gap between IW (K={s['num_samples']}) and ELBO per point\n{report.name}")
    add_legend(ax, markerscale=1)
    return finish(fig, path)


REPORT_FIGURES = {"khat.png": plot_khat, "gap_hist.png": plot_gap_hist}


def report_figure_files(report: Any) -> dict[str, bytes]:
    """``{"khat.png": PNG bytes, "gap_hist.png": ...}`` of an evaluation report, for
    :meth:`ppl_vae.diagnostics.Report.save`'s ``figures=`` (committed with the numbers as one set)."""
    return {name: png_bytes(plot(report)) for name, plot in REPORT_FIGURES.items()}


def save_report_figures(report: Any, directory: str | Path) -> dict[str, Path]:
    """Write ``khat.png`` and ``gap_hist.png`` of an evaluation report into ``directory`` (each file
    atomically); returns the paths. To keep them with the numbers they show, pass
    ``figures=report_figure_files(report)`` to ``report.save`` instead: one set, committed as one unit."""
    out = Path(directory)
    return {
        Path(name).stem: save_png(plot(report), out / name) for name, plot in REPORT_FIGURES.items()
    }


def plot_elbo_vs_iw(report: Any, *, path: str | Path | None = None) -> Figure:
    """Per-point ELBO (x) against the importance-weighted log p(x) (y) of a Report, coloured by k-hat.

    Points sit on or above the diagonal (IW >= ELBO from the same draws); the vertical distance
    is the gap, a lower bound on KL(q(z | x) || p(z | x)).
    """
    pts = report.points
    elbo_v, iw_v, khat = (pts[c].to_numpy() for c in ("elbo", "iw_log_likelihood", "khat"))
    fig, ax = new_axes(None, (6.0, 5.2))
    groups = (
        (khat < 0.5, "tab:blue", "k-hat < 0.5 (good)"),
        ((khat >= 0.5) & (khat < 0.7), "tab:orange", "0.5 <= k-hat < 0.7 (usable)"),
        (khat >= 0.7, "tab:red", "k-hat >= 0.7 (IW unreliable)"),
    )
    for sel, colour, label in groups:
        if sel.any():
            ax.scatter(
                elbo_v[sel],
                iw_v[sel],
                s=8,
                color=colour,
                alpha=0.7,
                linewidths=0,
                label=f"{label}: {int(sel.sum())} points",
            )
    lo, hi = float(np.nanmin(elbo_v)), float(np.nanmax(iw_v))
    ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", linewidth=1, label="IW = ELBO")
    s = report.summary
    ax.set_xlabel("ELBO (nats per data point)")
    ax.set_ylabel(f"IW log p(x), K={s['num_samples']} (nats per data point)")
    add_title(
        ax, f"ELBO vs IW log p(x) per point (mean gap {s['gap_mean']:.3f} nats)\n{report.name}"
    )
    add_legend(ax, markerscale=1.5)
    return finish(fig, path)
