r"""``evaluate``: the ELBO beside importance-weighted log p(x), per data point, for any program.

Per point: the ELBO and ``IW_K`` from the same K draws (so ``gap = IW - ELBO >= 0``, a lower bound on
KL(q(z | x) || p(z | x))), PSIS k-hat and the ESS of the weights (:mod:`.psis`); per latent unit: the
KL from the prior where defined and whether the unit is active, and the reconstruction at the posterior
mean (:mod:`.collapse`). The :class:`Report` holds numbers only (a per-point DataFrame, a JSON-able
summary, the log weights); :mod:`ppl_vae.plots` draws them.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from ..errors import ArgumentTypeError, UserError
from ..estimators.ais import ais_log_likelihood, check_settings
from ..estimators.importance import check_fast, points_shard, prepare, resolve, scan
from ..estimators.masked import row_mask
from ..estimators.sharding import Shard
from ..store.files import dumps, netcdf_bytes
from .collapse import latent_summary
from .columns import column_shares, column_summary
from .psis import KHAT_BAD, KHAT_GOOD, PSISDiagnostics, arviz, psis_diagnostics

if TYPE_CHECKING:
    import arviz as az_module

__all__ = ["Report", "evaluate"]


def _mean_se(values: np.ndarray) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else float("nan")
    return float(values.mean()), se


@dataclass
class Report:
    """What :func:`evaluate` found: a per-point table, a JSON-able summary, and the log weights.

    Attributes:
        points: one row per data point: ``elbo``, ``iw_log_likelihood`` (then ``ais_log_likelihood`` with
            ``estimator="ais"``, and at the end ``ais_se``, ``ais_acceptance``, ``ais_ess``, ``ais_minus_iw``),
            ``gap`` (IW - ELBO),
            ``khat``, ``ess`` and, for a VAE, ``kl`` (closed form) and ``recon_mse``; nats per point.
        summary: means with standard errors, k-hat shares, ESS, active units, KL per dimension,
            reconstruction error, settings (see :func:`evaluate`).
        log_weights: ``(N, K)`` numpy array, or None when not kept.
    """

    points: pd.DataFrame
    summary: dict[str, Any]
    log_weights: np.ndarray | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return str(self.summary.get("name") or "evaluation")

    def summary_frame(self) -> pd.DataFrame:
        """The summary as a printable table: quantity, value, standard error, note."""
        s = self.summary
        k = s["num_samples"]
        rows = [
            (
                "ELBO",
                s["elbo_mean"],
                s["elbo_se"],
                f"nats/point, mean of log w over the same {k} draws",
            ),
            (f"IW log p(x), K={k}", s["iw_mean"], s["iw_se"], "nats/point (Burda et al. 2015)"),
            (
                "gap IW - ELBO",
                s["gap_mean"],
                s["gap_se"],
                "nats/point, lower bound on KL(q || posterior)",
            ),
            ("share k-hat > 0.5", s["khat_share_above_0.5"], None, "0.5-0.7: usable"),
            ("share k-hat > 0.7", s["khat_share_above_0.7"], None, "> 0.7: IW unreliable there"),
            ("median k-hat", s["khat_median"], None, ""),
            ("mean ESS", s["ess_mean"], None, f"of K={k} (1/sum w~^2)"),
        ]
        if s.get("missing_fraction"):
            rows.insert(
                0,
                (
                    "missing cells",
                    s["missing_fraction"],
                    None,
                    "share of cells; every value below is over the observed cells, log p(x_obs)",
                ),
            )
        if s.get("active_units") is not None:
            rows.append(
                (
                    "active units",
                    s["active_units"],
                    None,
                    f"of d={s['latent_dim']} (Var_x E[z_j] > 0.01)",
                )
            )
        if s.get("kl_per_dim") is not None:
            rows.append(
                (
                    "KL(q || p(z))",
                    s["kl_mean"],
                    s["kl_se"],
                    "nats/point; per dim: " + " ".join(f"{v:.2f}" for v in s["kl_per_dim"]),
                )
            )
        if s.get("reconstruction_nll") is not None:
            rows.append(
                (
                    "-log p(x | E_q z)",
                    s["reconstruction_nll"],
                    None,
                    "nats/point, decoding the posterior mean (BCE for Bernoulli pixels)",
                )
            )
        if s.get("reconstruction_mse") is not None:
            rows.append(
                (
                    "reconstruction MSE",
                    s["reconstruction_mse"],
                    None,
                    "per coordinate, posterior mean",
                )
            )
        if s.get("ais_mean") is not None:
            rows.insert(
                2,
                (
                    f"AIS log p(x), T={s['ais_steps']}",
                    s["ais_mean"],
                    s["ais_se"],
                    f"nats/point, {s['ais_chains']} chains from the {s['ais_init']}, L={s['ais_leapfrog']} "
                    "(Wu et al. 2017)",
                ),
            )
            rows.insert(
                3,
                (
                    "AIS - IW",
                    s["ais_minus_iw_mean"],
                    s["ais_minus_iw_se"],
                    "nats/point, paired over points; > 0 where IW falls short",
                ),
            )
            rows.append(
                (
                    "AIS acceptance",
                    s["ais_acceptance_mean"],
                    None,
                    "HMC, mean over steps and chains",
                )
            )
        if s.get("discrete_sites"):
            rows.append(
                (
                    "discrete latents",
                    ", ".join(s["discrete_sites"]),
                    None,
                    "sampled from q (the proposal), not summed",
                )
            )
        frame = pd.DataFrame(rows, columns=["quantity", "value", "se", "note"], dtype=object)
        return frame.set_index("quantity")

    def format_table(self) -> str:
        """:meth:`summary_frame` as aligned text (integers as integers, 4 decimals otherwise)."""

        def fmt(v: Any) -> str:
            if v is None or (isinstance(v, float) and math.isnan(v)):
                return ""
            return str(v) if isinstance(v, (int, np.integer, str)) else f"{v:.4f}"

        frame = self.summary_frame()
        width = max(len(q) for q in frame.index)
        lines = [f"{'quantity':<{width}}  {'value':>10}  {'se':>8}  note"]
        for q, row in frame.iterrows():
            lines.append(
                f"{q:<{width}}  {fmt(row['value']):>10}  {fmt(row['se']):>8}  {row['note']}"
            )
        return "\n".join(lines)

    def to_inference_data(self) -> az_module.InferenceData:
        """An ArviZ ``InferenceData``: group ``points`` (per-point values on dim ``point``), group
        ``importance`` (``log_weight`` on dims ``point, sample``, when kept), summary as attributes.
        Save with ``.to_netcdf(path)``."""
        az = arviz()
        import xarray as xr

        index = self.points.index  # positions, or the rows' labels where the caller set them
        point = np.arange(len(index)) if isinstance(index, pd.RangeIndex) else index.to_numpy()
        points = xr.Dataset(
            {c: ("point", self.points[c].to_numpy()) for c in self.points.columns},
            coords={"point": point},
        )
        attrs = {
            k: (
                json.dumps(v)
                if isinstance(v, (list, dict))
                else ("none" if v is None else str(v) if isinstance(v, bool) else v)
            )
            for k, v in self.summary.items()
        }
        groups = {"points": points}
        if self.log_weights is not None:
            groups["importance"] = xr.Dataset(
                {"log_weight": (("point", "sample"), self.log_weights)},
                coords={"point": point, "sample": np.arange(self.log_weights.shape[1])},
            )
        return az.InferenceData(attrs=attrs, **groups)

    def save(
        self,
        directory: str | Path,
        *,
        figures: Mapping[str, bytes] | None = None,
        record: Mapping[str, Any] | None = None,
    ) -> dict[str, Path]:
        """Commit the evaluation as one set, ``DIRECTORY/evaluation/``: ``evaluation.json`` (summary,
        strict JSON), ``evaluation.csv`` (per point), ``evaluation.nc`` (InferenceData) and ``figures``
        (name -> PNG bytes, e.g. :func:`ppl_vae.plots.report_figure_files`), replacing the previous
        evaluation there as one unit (:mod:`ppl_vae.store.outputs`); returns the paths.

        ``record`` (what produced it: the evaluated epoch and checkpoint set, ...) goes into the set's
        manifest beside K, the seed and the number of points. Takes ``directory``'s writer lock.
        """
        from ..store.lock import lock_folder
        from ..store.outputs import commit_output_set

        files = {
            "evaluation.json": dumps(self.summary).encode(),
            "evaluation.csv": self.points.to_csv(index_label="point").encode(),
            "evaluation.nc": netcdf_bytes(self.to_inference_data()),
            **dict(figures or {}),
        }
        s = self.summary
        produced = {
            "command": "evaluate",
            "name": self.name,
            **{k: s.get(k) for k in ("num_samples", "seed", "n", "estimator", "epoch")},
            **dict(record or {}),
        }
        with lock_folder(directory) as out:
            folder = commit_output_set(out, EVALUATION, files, produced)
        keys = {"evaluation.json": "json", "evaluation.csv": "csv", "evaluation.nc": "netcdf"}
        return {keys.get(name, Path(name).stem): folder / name for name in files}

    @classmethod
    def load(cls, directory: str | Path) -> Report:
        """The evaluation committed in ``DIRECTORY/evaluation`` (every file checked against its manifest).

        In a run folder whose checkpoint has moved past the evaluated epoch, the report is marked
        ``summary["stale"] = True`` and a warning says so (an evaluation taken mid-training).
        """
        import io

        import xarray as xr

        from ..store.outputs import read_output_set

        found = read_output_set(
            directory, EVALUATION, ["evaluation.json", "evaluation.csv", "evaluation.nc"]
        )
        summary = json.loads(found.files["evaluation.json"])
        points = pd.read_csv(io.BytesIO(found.files["evaluation.csv"]), index_col="point")
        tree = xr.open_datatree(io.BytesIO(found.files["evaluation.nc"]), engine="h5netcdf")
        importance = tree.children.get("importance")
        log_weights = None if importance is None else importance["log_weight"].to_numpy()
        report = cls(points, summary, log_weights)
        latest = _latest_epoch(Path(directory))
        if (
            latest is not None
            and isinstance(summary.get("epoch"), int)
            and latest > summary["epoch"]
        ):
            warnings.warn(
                f"{found.path} evaluates epoch {summary['epoch']}, but the run has {latest} epochs now: "
                f"run `ppl-vae evaluate {directory} --force` for the current model",
                stacklevel=2,
            )
            summary["stale"] = True
        return report


EVALUATION = "evaluation"


def _latest_epoch(directory: Path) -> int | None:
    """The epoch of a run folder's committed checkpoint, or None (not a run folder, or unreadable)."""
    from ..store.checkpoint import read_config

    if not (directory / "checkpoint").is_dir():
        return None
    try:
        return int(read_config(directory / "checkpoint")["training"].get("epoch", 0))
    except (UserError, OSError, TypeError, ValueError):
        return None


