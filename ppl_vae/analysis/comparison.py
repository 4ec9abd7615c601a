"""The outcome of a comparison: tables, paired differences, an ArviZ data set, a figure, files."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .methods import Method
from .paired import PAIRED_METRICS, paired_differences

if TYPE_CHECKING:
    import arviz
    from matplotlib.figure import Figure

__all__ = ["Comparison", "plot_comparison"]


@dataclass
class Comparison:
    """The outcome of :func:`run_comparison` / :func:`compare_runs`.

    Attributes:
        table: one row per (method, seed); columns :data:`TABLE_COLUMNS`.
        points: per test point and run: ``method, seed, point, elbo, iw_log_likelihood, gap, khat,
            ess, kl, recon_*``.
        curves: per epoch and run: ``method, seed, epoch, train_elbo, test_elbo, seconds, kl_weight``.
        settings: the arguments (JSON-able), including the evaluation settings shared by every run.
        fingerprints: ``{(method, seed): data fingerprint}`` (see :func:`data_fingerprint`).
        kl_per_dim: ``{(method, seed): list of d floats}``.
        reference: the method paired differences are taken against (default: the first).
        models: ``{(method, seed): trained model}`` when kept (``keep_models=True``).
        method_specs: ``{label: Method}`` (model, guide, objective of each method).
    """

    table: pd.DataFrame
    points: pd.DataFrame
    curves: pd.DataFrame
    settings: dict[str, Any]
    fingerprints: dict[tuple[str, int], dict[str, Any]]
    kl_per_dim: dict[tuple[str, int], list[float]]
    reference: str
    models: dict[tuple[str, int], Any] = field(default_factory=dict, repr=False)
    method_specs: dict[str, Method] = field(default_factory=dict, repr=False)

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(self.table["method"]))

    @property
    def seeds(self) -> list[int]:
        return [int(s) for s in dict.fromkeys(self.table["seed"])]

    def paired(
        self, reference: str | None = None, metrics: Sequence[str] = PAIRED_METRICS
    ) -> pd.DataFrame:
        """Paired differences against ``reference`` (default :attr:`reference`); see :func:`paired_differences`."""
        if metrics is PAIRED_METRICS and "ais_log_likelihood" in self.points:
            metrics = (*PAIRED_METRICS, "ais_log_likelihood")
        return paired_differences(
            self.points, reference or self.reference, metrics, self.fingerprints
        )

    def summary(self) -> pd.DataFrame:
        """Per method: mean over seeds of the table's main columns, with the standard error across seeds."""
        cols = [
            "test_elbo",
            "test_iw_log_likelihood",
            "gap",
            "khat_share_above_0.7",
            "active_units",
            "kl_per_dim_mean",
            "reconstruction_error",
            "seconds_per_epoch",
            "test_accuracy",
        ]
        grouped = self.table.groupby("method", sort=False)[cols]
        mean = grouped.mean()
        se = grouped.std(ddof=1) / np.sqrt(grouped.count())
        out = mean.join(
            se.add_suffix("_se_seeds")[["test_elbo_se_seeds", "test_iw_log_likelihood_se_seeds"]]
        )
        out.insert(0, "seeds", grouped.size())
        return out

    def to_inference_data(self) -> arviz.InferenceData:
        """An ArviZ ``InferenceData`` with groups ``points`` (dims method, seed, point), ``curves``
        (method, seed, epoch), ``summary`` (method, seed; ``kl_per_dim`` on latent) and the settings
        as attributes. Runs with fewer test points or epochs are padded with NaN."""
        from ..diagnostics.psis import arviz as _arviz

        az = _arviz()
        import xarray as xr

        def to_ds(frame: pd.DataFrame, dims: list[str]) -> xr.Dataset:
            numeric = frame[
                dims
                + [
                    c
                    for c in frame.columns
                    if c not in dims and pd.api.types.is_numeric_dtype(frame[c])
                ]
            ]
            ds = xr.Dataset.from_dataframe(numeric.set_index(dims))
            # keep the run order: from_dataframe sorts, and .sel/.reindex on its pandas-3 string
            # index returned the sorted order here (xarray 2026.9), so select by position
            order = {
                dim: [list(ds[dim].values).index(v) for v in values]
                for dim, values in (("method", self.methods), ("seed", self.seeds))
            }
            return ds.isel(order)

        points = to_ds(self.points, ["method", "seed", "point"])
        curves = to_ds(self.curves, ["method", "seed", "epoch"])
        summary = to_ds(self.table, ["method", "seed"])
        if self.kl_per_dim:
            width = max(len(v) for v in self.kl_per_dim.values())
            arr = np.full((len(summary["method"]), len(summary["seed"]), width), np.nan)
            methods = list(summary["method"].values)
            seeds = list(summary["seed"].values)
            for (m, s), v in self.kl_per_dim.items():
                arr[methods.index(m), seeds.index(s), : len(v)] = v
            summary["kl_per_dim"] = (("method", "seed", "latent"), arr)
            summary = summary.assign_coords(latent=np.arange(width))
        attrs = {
            "settings": json.dumps(self.settings, default=str),
            "reference": self.reference,
            "fingerprints": json.dumps(
                {f"{m}|{s}": fp for (m, s), fp in self.fingerprints.items()}, default=str
            ),
            "units": "nats per data point",
        }
        return az.InferenceData(attrs=attrs, points=points, curves=curves, summary=summary)

    def ranking(self, metric: str | None = None) -> pd.DataFrame:
        """Models ranked by held-out log p(x), paired differences to the best and k-hat flags
        (:func:`~ppl_vae.analysis.ranking.rank_models`; names from ``models=`` when given)."""
        from .ranking import rank_models

        return rank_models(self.points, (self.settings or {}).get("model_names"), metric)

    def plot(self) -> Figure:
        """Training curves (test ELBO per epoch) and per-method IW log p(x) with error bars."""
        return plot_comparison(self)

    def save(self, directory: str | Path) -> dict[str, Path]:
        """Commit ``comparison.csv``, ``paired.csv``, ``comparison.nc`` and ``comparison.png`` as one set,
        ``DIRECTORY/comparison/`` (replacing the previous comparison there as one unit; the manifest
        records the methods, seeds, epochs, K and evaluation seed); returns the paths. Takes
        ``directory``'s writer lock."""
        import io

        from ..store.files import netcdf_bytes
        from ..store.lock import lock_folder
        from ..store.outputs import commit_output_set

        png = io.BytesIO()
        self.plot().savefig(png, format="png", dpi=110)
        files = {
            "comparison.csv": self.table.to_csv(index=False).encode(),
            "paired.csv": self.paired().to_csv(index=False).encode(),
            "ranking.csv": self.ranking().to_csv(index=False).encode(),
            "comparison.nc": netcdf_bytes(self.to_inference_data()),
            "comparison.png": png.getvalue(),
        }
        settings = self.settings or {}
        record = {
            "command": "compare",
            "methods": list(self.methods),
            "seeds": list(self.seeds),
            "reference": self.reference,
            **{k: settings.get(k) for k in ("epochs", "num_samples", "eval_seed", "dataset")},
        }
        with lock_folder(directory) as out:
            folder = commit_output_set(out, COMPARISON, files, record)
        keys = ("table", "paired", "ranking", "netcdf", "plot")
        return {key: folder / name for key, name in zip(keys, files, strict=True)}


