r"""Reference posteriors: NUTS draws of p(z | x_i) with the trained model fixed, compared with q(z | x_i).

:func:`reference_posterior` runs Pyro's NUTS (Hoffman & Gelman, 2014) on
:math:`p(z \mid x_i) \propto p(z)\, p(x_i \mid z)` for chosen rows, several chains one after another,
converts the draws with ``arviz.from_pyro``, reports the split R-hat and bulk/tail ESS (Vehtari et al.,
2021), and compares the draws with :math:`q(z \mid x_i)`: means (in posterior standard deviations, with
the Monte Carlo standard error), standard deviations, the 2-Wasserstein distance and both KL divergences
between Gaussians fitted to the two (a Gaussian summary: it ignores non-Gaussian shape, which the plot
shows). q's moments are exact for a Gaussian guide and estimated from draws for any other (full-rank,
flows). Any program with one continuous latent site in the data plate; tuple data are passed as given.
The posterior factorises over data points, so the chosen points are sampled jointly by default.

References:
    Hoffman & Gelman (2014), The No-U-Turn Sampler, JMLR 15.
    Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021), Rank-normalization, folding, and localization:
    an improved R-hat for assessing convergence of MCMC, Bayesian Analysis.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.infer import MCMC, NUTS

from .._checks import check_int
from ..diagnostics.psis import arviz as _arviz
from ..errors import ProgramError, UserError
from ..estimators.importance import require_per_point, resolve
from ..params import param_scope
from ..program_errors import translated, trim_message
from ..program_inspection import inspect_program
from ..program_sites import ProgramWarning
from ..programs import PerPointScale, evaluating, rows_slice
from .amortization import frozen

if TYPE_CHECKING:
    import arviz
    from matplotlib.figure import Figure

__all__ = ["Q_DRAWS", "ReferencePosterior", "gaussian_kl", "gaussian_w2", "reference_posterior"]

#: Draws of q per point where its moments have no closed form.
Q_DRAWS = 4000


def gaussian_w2(m1: np.ndarray, c1: np.ndarray, m2: np.ndarray, c2: np.ndarray) -> float:
    """2-Wasserstein distance between ``N(m1, c1)`` and ``N(m2, c2)``:
    ``|m1 - m2|^2 + tr(c1 + c2 - 2 (c2^1/2 c1 c2^1/2)^1/2)``, square-rooted."""

    def sqrtm(c: np.ndarray) -> np.ndarray:
        w, v = np.linalg.eigh(0.5 * (c + c.T))
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    r2 = sqrtm(c2)
    cross = sqrtm(r2 @ c1 @ r2)
    w2 = float(np.sum((m1 - m2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * np.trace(cross))
    return math.sqrt(max(w2, 0.0))


def gaussian_kl(m1: np.ndarray, c1: np.ndarray, m2: np.ndarray, c2: np.ndarray) -> float:
    """``KL(N(m1, c1) || N(m2, c2))`` in nats."""
    d = len(m1)
    inv2 = np.linalg.inv(c2)
    diff = m2 - m1
    _, logdet1 = np.linalg.slogdet(c1)
    _, logdet2 = np.linalg.slogdet(c2)
    return float(0.5 * (np.trace(inv2 @ c1) + diff @ inv2 @ diff - d + logdet2 - logdet1))


@dataclass
class ReferencePosterior:
    """NUTS draws of p(z | x_i) for chosen points, diagnostics, and the comparison with q(z | x_i).

    Attributes:
        idata: ArviZ ``InferenceData`` (``az.from_pyro`` per chain, concatenated): the posterior of the site
            on dims ``(chain, draw, point, <site>_dim)``, ``sample_stats`` with ``diverging``.
        indices: the rows of x that were sampled.
        site: the latent site's name.
        diagnostics: per (point, latent): ``r_hat``, ``ess_bulk``, ``ess_tail``, ``mcse_mean``.
        moments: per (point, latent): ``nuts_mean``, ``nuts_sd``, ``mcse_mean``, ``q_mean``, ``q_sd``,
            ``mean_diff_in_sd`` ((q_mean - nuts_mean) / nuts_sd), ``sd_ratio`` (q_sd / nuts_sd).
        distances: per point: ``w2`` (2-Wasserstein between q and a Gaussian fitted to the draws),
            ``kl_q_nuts`` = KL(q || fit), ``kl_nuts_q`` = KL(fit || q), ``max_r_hat``, ``min_ess_bulk``,
            ``divergences``.
        q_loc, q_scale: q's mean and standard deviations for the points, ``(P, d)`` (exact for a Gaussian
            guide, from :data:`Q_DRAWS` draws otherwise); ``q_cov``: ``(P, d, d)``.
        settings: the arguments.
    """

    idata: arviz.InferenceData
    indices: list[int]
    site: str
    diagnostics: pd.DataFrame
    moments: pd.DataFrame
    distances: pd.DataFrame
    q_loc: np.ndarray = field(repr=False)
    q_scale: np.ndarray = field(repr=False)
    q_cov: np.ndarray | None = field(default=None, repr=False)
    settings: dict[str, Any] = field(default_factory=dict)

    def draws(self, point: int) -> np.ndarray:
        """All chains' draws for data row ``point``: ``(chains * draws, d)``."""
        if point not in self.indices:
            raise UserError(f"point {point} was not sampled; sampled rows: {self.indices}")
        z = self.idata.posterior[self.site].sel(point=point).values
        return z.reshape(-1, z.shape[-1])

    @property
    def max_r_hat(self) -> float:
        return float(self.diagnostics["r_hat"].max())

    @property
    def min_ess_bulk(self) -> float:
        return float(self.diagnostics["ess_bulk"].min())

    def plot(self, max_points: int = 6) -> Figure:
        """For a 2-D latent: NUTS draws with q(z | x)'s 1- and 2-sd ellipses (solid) and the Gaussian
        fitted to the draws (dashed), one panel per point."""
        from matplotlib.figure import Figure
        from matplotlib.patches import Ellipse

        d = self.q_loc.shape[1]
        if d != 2:
            raise UserError(
                f"plot() draws 2-D latents; this latent has d={d}: use .moments and .distances"
            )
        shown = self.indices[:max_points]
        fig = Figure(figsize=(3.3 * len(shown), 3.4), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(shown)))

        def ellipse(ax: Any, mean: np.ndarray, cov: np.ndarray, k: float, **kw: Any) -> None:
            w, v = np.linalg.eigh(cov)
            angle = math.degrees(math.atan2(v[1, -1], v[0, -1]))
            ax.add_patch(
                Ellipse(
                    tuple(mean),
                    2 * k * math.sqrt(max(w[-1], 0)),
                    2 * k * math.sqrt(max(w[0], 0)),
                    angle=angle,
                    fill=False,
                    **kw,
                )
            )

        for ax, point in zip(axes, shown, strict=True):
            j = self.indices.index(point)
            z = self.draws(point)
            ax.scatter(z[:, 0], z[:, 1], s=3, alpha=0.25, color="tab:blue", label="NUTS draws")
            qc = self.q_cov[j] if self.q_cov is not None else np.diag(self.q_scale[j] ** 2)
            for k in (1, 2):
                ellipse(
                    ax,
                    self.q_loc[j],
                    qc,
                    k,
                    color="tab:red",
                    linewidth=1.5,
                    label="q(z|x), 1 and 2 sd" if k == 1 else None,
                )
                ellipse(
                    ax,
                    z.mean(0),
                    np.cov(z.T),
                    k,
                    color="black",
                    linestyle="--",
                    linewidth=1,
                    label="Gaussian fit to NUTS" if k == 1 else None,
                )
            row = self.distances.loc[point]
            ax.set_title(
                f"point {point}: W2 {row['w2']:.2f}, R-hat {row['max_r_hat']:.3f}", fontsize=9
            )
            ax.set_xlabel("z1")
            ax.set_ylabel("z2")
            ax.autoscale_view()
        axes[0].legend(fontsize=7, loc="best")
        return fig


