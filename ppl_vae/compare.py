r"""Compare inference methods: methods x seeds -> one tidy table, paired differences, an ArviZ data set.

For every seed the data are loaded once (same split, same binarisation for every method)
and every method starts from the **same initial weights**; each model is trained with
:func:`ppl_vae.fit` and evaluated on the test split with the **same estimator settings**
(:func:`ppl_vae.diagnostics.evaluate`: K importance samples, one evaluation seed). Per run the
table reports

* ``test_elbo``: mean over test points of the ELBO estimated from the same K draws
  (:math:`\frac{1}{K}\sum_k \log w_k`), nats per point;
* ``test_iw_log_likelihood``: mean of :math:`\log\frac{1}{K}\sum_k w_k` (Burda et al., 2015);
  ``gap`` = IW - ELBO >= 0 per point (Jensen), a lower bound on KL(q(z|x) || p(z|x));
* ``khat_share_above_0.7``: share of test points whose PSIS :math:`\hat k` > 0.7 (their IW
  estimate is unreliable);
* ``active_units`` (:math:`\mathrm{Var}_x \mathbb{E}_q[z_j] > 0.01`), ``kl_per_dim_mean`` (mean
  closed-form KL per latent unit), ``reconstruction_error`` (BCE in nats for a Bernoulli
  likelihood, else MSE per coordinate);
* ``train_seconds`` (the training loops, without per-epoch test evaluation),
  ``seconds_per_epoch``, ``fit_seconds`` (wall time of ``fit``).

**Paired differences.** Because all methods of a seed are evaluated on the same test
points, the difference ``method - reference`` is taken per point, which removes the
point-to-point variation (most of the variance). For each seed: the mean difference and its
standard error across points; over seeds: the mean of the per-seed means and its standard
error across seeds (sd / sqrt(S)), which also carries the training randomness. Runs whose
data differ (name, seed, split sizes, binarisation, or the test tensor itself) are never
paired: :class:`DataMismatch` is raised.

Results save to ``comparison.csv``, ``paired.csv``, ``comparison.nc`` (ArviZ
``InferenceData`` with per-point values, training curves and the summary on dims
``method, seed, point|epoch``) and ``comparison.png``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from .data import Dataset, load_dataset
from .diagnostics import evaluate
from .models import VAE
from .objectives import parse_objective
from .train import fit, resolve_device

if TYPE_CHECKING:
    import arviz
    from matplotlib.figure import Figure

__all__ = ["Comparison", "DataMismatch", "compare", "compare_runs", "paired_differences", "run_comparison"]

#: Columns of :attr:`Comparison.table`, in order.
TABLE_COLUMNS = [
    "method", "seed", "epochs", "test_elbo", "test_elbo_se", "test_iw_log_likelihood", "test_iw_se",
    "gap", "khat_share_above_0.7", "active_units", "latent_dim", "kl_mean", "kl_per_dim_mean",
    "reconstruction_error", "reconstruction_mse", "final_train_elbo", "train_seconds",
    "seconds_per_epoch", "fit_seconds", "num_samples", "n_test",
]

#: Per-point columns compared by :func:`paired_differences`.
PAIRED_METRICS = ("iw_log_likelihood", "elbo")

#: Data-meta fields that must agree before two runs are paired.
_META_KEYS = ("name", "seed", "n_train", "n_test", "binarize", "test_fraction", "standardize", "n_samples",
              "noise", "input_dim")


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


def _check_same_data(a: dict[str, Any], b: dict[str, Any], what: str) -> None:
    diff = {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
    if diff:
        shown = "; ".join(f"{k}: {x!r} vs {y!r}" for k, (x, y) in diff.items())
        raise DataMismatch(
            f"refusing to pair {what}: they were trained/evaluated on different data ({shown}). "
            "Compare runs on the same dataset, seed, split and binarisation"
        )


def _params_digest(module: torch.nn.Module) -> str:
    h = hashlib.sha1()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- the result object


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
    """

    table: pd.DataFrame
    points: pd.DataFrame
    curves: pd.DataFrame
    settings: dict[str, Any]
    fingerprints: dict[tuple[str, int], dict[str, Any]]
    kl_per_dim: dict[tuple[str, int], list[float]]
    reference: str
    models: dict[tuple[str, int], Any] = field(default_factory=dict, repr=False)

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(self.table["method"]))

    @property
    def seeds(self) -> list[int]:
        return [int(s) for s in dict.fromkeys(self.table["seed"])]

    def paired(self, reference: str | None = None, metrics: Sequence[str] = PAIRED_METRICS) -> pd.DataFrame:
        """Paired differences against ``reference`` (default :attr:`reference`); see :func:`paired_differences`."""
        return paired_differences(self.points, reference or self.reference, metrics, self.fingerprints)

    def summary(self) -> pd.DataFrame:
        """Per method: mean over seeds of the table's main columns, with the standard error across seeds."""
        cols = ["test_elbo", "test_iw_log_likelihood", "gap", "khat_share_above_0.7", "active_units",
                "kl_per_dim_mean", "reconstruction_error", "seconds_per_epoch"]
        grouped = self.table.groupby("method", sort=False)[cols]
        mean = grouped.mean()
        se = grouped.std(ddof=1) / np.sqrt(grouped.count())
        out = mean.join(se.add_suffix("_se_seeds")[["test_elbo_se_seeds", "test_iw_log_likelihood_se_seeds"]])
        out.insert(0, "seeds", grouped.size())
        return out

    def to_inference_data(self) -> arviz.InferenceData:
        """An ArviZ ``InferenceData`` with groups ``points`` (dims method, seed, point), ``curves``
        (method, seed, epoch), ``summary`` (method, seed; ``kl_per_dim`` on latent) and the settings
        as attributes. Runs with fewer test points or epochs are padded with NaN."""
        from .diagnostics.psis import arviz as _arviz

        az = _arviz()
        import xarray as xr

        def to_ds(frame: pd.DataFrame, dims: list[str]) -> xr.Dataset:
            numeric = frame[dims + [c for c in frame.columns if c not in dims
                                    and pd.api.types.is_numeric_dtype(frame[c])]]
            ds = xr.Dataset.from_dataframe(numeric.set_index(dims))
            # keep the run order: from_dataframe sorts, and .sel/.reindex on its pandas-3 string
            # index returned the sorted order here (xarray 2026.9), so select by position
            order = {dim: [list(ds[dim].values).index(v) for v in values]
                     for dim, values in (("method", self.methods), ("seed", self.seeds))}
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
        attrs = {"settings": json.dumps(self.settings, default=str), "reference": self.reference,
                 "fingerprints": json.dumps({f"{m}|{s}": fp for (m, s), fp in self.fingerprints.items()},
                                            default=str),
                 "units": "nats per data point"}
        return az.InferenceData(attrs=attrs, points=points, curves=curves, summary=summary)

    def plot(self) -> Figure:
        """Training curves (test ELBO per epoch) and per-method IW log p(x) with error bars."""
        return plot_comparison(self)

    def save(self, directory: str | Path) -> dict[str, Path]:
        """Write ``comparison.csv``, ``paired.csv``, ``comparison.nc`` and ``comparison.png``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"table": out / "comparison.csv", "paired": out / "paired.csv",
                 "netcdf": out / "comparison.nc", "plot": out / "comparison.png"}
        self.table.to_csv(paths["table"], index=False)
        self.paired().to_csv(paths["paired"], index=False)
        self.to_inference_data().to_netcdf(str(paths["netcdf"]), engine="h5netcdf")
        self.plot().savefig(paths["plot"], dpi=110)
        return paths


# ----------------------------------------------------------------------------- paired differences


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
    """
    methods = list(dict.fromkeys(points["method"]))
    if reference not in methods:
        raise ValueError(f"reference method {reference!r} is not among the compared methods {methods}")
    missing = [m for m in metrics if m not in points.columns]
    if missing:
        raise ValueError(f"unknown metric(s) {missing}; per-point columns are {list(points.columns)}")
    rows: list[dict[str, Any]] = []
    ref = points[points["method"] == reference].set_index(["seed", "point"])
    for method in methods:
        if method == reference:
            continue
        other = points[points["method"] == method].set_index(["seed", "point"])
        seeds = sorted(set(other.index.get_level_values(0)) & set(ref.index.get_level_values(0)))
        for seed in seeds:
            if fingerprints is not None:
                _check_same_data(fingerprints[(method, seed)], fingerprints[(reference, seed)],
                                 f"{method!r} and {reference!r} for seed {seed}")
            a, b = other.loc[seed], ref.loc[seed]
            if len(a) != len(b) or not a.index.equals(b.index):
                raise DataMismatch(
                    f"refusing to pair {method!r} and {reference!r} for seed {seed}: they were evaluated "
                    f"on different test points ({len(a)} vs {len(b)})"
                )
        for metric in metrics:
            per_seed = []
            for seed in seeds:
                d = (other.loc[seed][metric] - ref.loc[seed][metric]).to_numpy(dtype=float)
                n = int(np.isfinite(d).sum())
                d = d[np.isfinite(d)]
                mean = float(d.mean()) if n else math.nan
                se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
                per_seed.append((mean, se))
                rows.append({"method": method, "reference": reference, "metric": metric, "level": "seed",
                             "seed": seed, "n_points": n, "n_seeds": 1, "mean_diff": mean, "se_points": se,
                             "se_seeds": math.nan, "z": mean / se if se and se > 0 else math.nan,
                             "share_better": float(np.mean(d > 0)) if n else math.nan})
            means = np.array([m for m, _ in per_seed])
            ses = np.array([s for _, s in per_seed])
            s_count = len(means)
            mean_all = float(means.mean()) if s_count else math.nan
            se_seeds = float(means.std(ddof=1) / math.sqrt(s_count)) if s_count > 1 else math.nan
            se_points = float(math.sqrt(np.nansum(ses**2)) / s_count) if s_count else math.nan
            se_z = se_seeds if s_count > 1 else se_points
            rows.append({"method": method, "reference": reference, "metric": metric, "level": "all",
                         "seed": pd.NA, "n_points": int(sum(r["n_points"] for r in rows[-s_count:])) if s_count else 0,
                         "n_seeds": s_count, "mean_diff": mean_all, "se_points": se_points,
                         "se_seeds": se_seeds, "z": mean_all / se_z if se_z and se_z > 0 else math.nan,
                         "share_better": math.nan})
    out = pd.DataFrame(rows, columns=["method", "reference", "metric", "level", "seed", "n_points", "n_seeds",
                                      "mean_diff", "se_points", "se_seeds", "z", "share_better"])
    out["seed"] = out["seed"].astype("Int64")
    return out


