r"""Paired differences between inference methods evaluated on the same test points.

Because all methods of a seed are evaluated on the same test points, the difference
``method - reference`` is taken per point, which removes the point-to-point variation (most of the
variance). For each seed: the mean difference and its standard error across points; over seeds: the
mean of the per-seed means and its standard error across seeds (sd / sqrt(S)), which also carries the
training randomness. Runs whose data differ (name, seed, split sizes, binarisation, or the test tensor
itself) are never paired: :class:`DataMismatch` is raised.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..data import Dataset

__all__ = [
    "PAIRED_METRICS",
    "DataMismatch",
    "check_same_data",
    "data_fingerprint",
    "paired_differences",
]

#: Per-point columns compared by :func:`paired_differences` (``ais_log_likelihood`` too when present).
PAIRED_METRICS = ("iw_log_likelihood", "elbo")

#: Data-meta fields that must agree before two runs are paired.
_META_KEYS = (
    "name",
    "seed",
    "n_train",
    "n_test",
    "binarize",
    "test_fraction",
    "standardize",
    "n_samples",
    "noise",
    "input_dim",
)


class DataMismatch(ValueError):
    """Two runs to be paired were trained or evaluated on different data."""


def data_fingerprint(data: Dataset) -> dict[str, Any]:
    """What identifies a data split: the metadata that define it plus hashes of the tensors."""
    meta = data.meta.to_dict()
    fp = {k: meta.get(k) for k in _META_KEYS}

    def digest(t: torch.Tensor) -> str:
        return hashlib.sha1(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]

    fp["train_sha1"] = digest(data.train)
    fp["test_sha1"] = digest(data.test)
    return fp


def check_same_data(a: dict[str, Any], b: dict[str, Any], what: str) -> None:
    diff = {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
    if diff:
        shown = "; ".join(f"{k}: {x!r} vs {y!r}" for k, (x, y) in diff.items())
        raise DataMismatch(
            f"refusing to pair {what}: they were trained/evaluated on different data ({shown}). "
            "Compare runs on the same dataset, seed, split and binarisation"
        )


def paired_differences(
    points: pd.DataFrame,
    reference: str,
    metrics: Sequence[str] = PAIRED_METRICS,
    fingerprints: dict[tuple[str, int], dict[str, Any]] | None = None,
) -> pd.DataFrame:
    """Per-point differences ``method - reference`` of ``metrics``, summarised per seed and over seeds.

    Args:
        points: long table with ``method, seed, point`` and the metric columns (nats per point).
        reference: the method subtracted.
        metrics: per-point columns to compare (default: IW log p(x) and ELBO).
        fingerprints: ``{(method, seed): data fingerprint}``; runs of one seed whose
            fingerprints differ are refused (:class:`DataMismatch`).

    Returns:
        One row per (method, metric, seed) with ``level="seed"``: ``mean_diff``, ``se_points``
        (sd of the per-point differences / sqrt(n)), ``n_points``, ``share_better`` (share of points
        where the method is higher); and one per (method, metric) with ``level="all"``:
        ``mean_diff`` = mean of the per-seed means, ``se_seeds`` = their sd / sqrt(S) (NaN for one
        seed), ``se_points`` = sqrt(sum of squared per-seed se_points) / S, ``z`` = mean_diff / se
        (se_seeds when S > 1, else se_points).

    Examples:
        >>> import ppl_vae as pv
        >>> data = pv.load_dataset("two_moons", n_samples=200, seed=0)
        >>> result = pv.run_comparison(["analytic", "trace"], data, seeds=[0], epochs=1,
        ...                            num_samples=100, latent_dim=2, hidden_dims=(8,))
        >>> paired = pv.paired_differences(result.points, reference="analytic")
        >>> sorted(set(paired["method"]))
        ['trace']
    """
    methods = list(dict.fromkeys(points["method"]))
    if reference not in methods:
        raise ValueError(
            f"reference method {reference!r} is not among the compared methods {methods}"
        )
    missing = [m for m in metrics if m not in points.columns]
    if missing:
        raise ValueError(
            f"unknown metric(s) {missing}; per-point columns are {list(points.columns)}"
        )
    rows: list[dict[str, Any]] = []
    ref = points[points["method"] == reference].set_index(["seed", "point"])
    for method in methods:
        if method == reference:
            continue
        other = points[points["method"] == method].set_index(["seed", "point"])
        seeds = sorted(set(other.index.get_level_values(0)) & set(ref.index.get_level_values(0)))
        for seed in seeds:
            _check_pairable(other, ref, method, reference, seed, fingerprints)
        for metric in metrics:
            seed_rows = [_seed_row(other, ref, method, reference, metric, seed) for seed in seeds]
            rows += [*seed_rows, _all_row(seed_rows, method, reference, metric)]
    out = pd.DataFrame(
        rows,
        columns=[
            "method",
            "reference",
            "metric",
            "level",
            "seed",
            "n_points",
            "n_seeds",
            "mean_diff",
            "se_points",
            "se_seeds",
            "z",
            "share_better",
        ],
    )
    out["seed"] = out["seed"].astype("Int64")
    return out


def _check_pairable(
    other: pd.DataFrame,
    ref: pd.DataFrame,
    method: str,
    reference: str,
    seed: int,
    fingerprints: dict[tuple[str, int], dict[str, Any]] | None,
) -> None:
    """Refuse to pair two runs of a seed trained on different data or evaluated on different points."""
    if fingerprints is not None:
        check_same_data(
            fingerprints[(method, seed)],
            fingerprints[(reference, seed)],
            f"{method!r} and {reference!r} for seed {seed}",
        )
    a, b = other.loc[seed], ref.loc[seed]
    if len(a) != len(b) or not a.index.equals(b.index):
        raise DataMismatch(
            f"refusing to pair {method!r} and {reference!r} for seed {seed}: they were evaluated "
            f"on different test points ({len(a)} vs {len(b)})"
        )


def _seed_row(
    other: pd.DataFrame, ref: pd.DataFrame, method: str, reference: str, metric: str, seed: int
) -> dict[str, Any]:
    """One seed's paired differences of one metric: mean, s.e. over points, share of points better."""
    d = (other.loc[seed][metric] - ref.loc[seed][metric]).to_numpy(dtype=float)
    n = int(np.isfinite(d).sum())
    d = d[np.isfinite(d)]
    mean = float(d.mean()) if n else math.nan
    se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return {
        "method": method,
        "reference": reference,
        "metric": metric,
        "level": "seed",
        "seed": seed,
        "n_points": n,
        "n_seeds": 1,
        "mean_diff": mean,
        "se_points": se,
        "se_seeds": math.nan,
        "z": mean / se if se and se > 0 else math.nan,
        "share_better": float(np.mean(d > 0)) if n else math.nan,
    }


def _all_row(
    seed_rows: list[dict[str, Any]], method: str, reference: str, metric: str
) -> dict[str, Any]:
    """Over seeds: the mean of the per-seed means, its s.e. across seeds and the pooled s.e. over points."""
    means = np.array([r["mean_diff"] for r in seed_rows])
    ses = np.array([r["se_points"] for r in seed_rows])
    s_count = len(means)
    mean_all = float(means.mean()) if s_count else math.nan
    se_seeds = float(means.std(ddof=1) / math.sqrt(s_count)) if s_count > 1 else math.nan
    se_points = float(math.sqrt(np.nansum(ses**2)) / s_count) if s_count else math.nan
    se_z = se_seeds if s_count > 1 else se_points
    return {
        "method": method,
        "reference": reference,
        "metric": metric,
        "level": "all",
        "seed": pd.NA,
        "n_points": int(sum(r["n_points"] for r in seed_rows)),
        "n_seeds": s_count,
        "mean_diff": mean_all,
        "se_points": se_points,
        "se_seeds": se_seeds,
        "z": mean_all / se_z if se_z and se_z > 0 else math.nan,
        "share_better": math.nan,
    }
