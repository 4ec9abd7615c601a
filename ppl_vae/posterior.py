r"""q(z | x) against the true posterior: the amortisation gap, and NUTS reference posteriors.

**Decomposing the inference gap** (Cremer, Li & Duvenaud, 2018). For a data point x, an
amortised Gaussian guide :math:`q_\phi(z \mid x)` and the best Gaussian of the same family
for that one point, :math:`q^*(z \mid x) = \arg\max_{q \in \mathcal{Q}} \mathrm{ELBO}(q)`,

.. math::

    \underbrace{\log p(x) - \mathrm{ELBO}(q_\phi)}_{\text{inference gap}}
    = \underbrace{\log p(x) - \mathrm{ELBO}(q^*)}_{\text{approximation gap}}
    + \underbrace{\mathrm{ELBO}(q^*) - \mathrm{ELBO}(q_\phi)}_{\text{amortisation gap}}.

The approximation gap is :math:`\mathrm{KL}(q^* \,\|\, p(z \mid x))`, the price of the Gaussian
family; the amortisation gap is what the encoder loses by sharing one network across all
points. :func:`amortization_gap` finds :math:`q^*` by *local refinement*: a non-amortised
Pyro guide with one ``loc`` and ``scale`` parameter per point (initialised from the encoder's
output) optimised by Adam on ``TraceMeanField_ELBO`` with the decoder fixed, the learning rate
decayed linearly to zero so the final iterate is not left jittering in the gradient noise. The ELBOs
compared use the closed-form KL and many draws with common random numbers; log p(x) is the
importance-weighted bound (Burda et al., 2015) with the refined q as proposal.

**Reference posteriors.** :func:`reference_posterior` runs Pyro's NUTS (Hoffman & Gelman,
2014) on :math:`p(z \mid x_i) \propto p(z)\, p(x_i \mid z)` with the trained decoder fixed,
several chains one after another, converts the draws with ``arviz.from_pyro``, reports the
split R-hat and bulk/tail ESS (Vehtari et al., 2021), and compares the draws with
:math:`q(z \mid x_i)`: means (in posterior standard deviations, with the Monte Carlo standard
error), standard deviations, the 2-Wasserstein distance and both KL divergences between q and
a Gaussian fitted to the draws (a Gaussian summary: it ignores non-Gaussian shape, which the
plot shows). The posterior factorises over data points, so the chosen points are sampled
jointly in one NUTS run by default (``joint=True``); ``joint=False`` runs one per point.

References:
    Cremer, Li & Duvenaud (2018), Inference Suboptimality in Variational Autoencoders, ICML.
    Burda, Grosse & Salakhutdinov (2015), Importance Weighted Autoencoders.
    Hoffman & Gelman (2014), The No-U-Turn Sampler, JMLR 15.
    Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021), Rank-normalization, folding, and
    localization: an improved R-hat for assessing convergence of MCMC, Bayesian Analysis.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.infer import MCMC, NUTS, TraceMeanField_ELBO
from pyro.poutine.util import site_is_subsample

from .diagnostics.psis import arviz as _arviz
from .estimators import elbo, iw_log_likelihood

if TYPE_CHECKING:
    import arviz
    from matplotlib.figure import Figure

__all__ = ["ReferencePosterior", "amortization_gap", "gaussian_w2", "gaussian_kl", "reference_posterior"]


# ----------------------------------------------------------------------------- helpers


def _check_int(arg: str, value: Any, minimum: int = 1) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{arg} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _check_x(vae: Any, x: Any) -> torch.Tensor:
    if not (callable(getattr(vae, "model", None)) and callable(getattr(vae, "guide", None))):
        raise TypeError(f"expected an object with .model(x) and .guide(x) Pyro programs; got {type(vae).__name__}")
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or len(x) == 0:
        raise ValueError(f"x must be a non-empty tensor (N, ...); got {type(x).__name__} "
                         f"{tuple(getattr(x, 'shape', ()))}")
    check = getattr(vae, "check_data", None)
    return check(x) if callable(check) else x


@contextlib.contextmanager
def _frozen(module: Any) -> Iterator[None]:
    """Stop gradients into ``module``'s parameters (the decoder stays fixed) and put it in eval mode
    (``pyro.module`` skips parameters without grad quietly only in eval mode); restore on exit."""
    if not isinstance(module, torch.nn.Module):
        yield
        return
    params = list(module.parameters())
    flags = [p.requires_grad for p in params]
    training = module.training
    try:
        module.train(False)
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        module.train(training)
        for p, f in zip(params, flags, strict=True):
            p.requires_grad_(f)


@dataclass
class _GaussianSite:
    name: str
    loc: torch.Tensor  # (N, d)
    scale: torch.Tensor  # (N, d)
    plate: str
    event_dims: int


def _gaussian_guide(guide: Callable, x: torch.Tensor) -> list[_GaussianSite]:
    """Read ``loc``/``scale`` of every (Independent) Normal latent site of a guide, per data point."""
    with torch.no_grad(), pyro.get_param_store().scope(pyro.get_param_store().get_state()), \
            torch.random.fork_rng():
        tr = poutine.trace(guide).get_trace(x)
    sites = []
    for name, site in tr.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site) \
                or site["infer"].get("is_auxiliary"):
            continue
        fn, event_dims = site["fn"], 0
        while isinstance(fn, dist.Independent):
            event_dims += fn.reinterpreted_batch_ndims
            fn = fn.base_dist
        frames = [f for f in site["cond_indep_stack"] if f.vectorized]
        if not isinstance(fn, dist.Normal) or len(frames) != 1 or frames[0].dim != -1 or frames[0].size != len(x):
            raise ValueError(
                f"guide site {name!r} must be a Normal (or Normal(...).to_event(k)) inside one data plate at "
                f"dim -1 of size {len(x)}; got {type(fn).__name__} in plates {[f.name for f in frames]}: "
                "local refinement and the q-vs-NUTS comparison need a mean-field Gaussian guide"
            )
        loc, scale = torch.broadcast_tensors(fn.loc, fn.scale)
        sites.append(_GaussianSite(name, loc.detach().reshape(len(x), -1), scale.detach().reshape(len(x), -1),
                                   frames[0].name, event_dims))
    if not sites:
        raise ValueError("the guide has no latent sample sites")
    return sites


def _site_shape(site: _GaussianSite, n: int, full: torch.Tensor) -> torch.Tensor:
    # back to the site's own shape: (N, d) for event_dims=1, (N,) for a scalar Normal
    return full.reshape(n) if site.event_dims == 0 and full.shape[-1] == 1 else full


def _local_guide(sites: list[_GaussianSite], params: dict[str, tuple[Any, Any]], data: torch.Tensor) -> Callable:
    """A non-amortised guide for the rows of ``data``: per-point ``loc``/``scale`` from ``params``
    (tensors or ``pyro.param`` names). It accepts ``data`` itself or its first rows (an estimator
    inspecting the program on a prefix) and refuses any other input."""

    def guide(x: torch.Tensor) -> None:
        n = len(x)
        if n > len(data) or not (x is data or torch.equal(x, data[:n])):
            raise ValueError(
                f"this refined guide holds parameters for {len(data)} given rows; it was called on "
                f"{n} other rows (call it on the same x, or with batch_size=len(x))"
            )
        with pyro.plate(sites[0].plate, n, dim=-1):
            for site in sites:
                loc, scale = params[site.name]
                if isinstance(loc, str):
                    loc = pyro.param(loc)
                    scale = pyro.param(scale)
                loc, scale = loc[:n], scale[:n]
                q = dist.Normal(_site_shape(site, n, loc), _site_shape(site, n, scale))
                pyro.sample(site.name, q.to_event(site.event_dims) if site.event_dims else q)

    return guide


# ----------------------------------------------------------------------------- amortisation gap


def amortization_gap(
    vae: Any,
    x: torch.Tensor,
    *,
    num_samples: int = 1000,
    elbo_samples: int = 1000,
    steps: int = 300,
    lr: float = 0.05,
    particles: int = 8,
    seed: int = 0,
) -> pd.DataFrame:
    """Split each point's inference gap into approximation and amortisation gaps by local refinement.

    Args:
        vae: an object with Pyro ``.model(x)`` and a mean-field Gaussian ``.guide(x)`` (e.g. :class:`ppl_vae.VAE`).
        x: the points, ``(N, D)`` (a sample of test points: the refinement costs ``steps`` ELBO evaluations).
        num_samples: K for the importance-weighted log p(x) (proposal: the refined q).
        elbo_samples: draws of z per point for each ELBO (closed-form KL), common to both guides.
        steps: Adam steps of the per-point refinement (learning rate decayed linearly to 0).
        lr: initial Adam learning rate (on loc and the unconstrained scale).
        particles: draws of z per point per refinement step.
        seed: seeds the refinement and the estimators.

    Returns:
        One row per point, nats per point: ``log_px_iw``, ``elbo_amortized``, ``elbo_local``,
        ``inference_gap`` (= log_px_iw - elbo_amortized), ``approximation_gap`` (= log_px_iw -
        elbo_local), ``amortization_gap`` (= elbo_local - elbo_amortized), ``log_px_iw_amortized``
        (IW with the encoder's q as proposal), and the mean change of ``loc`` and ``log scale``.
        ``.attrs["loss_curve"]`` holds the refinement loss (nats per point) per step. Nothing is
        clamped: a negative amortisation gap means the refinement did not converge (raise ``steps``
        or lower ``lr``).
    """
    x = _check_x(vae, x)
    for arg, value in (("num_samples", num_samples), ("elbo_samples", elbo_samples), ("steps", steps),
                       ("particles", particles)):
        _check_int(arg, value, 0 if arg == "steps" else 1)
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive finite number; got {lr!r}")
    n = len(x)
    sites = _gaussian_guide(vae.guide, x)
    names = {s.name: (f"_refine.{s.name}.loc", f"_refine.{s.name}.scale") for s in sites}
    curve: list[float] = []
    store = pyro.get_param_store()
    with store.scope(), _frozen(vae), torch.random.fork_rng(), pyro.validation_enabled(False):
        torch.manual_seed(seed)
        for s in sites:
            pyro.param(names[s.name][0], s.loc.clone())
            pyro.param(names[s.name][1], s.scale.clone(), constraint=dist.constraints.positive)
        guide = _local_guide(sites, names, x)
        unconstrained = [pyro.param(p).unconstrained() for pair in names.values() for p in pair]
        optim = torch.optim.Adam(unconstrained, lr=lr)
        # linear decay to 0: the last iterates average out the gradient noise instead of jittering
        sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda t: 1.0 - t / max(steps, 1))
        loss_fn = TraceMeanField_ELBO(num_particles=particles, vectorize_particles=particles > 1,
                                      max_plate_nesting=1)
        for _ in range(steps):
            optim.zero_grad()
            loss = loss_fn.differentiable_loss(vae.model, guide, x)
            loss.backward()
            optim.step()
            sched.step()
            curve.append(loss.item() / n)
        refined = {s.name: (pyro.param(names[s.name][0]).detach().clone(),
                            pyro.param(names[s.name][1]).detach().clone()) for s in sites}
    local = _local_guide(sites, refined, x)
    # one chunk of points (the local guide is tied to the rows of x); particles chunked for memory
    chunks = {"batch_size": n, "particle_chunk": max(1, 8192 // n)}
    elbo_amortized = elbo(vae.model, vae.guide, x, elbo_samples, analytic_kl=True, seed=seed, **chunks)
    elbo_local = elbo(vae.model, local, x, elbo_samples, analytic_kl=True, seed=seed, **chunks)
    log_px = iw_log_likelihood(vae.model, local, x, num_samples, seed=seed + 1, **chunks)
    log_px_amortized = iw_log_likelihood(vae.model, vae.guide, x, num_samples, seed=seed + 1, **chunks)
    frame = pd.DataFrame({
        "log_px_iw": log_px.double().cpu().numpy(),
        "elbo_amortized": elbo_amortized.double().cpu().numpy(),
        "elbo_local": elbo_local.double().cpu().numpy(),
    })
    frame["inference_gap"] = frame["log_px_iw"] - frame["elbo_amortized"]
    frame["approximation_gap"] = frame["log_px_iw"] - frame["elbo_local"]
    frame["amortization_gap"] = frame["elbo_local"] - frame["elbo_amortized"]
    frame["log_px_iw_amortized"] = log_px_amortized.double().cpu().numpy()
    frame["loc_change"] = sum(((refined[s.name][0] - s.loc) ** 2).sum(-1) for s in sites).sqrt().cpu().numpy()
    frame["log_scale_change"] = sum((refined[s.name][1].log() - s.scale.log()).abs().mean(-1)
                                    for s in sites).cpu().numpy() / len(sites)
    frame.index.name = "point"
    frame.attrs["loss_curve"] = curve
    frame.attrs["settings"] = {"num_samples": num_samples, "elbo_samples": elbo_samples, "steps": steps,
                               "lr": lr, "particles": particles, "seed": seed}
    return frame


# ----------------------------------------------------------------------------- Gaussian distances


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


# ----------------------------------------------------------------------------- NUTS reference


@dataclass
class ReferencePosterior:
    """NUTS draws of p(z | x_i) for chosen points, diagnostics, and the comparison with q(z | x_i).

    Attributes:
        idata: ArviZ ``InferenceData`` (``az.from_pyro`` per chain, concatenated): posterior ``z``
            on dims ``(chain, draw, point, latent)``, ``sample_stats`` with ``diverging``.
        indices: the rows of x that were sampled.
        site: the latent site's name.
        diagnostics: per (point, latent): ``r_hat``, ``ess_bulk``, ``ess_tail``, ``mcse_mean``.
        moments: per (point, latent): ``nuts_mean``, ``nuts_sd``, ``mcse_mean``, ``q_mean``, ``q_sd``,
            ``mean_diff_in_sd`` ((q_mean - nuts_mean) / nuts_sd), ``sd_ratio`` (q_sd / nuts_sd).
        distances: per point: ``w2`` (2-Wasserstein between q and a Gaussian fitted to the draws),
            ``kl_q_nuts`` = KL(q || fit), ``kl_nuts_q`` = KL(fit || q), ``max_r_hat``, ``min_ess_bulk``,
            ``divergences``.
        q_loc, q_scale: q's parameters for the points, ``(P, d)``.
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
    settings: dict[str, Any] = field(default_factory=dict)

    def draws(self, point: int) -> np.ndarray:
        """All chains' draws for data row ``point``: ``(chains * draws, d)``."""
        if point not in self.indices:
            raise ValueError(f"point {point} was not sampled; sampled rows: {self.indices}")
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
            raise ValueError(f"plot() draws 2-D latents; this latent has d={d}: use .moments and .distances")
        shown = self.indices[:max_points]
        fig = Figure(figsize=(3.3 * len(shown), 3.4), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(shown)))

        def ellipse(ax: Any, mean: np.ndarray, cov: np.ndarray, k: float, **kw: Any) -> None:
            w, v = np.linalg.eigh(cov)
            angle = math.degrees(math.atan2(v[1, -1], v[0, -1]))
            ax.add_patch(Ellipse(tuple(mean), 2 * k * math.sqrt(max(w[-1], 0)), 2 * k * math.sqrt(max(w[0], 0)),
                                 angle=angle, fill=False, **kw))

        for ax, point in zip(axes, shown, strict=True):
            j = self.indices.index(point)
            z = self.draws(point)
            ax.scatter(z[:, 0], z[:, 1], s=3, alpha=0.25, color="tab:blue", label="NUTS draws")
            qc = np.diag(self.q_scale[j] ** 2)
            for k in (1, 2):
                ellipse(ax, self.q_loc[j], qc, k, color="tab:red", linewidth=1.5,
                        label="q(z|x), 1 and 2 sd" if k == 1 else None)
                ellipse(ax, z.mean(0), np.cov(z.T), k, color="black", linestyle="--", linewidth=1,
                        label="Gaussian fit to NUTS" if k == 1 else None)
            row = self.distances.loc[point]
            ax.set_title(f"point {point}: W2 {row['w2']:.2f}, R-hat {row['max_r_hat']:.3f}", fontsize=9)
            ax.set_xlabel("z1")
            ax.set_ylabel("z2")
            ax.autoscale_view()
        axes[0].legend(fontsize=7, loc="best")
        return fig