# ----------------------------------------------------------------------------- running


def _check_methods(methods: Sequence[str]) -> list[str]:
    if isinstance(methods, str) or not isinstance(methods, Sequence) or not methods:
        raise ValueError(f"methods must be a non-empty list of objective strings such as ['trace', 'iwae:k=5']; "
                         f"got {methods!r}")
    labels = []
    for m in methods:
        if not isinstance(m, str):
            raise ValueError(f"methods must be objective strings such as 'iwae:k=5'; got {m!r}")
        labels.append(m.strip())
    specs = [parse_objective(m).spec for m in labels]  # raises, listing the valid objectives
    dup = sorted({m for m, s in zip(labels, specs, strict=True) if specs.count(s) > 1})
    if dup:
        raise ValueError(f"methods name the same objective more than once: {dup}")
    return labels


def _check_seeds(seeds: Sequence[int]) -> list[int]:
    if isinstance(seeds, int):
        seeds = [seeds]
    seeds = list(seeds)
    if not seeds or any(not isinstance(s, (int, np.integer)) or isinstance(s, bool) or s < 0 for s in seeds):
        raise ValueError(f"seeds must be a non-empty list of non-negative integers; got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct; got {seeds!r}")
    return [int(s) for s in seeds]


def _run_row(method: str, seed: int, history: list[dict], report: Any, fit_seconds: float,
             likelihood: str) -> dict[str, Any]:
    s = report.summary
    train_seconds = float(sum(r["seconds"] for r in history))
    d = s.get("latent_dim")
    recon = s.get("reconstruction_nll") if likelihood == "bernoulli" else s.get("reconstruction_mse")
    return {
        "method": method, "seed": seed, "epochs": len(history),
        "test_elbo": s["elbo_mean"], "test_elbo_se": s["elbo_se"],
        "test_iw_log_likelihood": s["iw_mean"], "test_iw_se": s["iw_se"],
        "gap": s["gap_mean"], "khat_share_above_0.7": s["khat_share_above_0.7"],
        "active_units": s.get("active_units"), "latent_dim": d,
        "kl_mean": s.get("kl_mean"),
        "kl_per_dim_mean": float(np.mean(s["kl_per_dim"])) if s.get("kl_per_dim") else math.nan,
        "reconstruction_error": recon, "reconstruction_mse": s.get("reconstruction_mse"),
        "final_train_elbo": history[-1]["train_elbo"] if history else math.nan,
        "train_seconds": train_seconds,
        "seconds_per_epoch": train_seconds / len(history) if history else math.nan,
        "fit_seconds": fit_seconds, "num_samples": s["num_samples"], "n_test": s["n"],
    }