def evaluate(
    model: Any,
    guide: Any = None,
    x: Any = None,
    num_samples: int = 1000,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    particle_chunk: int | None = None,
    keep_log_weights: bool = True,
    name: str | None = None,
    fast: str = "auto",
    progress: bool = False,
    data_plate: str | None = None,
    estimator: str = "iw",
    ais_steps: int = 1000,
    ais_chains: int = 16,
    ais_leapfrog: int = 10,
    ais_init: str = "guide",
    vectorize_particles: bool = True,
) -> Report:
    """ELBO, IW log p(x), their gap, PSIS k-hat and ESS per point, plus collapse and reconstruction measures.

    Args:
        model, guide, x: ``(program, x)`` (an object with ``.model``/``.guide``, e.g. :class:`ppl_vae.VAE`)
            or ``(model, guide, x)``; ``x`` a tensor ``(N, ...)``, a tuple of row-aligned tensors or a Dataset.
        num_samples: K importance samples per point (>= 2; >= 100 for a trustworthy k-hat).
        seed, generator, batch_size, particle_chunk, fast, progress, data_plate: as in
            :func:`ppl_vae.log_weights`.
        keep_log_weights: keep the ``(N, K)`` log weights on the report (for ``to_inference_data``).
        name: a label for tables and plot titles (e.g. the run folder).
        estimator: ``"iw"`` (default) or ``"ais"``: also annealed importance sampling per point
            (:func:`ppl_vae.ais_log_likelihood`), beside IW in the table and the summary.
        ais_steps, ais_chains, ais_leapfrog, ais_init: its T, C, L and start (``"guide"`` or ``"prior"``);
            it costs about ``C T L`` model forward-and-backward passes per point.
        vectorize_particles: as in :func:`ppl_vae.log_weights` (``False``: the programs run once per
            particle, for programs that do not broadcast over a leading particle dimension).

    Values are unscaled nats per point (a program's own ``poutine.scale`` is its training objective, removed
    here). ``summary["gap_rounding"]`` is the float32 rounding of the log weights the gap subtracts
    (``eps32 * mean |log w|``, 0 for float64 data); a mean gap below it is not a measured KL
    (``summary["gap_resolved"]`` False, and a warning).

    The per-point ``elbo`` is the mean of the same K log weights whose log-mean-exp is the
    ``iw_log_likelihood``, so ``gap >= 0`` for every point. k-hat: < 0.5 good, 0.5-0.7 usable, > 0.7 the
    point's IW estimate is unreliable. Discrete latents of the guide are sampled (the report says so).

    Examples:
        >>> import torch
        >>> import ppl_vae as pv
        >>> _ = torch.manual_seed(0)
        >>> x = torch.bernoulli(torch.full((20, 6), 0.5), generator=torch.Generator().manual_seed(0))
        >>> vae = pv.VAE(input_dim=6, latent_dim=2, hidden_dims=(8,))
        >>> report = pv.evaluate(vae, x, num_samples=100, seed=0)
        >>> report.summary["n"], report.summary["num_samples"]
        (20, 100)
        >>> list(report.points.columns[:5])
        ['elbo', 'iw_log_likelihood', 'gap', 'khat', 'ess']
    """
    _check_options(fast, estimator, ais_steps, ais_chains, ais_leapfrog, ais_init)
    program, data, num_samples = resolve(model, guide, x, num_samples, data_plate)
    _check_num_samples(num_samples)
    t0 = time.perf_counter()
    rows, seed, info = prepare(program, data, num_samples, seed, generator, vectorize_particles)
    sweep = _Sweep(len(rows[0]), num_samples, keep_log_weights)
    # in a process group (torchrun) this rank's chunks of points; every rank's are gathered below
    shard = points_shard(rows, num_samples, batch_size, particle_chunk)
    with shard.computing():
        for part, lw, lse, total in scan(
            program,
            rows,
            info,
            num_samples,
            seed,
            batch_size,
            particle_chunk,
            True,
            fast=fast,
            progress=progress,
            vectorize=vectorize_particles,
            shard=shard,
        ):
            sweep.add(part, lw, lse, total)
        sweep.flush()
    per_point = (sweep.elbo, sweep.iw, sweep.khat, sweep.ess, sweep.magnitude)
    sweep.kept = _gather_points(shard, per_point, sweep.kept, keep_log_weights, num_samples)
    if not info.latent:  # every weight equal: IW is exact, and PSIS has no tail to fit
        sweep.khat[:], sweep.ess[:] = np.nan, num_samples
    points, summary = _weights_summary(sweep, rows, info, name, num_samples, seed)
    if estimator == "ais":
        _add_ais(
            points,
            summary,
            program,
            rows,
            seed,
            progress,
            ais_steps,
            ais_chains,
            ais_leapfrog,
            ais_init,
        )
    _add_latents(points, summary, program, rows, seed, vectorize_particles)
    shares = column_shares(
        program.owner, rows, seed=seed
    )  # a table model: each column's share, its type
    if shares is not None:
        points[list(shares.columns)] = shares.to_numpy()
        summary["columns"] = column_summary(
            program.owner, shares, rows[1] if len(rows) > 1 else None
        )
    seconds = time.perf_counter() - t0
    summary["seconds"] = seconds
    summary["points_per_second"] = len(rows[0]) / seconds if seconds > 0 else None
    log_w = np.concatenate(sweep.kept) if keep_log_weights else None
    return Report(points=points, summary=summary, log_weights=log_w)