def _run_chains(
    model: Callable,
    xs: tuple[torch.Tensor, ...],
    num_chains: int,
    num_samples: int,
    warmup: int,
    seed: int,
    target_accept: float,
    max_tree_depth: int,
    jit_compile: bool,
) -> arviz.InferenceData:
    az = _arviz()
    parts = []
    for chain in range(num_chains):
        # one single-chain MCMC per chain: Pyro would fork processes for num_chains > 1 on a
        # machine with enough cores; sequential chains are reproducible and need no pickling
        with torch.random.fork_rng(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit.*")
            torch.manual_seed(seed * 7919 + chain)
            kernel = NUTS(
                model,
                target_accept_prob=target_accept,
                max_tree_depth=max_tree_depth,
                jit_compile=jit_compile,
                ignore_jit_warnings=True,
            )
            mcmc = MCMC(
                kernel,
                num_samples=num_samples,
                warmup_steps=warmup,
                num_chains=1,
                disable_progbar=True,
            )
            mcmc.run(*xs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            parts.append(az.from_pyro(mcmc, log_likelihood=False))
    return parts[0] if num_chains == 1 else az.concat(parts, dim="chain")


def _chains_or_eager(
    program: Any, xs: tuple[torch.Tensor, ...], settings: dict[str, Any], *args: Any
) -> arviz.InferenceData:
    """NUTS draws of the program's unscaled model (its own ``poutine.scale`` would temper the posterior);
    when ``torch.jit`` cannot compile the potential, NUTS runs without it (said once, recorded in
    ``settings["jit_fallback"]``); an exception from the program is one :class:`ProgramError` line."""
    model = PerPointScale()(program.model)
    if settings["jit_compile"]:
        try:
            return _run_chains(model, xs, *args, True)
        except UserError:
            raise
        except Exception as err:  # noqa: BLE001 - torch.jit's many errors; said and recorded
            reason = trim_message(err)
            warnings.warn(
                f"reference_posterior: NUTS with jit_compile=True failed ({type(err).__name__}: {reason}); "
                "running it without JIT (jit_compile=False: the same sampler, slower)",
                ProgramWarning,
                stacklevel=3,
            )
            settings["jit_compile"] = False
            settings["jit_fallback"] = f"{type(err).__name__}: {reason}"
    with translated("reference_posterior, NUTS on the model", program, xs):
        return _run_chains(model, xs, *args, False)


def _q_moments(
    program: Any, info: Any, rows: tuple[torch.Tensor, ...], site: str
) -> tuple[np.ndarray, np.ndarray]:
    """q's mean ``(P, d)`` and covariance ``(P, d, d)`` at ``site`` for the rows: exact for a (mean-field or
    full-rank) Gaussian, from :data:`Q_DRAWS` draws otherwise."""
    p = len(rows[0])
    with torch.no_grad():
        tr = poutine.trace(program.guide).get_trace(*rows)
        fn = tr.nodes[site]["fn"]
        base = fn
        while isinstance(base, dist.Independent):
            base = base.base_dist
        if isinstance(base, dist.Normal):
            loc, scale = torch.broadcast_tensors(base.loc, base.scale)
            loc, var = loc.reshape(p, -1), scale.reshape(p, -1) ** 2
            return loc.double().cpu().numpy(), np.stack(
                [np.diag(v) for v in var.double().cpu().numpy()]
            )
        if isinstance(base, dist.MultivariateNormal) and base is fn:
            return fn.loc.reshape(
                p, -1
            ).double().cpu().numpy(), fn.covariance_matrix.double().cpu().numpy()
        with pyro.plate("_q_draws", Q_DRAWS, dim=-info.rank):
            draws = poutine.trace(program.guide).get_trace(*rows).nodes[site]["value"]
    z = draws.reshape(Q_DRAWS, p, -1).double().cpu().numpy()
    mean = z.mean(0)
    cov = np.stack([np.atleast_2d(np.cov(z[:, j].T)) for j in range(p)])
    return mean, cov


def _point_indices(indices: Any, n: int) -> list[int]:
    """``indices`` as a list of distinct row numbers in ``[0, n)``, else one :class:`UserError` line."""
    if isinstance(indices, (int, np.integer)):
        indices = [int(indices)]
    indices = [
        int(i) if isinstance(i, (int, np.integer)) and not isinstance(i, bool) else i
        for i in indices
    ]
    if not indices:
        raise UserError("indices must name at least one row of x")
    for i in indices:
        if not isinstance(i, int) or not 0 <= i < n:
            raise UserError(
                f"point index {i!r} is out of range: x has {n} rows, so indices must be in [0, {n - 1}]"
            )
    if len(set(indices)) != len(indices):
        raise UserError(f"indices must be distinct; got {indices}")
    return indices


def _check_sampler(num_chains: int, num_samples: int, warmup: int, target_accept: float) -> None:
    for arg, value, low in (
        ("num_chains", num_chains, 1),
        ("num_samples", num_samples, 1),
        ("warmup", warmup, 0),
    ):
        check_int(value, arg, minimum=low)
    if not 0 < target_accept < 1:
        raise UserError(f"target_accept must be in (0, 1); got {target_accept!r}")


def _latent_and_q(program: Any, xs: tuple[torch.Tensor, ...]) -> tuple[str, np.ndarray, np.ndarray]:
    """The program's one continuous latent site in the data plate (else a :class:`ProgramError` line) and
    q's moments there for the rows ``xs``."""
    with param_scope(program), torch.random.fork_rng(), evaluating(program):
        info = inspect_program(program, xs)
        require_per_point(info)
        if info.full_size is not None:
            p = info.data_plate
            raise ProgramError(
                f"reference_posterior runs Pyro's NUTS, which refuses subsampled plates: the data plate {p!r} is "
                f"written pyro.plate({p!r}, {info.full_size}, subsample_size=...); for the reference, give the "
                f"model the plate of the points it sees, pyro.plate({p!r}, len(x)) or pyro.plate({p!r}) (fit "
                "scales such a plate by N/|B| itself, so the same program also trains)"
            )
        if len(info.latent) != 1 or info.non_reparam:
            raise ProgramError(
                f"reference_posterior compares one continuous latent site; the model has "
                f"{sorted(info.latent)}"
                + (f" (discrete: {sorted(info.non_reparam)})" if info.non_reparam else "")
            )
        site = info.latent[0]
        q_loc, q_cov = _q_moments(program, info, xs, site)
    return site, q_loc, q_cov


def _point_draws(idata: arviz.InferenceData, site: str, points: list[int]) -> Any:
    """One group's draws of ``site`` as a DataArray on ``(chain, draw, point, <site>_dim)``."""
    import xarray as xr

    dim_name = f"{site}_dim"  # a dimension named like the variable would turn it into a coordinate
    z = idata.posterior[site]
    z = z.values.reshape(z.shape[0], z.shape[1], len(points), -1)
    return xr.DataArray(
        z,
        dims=("chain", "draw", "point", dim_name),
        coords={
            "chain": np.arange(z.shape[0]),
            "draw": np.arange(z.shape[1]),
            "point": points,
            dim_name: np.arange(z.shape[-1]),
        },
    )


def _sample_points(
    program: Any,
    xs: tuple[torch.Tensor, ...],
    indices: list[int],
    site: str,
    settings: dict[str, Any],
) -> arviz.InferenceData:
    """NUTS on the chosen points, jointly or one run per point (``settings["joint"]``), into one
    ``InferenceData`` with the posterior on ``(chain, draw, point, <site>_dim)`` and ``diverging``."""
    import xarray as xr

    s = settings
    groups = [list(range(len(indices)))] if s["joint"] else [[j] for j in range(len(indices))]
    posts, stats = [], []
    with param_scope(program), frozen(program.module), evaluating(program):
        for g, members in enumerate(groups):
            idata = _chains_or_eager(
                program,
                rows_slice(xs, members),
                settings,
                s["num_chains"],
                s["num_samples"],
                s["warmup"],
                s["seed"] + 1000 * g,
                s["target_accept"],
                s["max_tree_depth"],
            )
            points = [indices[r] for r in members]
            posts.append(_point_draws(idata, site, points))
            stats.append(idata.sample_stats["diverging"].expand_dims(point=points, axis=-1))
    posterior = xr.Dataset({site: xr.concat(posts, dim="point")})
    sample_stats = xr.Dataset({"diverging": xr.concat(stats, dim="point")})
    return _arviz().InferenceData(posterior=posterior, sample_stats=sample_stats)


def _chain_diagnostics(idata: arviz.InferenceData, site: str) -> pd.DataFrame:
    """Split R-hat, bulk and tail ESS and the mean's Monte Carlo s.e. per (point, latent)."""
    az = _arviz()
    diag = pd.DataFrame(
        {
            "r_hat": az.rhat(idata, var_names=[site])[site].to_series(),
            "ess_bulk": az.ess(idata, var_names=[site], method="bulk")[site].to_series(),
            "ess_tail": az.ess(idata, var_names=[site], method="tail")[site].to_series(),
            "mcse_mean": az.mcse(idata, var_names=[site], method="mean")[site].to_series(),
        }
    )
    diag.index = diag.index.set_names(["point", "latent"])
    return diag


def _compare_with_q(
    idata: arviz.InferenceData,
    site: str,
    indices: list[int],
    diag: pd.DataFrame,
    q_loc: np.ndarray,
    q_cov: np.ndarray,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The moments table per (point, latent) and the distances table per point (see
    :class:`ReferencePosterior`)."""
    q_scale = np.sqrt(np.stack([np.diag(c) for c in q_cov]))
    moment_rows, dist_rows = [], []
    for j, point in enumerate(indices):
        z = idata.posterior[site].sel(point=point).values.astype(float)
        z = z.reshape(-1, z.shape[-1])
        m, sd = z.mean(0), z.std(0, ddof=1)
        cov = np.atleast_2d(np.cov(z.T))
        for k in range(z.shape[1]):
            moment_rows.append(
                {
                    "point": point,
                    "latent": k,
                    "nuts_mean": m[k],
                    "nuts_sd": sd[k],
                    "mcse_mean": float(diag.loc[(point, k), "mcse_mean"]),
                    "q_mean": q_loc[j, k],
                    "q_sd": q_scale[j, k],
                    "mean_diff_in_sd": (q_loc[j, k] - m[k]) / sd[k],
                    "sd_ratio": q_scale[j, k] / sd[k],
                }
            )
        div = int(idata.sample_stats["diverging"].sel(point=point).values.sum())
        dist_rows.append(
            {
                "point": point,
                "w2": gaussian_w2(m, cov, q_loc[j], q_cov[j]),
                "kl_q_nuts": gaussian_kl(q_loc[j], q_cov[j], m, cov),
                "kl_nuts_q": gaussian_kl(m, cov, q_loc[j], q_cov[j]),
                "max_r_hat": float(diag.loc[point, "r_hat"].max()),
                "min_ess_bulk": float(diag.loc[point, "ess_bulk"].min()),
                "divergences": div,
            }
        )
    moments = pd.DataFrame(moment_rows).set_index(["point", "latent"])
    return moments, pd.DataFrame(dist_rows).set_index("point")


def reference_posterior(
    model: Any,
    guide: Any = None,
    x: Any = None,
    indices: Sequence[int] | int = (0,),
    *,
    num_chains: int = 4,
    num_samples: int = 500,
    warmup: int = 500,
    seed: int = 0,
    target_accept: float = 0.8,
    max_tree_depth: int = 10,
    joint: bool = True,
    jit_compile: bool = True,
    data_plate: str | None = None,
) -> ReferencePosterior:
    """Sample ``p(z | x_i)`` by NUTS for the rows ``indices`` of ``x`` and compare with ``q(z | x_i)``.

    Args:
        model, guide, x: ``(program, x)`` or ``(model, guide, x)``; the model with one continuous latent site in
            the data plate; ``x`` data ``(N, ...)`` or row-aligned tensors.
        indices: row numbers (distinct, in ``[0, N)``).
        num_chains: chains, run one after another (>= 2 for R-hat).
        num_samples, warmup: draws kept and adaptation steps per chain.
        seed: chain ``c`` uses torch seed ``seed * 7919 + c`` (initial points drawn uniformly in (-2, 2),
            Pyro's default ``init_to_uniform``).
        target_accept, max_tree_depth: NUTS settings.
        joint: sample all chosen points in one NUTS run (their posteriors are independent) or one run per point.
        jit_compile: compile the potential energy with ``torch.jit.trace`` (Pyro's option; the same draws;
            its deprecation warning is silenced).
        data_plate: the data plate's name.

    Examples:
        >>> import torch
        >>> import ppl_vae as pv
        >>> _ = torch.manual_seed(0)
        >>> lg = pv.LinearGaussianVAE(input_dim=3, latent_dim=1)
        >>> x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
        >>> ref = pv.reference_posterior(lg, x, indices=[0], num_chains=2, num_samples=50, warmup=50,
        ...                              jit_compile=False)
        >>> ref.indices, ref.site
        ([0], 'z')
    """
    if isinstance(indices, (int, np.integer)) and not isinstance(indices, bool):
        indices = [int(indices)]
    if (
        isinstance(x, (int, np.integer))
        and not isinstance(x, bool)
        or (isinstance(x, (list, tuple)) and x and all(isinstance(i, int) for i in x))
    ):
        indices, x = x, None  # reference_posterior(program, data, [i, j])
    program, data, _ = resolve(model, guide, x, 1, data_plate)
    rows = program.rows(data, "x")
    indices = _point_indices(indices, len(rows[0]))
    _check_sampler(num_chains, num_samples, warmup, target_accept)
    _arviz()  # ArviZ missing is one line before any sampling
    xs = rows_slice(rows, indices)
    site, q_loc, q_cov = _latent_and_q(program, xs)
    settings = {
        "num_chains": num_chains,
        "num_samples": num_samples,
        "warmup": warmup,
        "seed": seed,
        "target_accept": target_accept,
        "max_tree_depth": max_tree_depth,
        "joint": joint,
        "jit_compile": jit_compile,
    }
    idata = _sample_points(program, xs, indices, site, settings)
    diag = _chain_diagnostics(idata, site)
    moments, distances = _compare_with_q(idata, site, indices, diag, q_loc, q_cov)
    return ReferencePosterior(
        idata=idata,
        indices=list(indices),
        site=site,
        diagnostics=diag,
        moments=moments,
        distances=distances,
        q_loc=q_loc,
        q_scale=np.sqrt(np.stack([np.diag(c) for c in q_cov])),
        settings=settings,
        q_cov=q_cov,
    )