def _assemble(rows: list[dict], points: list[pd.DataFrame], curves: list[pd.DataFrame], settings: dict,
              fingerprints: dict, kl: dict, reference: str | None, models: dict) -> Comparison:
    table = pd.DataFrame(rows)[TABLE_COLUMNS]
    methods = list(dict.fromkeys(table["method"]))
    reference = methods[0] if reference is None else reference
    if reference not in methods:
        raise ValueError(f"reference={reference!r} is not among the methods {methods}")
    return Comparison(table=table, points=pd.concat(points, ignore_index=True),
                      curves=pd.concat(curves, ignore_index=True), settings=settings,
                      fingerprints=fingerprints, kl_per_dim=kl, reference=reference, models=models)


def _evaluate_into(vae: Any, test_x: torch.Tensor, method: str, seed: int, num_samples: int, eval_seed: int,
                   points: list[pd.DataFrame]) -> Any:
    dev = next(vae.parameters()).device
    with warnings.catch_warnings():  # the small-K k-hat warning is given once, by _warn_small_k
        warnings.filterwarnings("ignore", message=".*k-hat from .*", category=UserWarning)
        report = evaluate(vae, test_x.to(dev), num_samples, seed=eval_seed, keep_log_weights=False,
                          name=f"{method} seed {seed}")
    pts = report.points.copy()
    pts.insert(0, "point", np.arange(len(pts)))
    pts.insert(0, "seed", seed)
    pts.insert(0, "method", method)
    points.append(pts)
    return report