COMPARISON = "comparison"


# ----------------------------------------------------------------------------- plot


def method_label(method: str, width: int = 16) -> str:
    """A method's name broken after ``/``, ``,``, ``:`` and ``=`` into lines of about ``width`` characters, so that the
    labels of a grid of methods sit side by side without overlapping (``vae/iaf:n=2/`` ``iwae:k=5,``
    ``grad=dreg``)."""
    parts = [p for p in re.split(r"(?<=[/,:=])", method) if p]
    lines = [""]
    for part in parts:
        if lines[-1] and len(lines[-1]) + len(part) > width:
            lines.append("")
        lines[-1] += part
    return "\n".join(lines)


def plot_comparison(comparison: Comparison) -> Figure:
    """Left: test ELBO per epoch (mean over seeds, thin lines per seed). Right: test IW log p(x) per
    method, mean over seeds with error bars (SE across seeds; SE across points for one seed)."""
    from textwrap import fill as wrap_title

    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(11, 4.8), layout="constrained")
    ax_curve, ax_iw = fig.subplots(1, 2)
    colours = [f"C{i}" for i in range(10)]
    methods = comparison.methods
    for i, method in enumerate(methods):
        c = colours[i % 10]
        cur = comparison.curves[comparison.curves["method"] == method]
        for _, one in cur.groupby("seed"):
            ax_curve.plot(one["epoch"], one["test_elbo"], color=c, alpha=0.25, linewidth=0.8)
        mean = cur.groupby("epoch")["test_elbo"].mean()
        ax_curve.plot(mean.index, mean.to_numpy(), color=c, linewidth=2, label=method)
    ax_curve.set_xlabel("epoch")
    ax_curve.set_ylabel("test ELBO (nats per point, closed-form KL)")
    ax_curve.set_title(wrap_title("Training curves (thin: seeds; thick: mean)", 44), fontsize=10)
    ax_curve.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_curve.legend(  # below the axes, clear of the curves
        fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=min(3, len(methods))
    )

    table = comparison.table
    k = int(table["num_samples"].iloc[0])
    for i, method in enumerate(methods):
        rows = table[table["method"] == method]
        vals = rows["test_iw_log_likelihood"].to_numpy()
        se = (
            vals.std(ddof=1) / math.sqrt(len(vals))
            if len(vals) > 1
            else float(rows["test_iw_se"].iloc[0])
        )
        ax_iw.errorbar(
            [i], [vals.mean()], yerr=[se], fmt="o", color=colours[i % 10], capsize=5, markersize=7
        )
        ax_iw.scatter(np.full(len(vals), i) + 0.12, vals, color=colours[i % 10], s=12, alpha=0.6)
    # about 12 characters per inch at 8 pt over the panel's ~4 inches, shared by the methods
    width = max(8, int(12 * 4.0 / max(1, len(methods))))
    ax_iw.set_xticks(
        range(len(methods)),
        [method_label(m, width) for m in methods],
        fontsize=8 if len(methods) <= 4 else 7,
        rotation=0 if len(methods) <= 8 else 90,
    )
    ax_iw.set_xlim(-0.6, len(methods) - 0.4)
    ax_iw.set_ylabel(f"test IW log p(x), K={k} (nats per point)")
    which = "SE across seeds" if len(comparison.seeds) > 1 else "SE across points"
    ax_iw.set_title(
        wrap_title(f"IW log-likelihood per method (mean ± {which}; dots: seeds)", 44), fontsize=10
    )
    return fig