def _check_options(
    fast: str, estimator: str, ais_steps: int, ais_chains: int, ais_leapfrog: int, ais_init: str
) -> None:
    check_fast(fast)
    if estimator not in ("iw", "ais"):
        raise UserError(
            f"estimator must be 'iw' (importance sampling from the guide) or 'ais' (IW and annealed "
            f"importance sampling side by side); got {estimator!r}"
        )
    if estimator == "ais":
        check_settings(ais_steps, ais_chains, ais_leapfrog, ais_init)


def _check_num_samples(num_samples: Any) -> None:
    if not isinstance(num_samples, int) or isinstance(num_samples, bool):
        raise ArgumentTypeError(f"num_samples must be an integer; got {num_samples!r}")
    if num_samples < 2:
        raise UserError(
            f"evaluate needs num_samples >= 2 for PSIS k-hat; got {num_samples}: the Pareto tail is fitted "
            "to the largest weights of each point (in practice use num_samples >= 100)"
        )
    if num_samples < 100:
        warnings.warn(
            f"k-hat from num_samples={num_samples} per point is unreliable (inf when <= 20: too few tail "
            "draws for the Pareto fit); use num_samples >= 100",
            UserWarning,
            stacklevel=3,
        )


class _Sweep:
    """Per-point values from one pass over the log weights: ELBO, IW, mean |log w|; PSIS k-hat and ESS
    computed on blocks of about 16 MB of float32 log weights (and the weights kept, if asked)."""

    def __init__(self, n: int, num_samples: int, keep: bool) -> None:
        self.num_samples, self.keep = num_samples, keep
        self.elbo, self.iw, self.khat, self.ess = (np.empty(n) for _ in range(4))
        self.magnitude = np.empty(n)
        self.kept: list[np.ndarray] = []
        self._buffer: list[tuple[slice, torch.Tensor]] = []
        self._block = max(1, 2**22 // num_samples)

    def add(self, part: slice, lw: torch.Tensor, lse: torch.Tensor, total: torch.Tensor) -> None:
        self.iw[part] = (lse - math.log(self.num_samples)).cpu().numpy()
        self.elbo[part] = (total / self.num_samples).cpu().numpy()
        self.magnitude[part] = lw.abs().mean(1).cpu().numpy()
        self._buffer.append((part, lw))
        if sum(len(b[1]) for b in self._buffer) >= self._block:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        lw = torch.cat([b[1] for b in self._buffer])
        part = slice(self._buffer[0][0].start, self._buffer[-1][0].stop)
        diag = psis_diagnostics(lw) if self.num_samples >= 100 else _quiet_psis(lw)
        self.khat[part], self.ess[part] = diag.khat, diag.ess
        if self.keep:
            self.kept.append(lw.float().cpu().numpy())
        self._buffer.clear()


def _weights_summary(
    sweep: _Sweep, rows: tuple, info: Any, name: str | None, num_samples: int, seed: int
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The per-point frame and the summary of the log weights (bounds, gap, k-hat, ESS, bits/dim)."""
    n, khat, ess = len(rows[0]), sweep.khat, sweep.ess
    points = pd.DataFrame(
        {
            "elbo": sweep.elbo,
            "iw_log_likelihood": sweep.iw,
            "gap": sweep.iw - sweep.elbo,
            "khat": khat,
            "ess": ess,
        }
    )
    summary: dict[str, Any] = {
        "name": name,
        "n": n,
        "num_samples": num_samples,
        "seed": seed,
        "units": "nats per data point",
        "data_plate": info.data_plate,
        "discrete_sites": sorted(info.non_reparam),
    }
    mask = row_mask(rows)  # model(x, mask): values are log p(x_obs), over the observed cells
    summary["missing_fraction"] = 0.0 if mask is None else float((~mask).double().mean())
    if mask is not None:
        points["n_observed"] = mask.reshape(n, -1).sum(1).cpu().numpy()
    for key, col in (("elbo", "elbo"), ("iw", "iw_log_likelihood"), ("gap", "gap")):
        summary[f"{key}_mean"], summary[f"{key}_se"] = _mean_se(points[col].to_numpy())
    _gap_rounding(summary, sweep.magnitude, rows[0].dtype)
    if info.scaled:
        summary["scales_removed"] = {site: scale for site, scale in info.scaled}
    dims = int(np.prod(rows[0].shape[1:])) if rows[0].dim() > 1 else 1
    summary["iw_bits_per_dim"] = -summary["iw_mean"] / (dims * math.log(2))
    summary["khat_share_above_0.5"] = float(np.mean(khat > KHAT_GOOD))
    summary["khat_share_above_0.7"] = float(np.mean(khat > KHAT_BAD))
    summary["khat_median"] = float(np.median(khat))
    summary["khat_max"] = float(np.max(khat))
    summary["ess_mean"] = float(np.mean(ess))
    summary["ess_fraction_mean"] = float(np.mean(ess) / num_samples)
    return points, summary


def _add_latents(
    points: pd.DataFrame,
    summary: dict[str, Any],
    program: Any,
    rows: tuple,
    seed: int,
    vectorize_particles: bool,
) -> None:
    """Active units, the KL per unit (where it has a closed form) and the reconstruction errors."""
    latents = latent_summary(program, rows, seed=seed, vectorize_particles=vectorize_particles)
    summary["latent_dim"] = latents.latent_dim
    summary["active_units"] = latents.active_units()
    summary["latent_mean_exact"] = latents.mean_exact
    summary.update(kl_per_dim=None, kl_mean=None, kl_se=None)
    if latents.kl is not None:
        points["kl"] = latents.kl.sum(-1).double().cpu().numpy()
        summary["kl_per_dim"] = [float(v) for v in latents.kl.mean(0)]
        summary["kl_mean"], summary["kl_se"] = _mean_se(points["kl"].to_numpy())
    points["recon_nll"] = latents.recon_nll.double().cpu().numpy()
    points["recon_mse"] = latents.recon_mse.double().cpu().numpy()
    summary["reconstruction_nll"] = float(points["recon_nll"].mean())
    summary["reconstruction_mse"] = float(points["recon_mse"].mean())


def _gather_points(
    shard: Shard, arrays: tuple[np.ndarray, ...], kept: list[np.ndarray], keep: bool, k: int
) -> list[np.ndarray]:
    """Every rank's rows of the per-point ``arrays`` (filled in place) and of the kept log weights
    (``(rows, K)`` float32 blocks; a rank without points holds none)."""
    if not shard.active:
        return kept
    for a in arrays:
        a[:] = shard.gather(torch.from_numpy(a[shard.lo : shard.hi].copy())).numpy()
    if not keep:
        return kept
    local = np.concatenate(kept) if kept else np.zeros((0, k), np.float32)
    return [shard.gather(torch.from_numpy(local)).numpy()]


def _gap_rounding(summary: dict[str, Any], magnitude: np.ndarray, dtype: torch.dtype) -> None:
    """The rounding of the log weights the gap subtracts (their values are computed in ``dtype``), and
    whether the mean gap is above it; a gap below it is said once, not reported as nats."""
    eps = torch.finfo(dtype).eps if dtype in (torch.float16, torch.bfloat16, torch.float32) else 0.0
    rounding = float(eps * np.mean(magnitude))
    summary["gap_rounding"] = rounding
    summary["gap_resolved"] = bool(summary["gap_mean"] > rounding) if rounding > 0 else True
    if not summary["gap_resolved"]:
        warnings.warn(
            f"evaluate: the mean IW - ELBO gap ({summary['gap_mean']:.3g} nats) is below the {dtype} rounding "
            f"of the log weights it subtracts (~{rounding:.3g} nats, |log w| ~ {np.mean(magnitude):.3g}): it "
            "is rounding, not a KL; standardise the data, or evaluate in float64 (program.double(), x.double())",
            UserWarning,
            stacklevel=4,  # the caller of evaluate
        )


def _quiet_psis(lw: torch.Tensor) -> PSISDiagnostics:
    """PSIS for small K without repeating the small-K warning on every block (evaluate warns once)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return psis_diagnostics(lw)


def _add_ais(
    points: pd.DataFrame,
    summary: dict[str, Any],
    program: Any,
    rows: tuple,
    seed: int,
    progress: bool,
    steps: int,
    chains: int,
    leapfrog: int,
    init: str,
) -> None:
    """AIS per point beside IW (column after ``iw_log_likelihood``), its diagnostics, and the summary."""
    ais = ais_log_likelihood(
        program,
        rows,
        num_steps=steps,
        num_chains=chains,
        leapfrog_steps=leapfrog,
        init=init,
        seed=seed,
        progress=progress,
        return_diagnostics=True,
    )
    values = ais.log_likelihood.double().cpu().numpy()
    points.insert(2, "ais_log_likelihood", values)
    points["ais_se"] = ais.se.double().cpu().numpy()
    points["ais_acceptance"] = ais.acceptance.double().cpu().numpy()
    points["ais_ess"] = ais.ess.double().cpu().numpy()
    points["ais_minus_iw"] = values - points["iw_log_likelihood"].to_numpy()
    summary.update(
        ais_steps=steps,
        ais_chains=chains,
        ais_leapfrog=leapfrog,
        ais_init=init,
        ais_seconds=ais.seconds,
    )
    summary["ais_mean"], summary["ais_se"] = _mean_se(values)
    summary["ais_minus_iw_mean"], summary["ais_minus_iw_se"] = _mean_se(
        points["ais_minus_iw"].to_numpy()
    )
    summary["ais_acceptance_mean"] = float(points["ais_acceptance"].mean())
    summary["ais_ess_mean"] = float(points["ais_ess"].mean())