def _warn_small_k(num_samples: int) -> None:
    if num_samples < 100:
        warnings.warn(f"num_samples={num_samples}: PSIS k-hat (khat_share_above_0.7) is unreliable below 100 "
                      "importance samples per point", UserWarning, stacklevel=3)


def _curves(method: str, seed: int, history: list[dict]) -> pd.DataFrame:
    columns = ("epoch", "step", "train_elbo", "test_elbo", "seconds", "kl_weight")
    frame = pd.DataFrame(list(history), columns=None if history else list(columns))
    keep = [c for c in columns if c in frame.columns]
    frame = frame[keep].astype(float).astype({"epoch": int})
    frame.insert(0, "seed", seed)
    frame.insert(0, "method", method)
    return frame


def run_comparison(
    methods: Sequence[str],
    dataset: str = "digits",
    seeds: Sequence[int] = (0,),
    epochs: int = 20,
    *,
    num_samples: int = 1000,
    eval_seed: int = 0,
    reference: str | None = None,
    latent_dim: int = 8,
    hidden_dims: Sequence[int] = (256,),
    likelihood: str = "auto",
    activation: str = "relu",
    binarize: str | None = "auto",
    batch_size: int = 128,
    lr: float = 1e-3,
    n_samples: int | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    progress: bool = False,
    keep_models: bool = False,
    callback: Any = None,
) -> Comparison:
    """Train every method for every seed on the same split and initialisation; evaluate all alike.

    Args:
        methods: objective strings (``"trace"``, ``"analytic"``, ``"iwae:k=5"``, ...; see
            :mod:`ppl_vae.objectives`).
        dataset: a name for :func:`ppl_vae.load_dataset` (``"digits"``, ``"mnist"``, ...).
        seeds: each seed fixes the split, binarisation, initial weights and SVI randomness of
            its runs; every method of a seed shares them.
        epochs: epochs per run.
        num_samples: K importance samples per test point for every evaluation (>= 2).
        eval_seed: the random stream of every evaluation.
        reference: method for paired differences (default: the first).
        latent_dim, hidden_dims, likelihood, activation, binarize, batch_size, lr, n_samples, data_dir, device:
            model, data and training settings (as in :func:`ppl_vae.runs.train_run`).
        progress: show training progress bars.
        keep_models: keep the trained models on the result (``.models``).
        callback: called with each finished row (a dict).

    Returns:
        :class:`Comparison` (``.table``, ``.paired()``, ``.points``, ``.curves``, ``.save(dir)``).
    """
    from .runs import default_likelihood, resolve_binarize

    specs = _check_methods(methods)
    seeds = _check_seeds(seeds)
    if reference is not None:
        canonical = {parse_objective(m).spec: m for m in specs}
        ref_spec = parse_objective(reference).spec
        if ref_spec not in canonical:
            raise ValueError(f"reference={reference!r} is not among the methods {specs}")
        reference = canonical[ref_spec]
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 2:
        raise ValueError(f"num_samples must be an integer >= 2 (K importance samples per test point); "
                         f"got {num_samples!r}")
    _warn_small_k(num_samples)
    lik = default_likelihood(dataset) if likelihood == "auto" else likelihood
    binarize = resolve_binarize(binarize, lik.partition(":")[0])
    dev = resolve_device(device)
    settings = {"methods": specs, "dataset": dataset, "seeds": seeds, "epochs": epochs,
                "num_samples": num_samples, "eval_seed": eval_seed, "latent_dim": latent_dim,
                "hidden_dims": list(hidden_dims), "likelihood": lik, "activation": activation, "binarize": binarize,
                "batch_size": batch_size, "lr": lr, "n_samples": n_samples, "device": str(dev),
                "init": {}}
    rows: list[dict] = []
    points: list[pd.DataFrame] = []
    curves: list[pd.DataFrame] = []
    fingerprints: dict[tuple[str, int], dict] = {}
    kl: dict[tuple[str, int], list[float]] = {}
    models: dict[tuple[str, int], Any] = {}
    for seed in seeds:
        data = load_dataset(dataset, binarize=binarize, seed=seed, data_dir=data_dir, n_samples=n_samples)
        fp = data_fingerprint(data)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            template = VAE(data.meta.input_dim, latent_dim, tuple(hidden_dims), likelihood=lik,
                           activation=activation)
        init_state = copy.deepcopy(template.state_dict())
        settings["init"][str(seed)] = _params_digest(template)
        for method in specs:
            vae = VAE(data.meta.input_dim, latent_dim, tuple(hidden_dims), likelihood=lik, activation=activation)
            vae.load_state_dict(init_state)
            t0 = time.perf_counter()
            history = fit(vae, data, method, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                          device=dev, progress=progress)
            fit_seconds = time.perf_counter() - t0
            report = _evaluate_into(vae, data.test, method, seed, num_samples, eval_seed, points)
            row = _run_row(method, seed, list(history), report, fit_seconds, lik.partition(":")[0])
            rows.append(row)
            curves.append(_curves(method, seed, history))
            fingerprints[(method, seed)] = fp
            kl[(method, seed)] = list(report.summary.get("kl_per_dim") or [])
            if keep_models:
                models[(method, seed)] = vae
            if callback is not None:
                callback(row)
    return _assemble(rows, points, curves, settings, fingerprints, kl, reference, models)