def _run_chains(model: Callable, xs: torch.Tensor, num_chains: int, num_samples: int, warmup: int,
                seed: int, target_accept: float, max_tree_depth: int, jit_compile: bool) -> arviz.InferenceData:
    az = _arviz()
    parts = []
    for chain in range(num_chains):
        # one single-chain MCMC per chain: Pyro would fork processes for num_chains > 1 on a
        # machine with enough cores; sequential chains are reproducible and need no pickling
        with torch.random.fork_rng(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit.*")
            torch.manual_seed(seed * 7919 + chain)
            kernel = NUTS(model, target_accept_prob=target_accept, max_tree_depth=max_tree_depth,
                          jit_compile=jit_compile, ignore_jit_warnings=True)
            mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup, num_chains=1, disable_progbar=True)
            mcmc.run(xs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            parts.append(az.from_pyro(mcmc, log_likelihood=False))
    return parts[0] if num_chains == 1 else az.concat(parts, dim="chain")


def reference_posterior(
    vae: Any,
    x: torch.Tensor,
    indices: Sequence[int],
    *,
    num_chains: int = 4,
    num_samples: int = 500,
    warmup: int = 500,
    seed: int = 0,
    target_accept: float = 0.8,
    max_tree_depth: int = 10,
    joint: bool = True,
    jit_compile: bool = True,
) -> ReferencePosterior:
    """Sample ``p(z | x_i)`` by NUTS for the rows ``indices`` of ``x`` and compare with ``q(z | x_i)``.

    Args:
        vae: an object with ``.model(x)`` (one latent site) and a mean-field Gaussian ``.guide(x)``.
        x: data ``(N, D)``; ``indices`` pick rows of it.
        indices: row numbers (distinct, in ``[0, N)``).
        num_chains: chains, run one after another (>= 2 for R-hat).
        num_samples, warmup: draws kept and adaptation steps per chain.
        seed: chain ``c`` uses torch seed ``seed * 7919 + c`` (initial points drawn uniformly in
            (-2, 2), Pyro's default ``init_to_uniform``).
        target_accept, max_tree_depth: NUTS settings.
        joint: sample all chosen points in one NUTS run (their posteriors are independent) or
            one run per point.
        jit_compile: compile the potential energy with ``torch.jit.trace`` (Pyro's option; the
            same draws, about twice as fast on a small decoder; its deprecation warning is silenced).

    Returns:
        :class:`ReferencePosterior`.
    """
    x = _check_x(vae, x)
    n = len(x)
    if isinstance(indices, (int, np.integer)):
        indices = [int(indices)]
    indices = [int(i) if isinstance(i, (int, np.integer)) and not isinstance(i, bool) else i for i in indices]
    if not indices:
        raise ValueError("indices must name at least one row of x")
    for i in indices:
        if not isinstance(i, int) or not 0 <= i < n:
            raise ValueError(f"point index {i!r} is out of range: x has {n} rows, so indices must be in [0, {n - 1}]")
    if len(set(indices)) != len(indices):
        raise ValueError(f"indices must be distinct; got {indices}")
    num_chains = _check_int("num_chains", num_chains)
    num_samples = _check_int("num_samples", num_samples)
    warmup = _check_int("warmup", warmup, 0)
    if not 0 < target_accept < 1:
        raise ValueError(f"target_accept must be in (0, 1); got {target_accept!r}")
    az = _arviz()
    import xarray as xr

    xs = x[indices]
    sites = _gaussian_guide(vae.guide, xs)
    if len(sites) != 1:
        raise ValueError(f"reference_posterior compares one latent site; the guide has {[s.name for s in sites]}")
    site = sites[0].name
    groups = [list(range(len(indices)))] if joint else [[j] for j in range(len(indices))]
    posts, stats = [], []
    with pyro.get_param_store().scope(), _frozen(vae):
        for g, rows in enumerate(groups):
            idata = _run_chains(vae.model, xs[rows], num_chains, num_samples, warmup, seed + 1000 * g,
                                target_accept, max_tree_depth, jit_compile)
            z = idata.posterior[site]
            if z.ndim == 3:  # scalar latent per point: (chain, draw, point)
                z = z.expand_dims("latent", axis=-1)
            z = z.rename({z.dims[2]: "point", z.dims[3]: "latent"})
            z = z.assign_coords(point=[indices[r] for r in rows], latent=np.arange(z.sizes["latent"]))
            posts.append(z)
            div = idata.sample_stats["diverging"].expand_dims(point=[indices[r] for r in rows], axis=-1)
            stats.append(div)
    posterior = xr.Dataset({site: xr.concat(posts, dim="point")})
    sample_stats = xr.Dataset({"diverging": xr.concat(stats, dim="point")})
    idata = az.InferenceData(posterior=posterior, sample_stats=sample_stats)

    rhat = az.rhat(idata, var_names=[site])[site]
    ess_bulk = az.ess(idata, var_names=[site], method="bulk")[site]
    ess_tail = az.ess(idata, var_names=[site], method="tail")[site]
    mcse = az.mcse(idata, var_names=[site], method="mean")[site]
    diag = pd.DataFrame({
        "r_hat": rhat.to_series(), "ess_bulk": ess_bulk.to_series(), "ess_tail": ess_tail.to_series(),
        "mcse_mean": mcse.to_series(),
    })
    q_loc = sites[0].loc.cpu().double().numpy()
    q_scale = sites[0].scale.cpu().double().numpy()
    moment_rows, dist_rows = [], []
    for j, point in enumerate(indices):
        z = posterior[site].sel(point=point).values.astype(float)
        z = z.reshape(-1, z.shape[-1])
        m, sd = z.mean(0), z.std(0, ddof=1)
        cov = np.atleast_2d(np.cov(z.T))
        qc = np.diag(q_scale[j] ** 2)
        for k in range(z.shape[1]):
            moment_rows.append({"point": point, "latent": k, "nuts_mean": m[k], "nuts_sd": sd[k],
                                "mcse_mean": float(diag.loc[(point, k), "mcse_mean"]),
                                "q_mean": q_loc[j, k], "q_sd": q_scale[j, k],
                                "mean_diff_in_sd": (q_loc[j, k] - m[k]) / sd[k], "sd_ratio": q_scale[j, k] / sd[k]})
        div = int(sample_stats["diverging"].sel(point=point).values.sum())
        dist_rows.append({"point": point, "w2": gaussian_w2(m, cov, q_loc[j], qc),
                          "kl_q_nuts": gaussian_kl(q_loc[j], qc, m, cov), "kl_nuts_q": gaussian_kl(m, cov, q_loc[j], qc),
                          "max_r_hat": float(diag.loc[point, "r_hat"].max()),
                          "min_ess_bulk": float(diag.loc[point, "ess_bulk"].min()), "divergences": div})
    moments = pd.DataFrame(moment_rows).set_index(["point", "latent"])
    distances = pd.DataFrame(dist_rows).set_index("point")
    settings = {"num_chains": num_chains, "num_samples": num_samples, "warmup": warmup, "seed": seed,
                "target_accept": target_accept, "max_tree_depth": max_tree_depth, "joint": joint,
                "jit_compile": jit_compile}
    return ReferencePosterior(idata=idata, indices=list(indices), site=site, diagnostics=diag, moments=moments,
                              distances=distances, q_loc=q_loc, q_scale=q_scale, settings=settings)