def compare(
    methods: Sequence[str],
    dataset: str = "digits",
    seeds: Sequence[int] = (0,),
    epochs: int = 20,
    **kwargs: Any,
) -> pd.DataFrame:
    """The per-run table of :func:`run_comparison` (one row per method and seed).

    ``pv.compare(["trace", "analytic", "iwae:k=5"], "digits", seeds=[0, 1, 2], epochs=50)``;
    keyword arguments as in :func:`run_comparison`. Use :func:`run_comparison` for the paired
    differences, per-point values, curves and saving.
    """
    return run_comparison(methods, dataset, seeds, epochs, **kwargs).table


def compare_runs(
    runs: Sequence[Any],
    *,
    num_samples: int = 1000,
    eval_seed: int = 0,
    reference: str | None = None,
) -> Comparison:
    """Evaluate already-trained runs (run folders or :class:`ppl_vae.runs.Run`) with the same settings.

    Runs are keyed by (objective, seed). Runs of the same seed must share their data exactly
    (same dataset, split sizes, binarisation and tensors), else :class:`DataMismatch`: a
    paired comparison of different test sets would be meaningless.
    """
    from .runs import Run, load_run

    if not runs:
        raise ValueError("compare_runs needs at least one run (a run folder or a Run)")
    _warn_small_k(num_samples)
    loaded = [r if isinstance(r, Run) else load_run(r) for r in runs]
    rows: list[dict] = []
    points: list[pd.DataFrame] = []
    curves: list[pd.DataFrame] = []
    fingerprints: dict[tuple[str, int], dict] = {}
    kl: dict[tuple[str, int], list[float]] = {}
    by_seed: dict[int, tuple[str, dict]] = {}
    for run in loaded:
        if run.data is None:
            raise ValueError(f"run {run.path} was loaded without its data (load_data=False)")
        method = parse_objective(str(run.config.get("objective", "analytic"))).spec
        seed = int(run.config.get("seed", run.data.meta.seed))
        if (method, seed) in fingerprints:
            raise ValueError(f"two runs have the same objective {method!r} and seed {seed}: "
                             f"{run.path} and an earlier one")
        fp = data_fingerprint(run.data)
        if seed in by_seed:
            _check_same_data(by_seed[seed][1], fp, f"run {run.path or method!r} and run {by_seed[seed][0]!r}")
        else:
            by_seed[seed] = (str(run.path or method), fp)
        history = list(run.history)
        report = _evaluate_into(run.model, run.data.test, method, seed, num_samples, eval_seed, points)
        lik = run.model.likelihood.name if hasattr(run.model, "likelihood") else ""
        rows.append(_run_row(method, seed, history, report, math.nan, lik))
        curves.append(_curves(method, seed, history))
        fingerprints[(method, seed)] = fp
        kl[(method, seed)] = list(report.summary.get("kl_per_dim") or [])
    settings = {"runs": [str(r.path) for r in loaded], "num_samples": num_samples, "eval_seed": eval_seed}
    if reference is not None:
        reference = parse_objective(reference).spec
    return _assemble(rows, points, curves, settings, fingerprints, kl, reference, {})


# ----------------------------------------------------------------------------- plot


def plot_comparison(comparison: Comparison) -> Figure:
    """Left: test ELBO per epoch (mean over seeds, thin lines per seed). Right: test IW log p(x) per
    method, mean over seeds with error bars (SE across seeds; SE across points for one seed)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), layout="constrained")
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
    ax_curve.set_title("Training curves (thin: seeds; thick: mean)", fontsize=10)
    ax_curve.legend(fontsize=8)

    table = comparison.table
    k = int(table["num_samples"].iloc[0])
    for i, method in enumerate(methods):
        rows = table[table["method"] == method]
        vals = rows["test_iw_log_likelihood"].to_numpy()
        se = vals.std(ddof=1) / math.sqrt(len(vals)) if len(vals) > 1 else float(rows["test_iw_se"].iloc[0])
        ax_iw.errorbar([i], [vals.mean()], yerr=[se], fmt="o", color=colours[i % 10], capsize=5, markersize=7)
        ax_iw.scatter(np.full(len(vals), i) + 0.12, vals, color=colours[i % 10], s=12, alpha=0.6)
    ax_iw.set_xticks(range(len(methods)), methods, rotation=20)
    ax_iw.set_xlim(-0.6, len(methods) - 0.4)
    ax_iw.set_ylabel(f"test IW log p(x), K={k} (nats per point)")
    which = "SE across seeds" if len(comparison.seeds) > 1 else "SE across points"
    ax_iw.set_title(f"IW log-likelihood per method (mean ± {which}; dots: seeds)", fontsize=10)
    return fig
