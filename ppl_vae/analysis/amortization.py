r"""The amortisation gap (Cremer, Li & Duvenaud, 2018): what the encoder loses by sharing one network.

For a data point x, an amortised Gaussian guide :math:`q_\phi(z \mid x)` and the best Gaussian of the same
family for that one point, :math:`q^*(z \mid x) = \arg\max_{q \in \mathcal{Q}} \mathrm{ELBO}(q)`,

.. math::

    \underbrace{\log p(x) - \mathrm{ELBO}(q_\phi)}_{\text{inference gap}}
    = \underbrace{\log p(x) - \mathrm{ELBO}(q^*)}_{\text{approximation gap}}
    + \underbrace{\mathrm{ELBO}(q^*) - \mathrm{ELBO}(q_\phi)}_{\text{amortisation gap}}.

:func:`amortization_gap` finds :math:`q^*` by *local refinement*: a non-amortised guide with one ``loc``
and ``scale`` per point and site (initialised from the encoder's output) optimised by Adam with the
model fixed, the learning rate decayed linearly to zero. The KL is in closed form where one is registered
for every latent site (``analytic_kl="auto"``), sampled otherwise (a flow prior); the result says which.
The ELBOs compared use many draws with common random numbers; log p(x) is the importance-weighted bound
with the refined q as proposal. Works on any program whose latent sites are (``Independent``) ``Normal``
in the data plate; tuple data ``(x, y, ...)`` are passed to the programs as given.

References:
    Cremer, Li & Duvenaud (2018), Inference Suboptimality in Variational Autoencoders, ICML.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from .._checks import check_int
from ..errors import ProgramError, UserError
from ..estimators import elbo, iw_log_likelihood
from ..estimators.importance import require_per_point, resolve
from ..params import param_scope
from ..program_errors import translated
from ..program_inspection import inspect_program
from ..programs import PerPointScale, Program, ProgramInfo, evaluating, vectorized_frames

__all__ = ["GaussianSite", "amortization_gap", "frozen", "gaussian_sites"]


@contextlib.contextmanager
def frozen(module: Any) -> Iterator[None]:
    """Stop gradients into ``module``'s parameters (the model stays fixed) and put it in eval mode
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
class GaussianSite:
    """A mean-field Gaussian guide site: per-point ``loc``/``scale`` ``(N, d)`` and the site's event dims."""

    name: str
    loc: torch.Tensor
    scale: torch.Tensor
    event_dims: int


def gaussian_sites(
    program: Program, info: ProgramInfo, rows: tuple[torch.Tensor, ...]
) -> list[GaussianSite]:
    """Read ``loc``/``scale`` of every latent guide site, which must be a (``Independent``) ``Normal`` whose
    only plate is the data plate; errors name the site and what the tools need."""
    n = len(rows[0])
    with torch.no_grad():
        tr = poutine.trace(program.guide).get_trace(*rows)
    sites = []
    for name in info.latent:
        site = tr.nodes[name]
        fn, event_dims = site["fn"], 0
        while isinstance(fn, dist.Independent):
            event_dims += fn.reinterpreted_batch_ndims
            fn = fn.base_dist
        frames = [f.name for f in vectorized_frames(site)]
        if not isinstance(fn, dist.Normal) or frames != [info.data_plate]:
            raise ProgramError(
                f"guide site {name!r} is a {type(fn).__name__} in plates {frames}: local refinement and the "
                f"q-vs-NUTS comparison need a mean-field Gaussian guide, Normal(...).to_event(k) inside the data "
                f"plate {info.data_plate!r} only"
            )
        loc, scale = torch.broadcast_tensors(fn.loc, fn.scale)
        sites.append(
            GaussianSite(
                name, loc.detach().reshape(n, -1), scale.detach().reshape(n, -1), event_dims
            )
        )
    return sites


def _local_guide(
    sites: list[GaussianSite],
    params: dict[str, tuple[Any, Any]],
    data: torch.Tensor,
    plate: str,
    dim: int,
) -> Callable:
    """A non-amortised guide for the rows of ``data``: per-point ``loc``/``scale`` from ``params`` (tensors or
    ``pyro.param`` names). It accepts ``data``'s rows or their first rows (an estimator inspecting the
    program on a prefix) and refuses any other input."""

    def guide(x: torch.Tensor, *rest: Any) -> None:
        n = len(x)
        if n > len(data) or not (x is data or torch.equal(x, data[:n])):
            raise UserError(
                f"this refined guide holds parameters for {len(data)} given rows; it was called on "
                f"{n} other rows (call it on the same x, or with batch_size=len(x))"
            )
        with pyro.plate(plate, n, dim=dim):
            for site in sites:
                loc, scale = params[site.name]
                if isinstance(loc, str):
                    loc, scale = pyro.param(loc), pyro.param(scale)
                loc, scale = loc[:n], scale[:n]
                if site.event_dims == 0:
                    loc, scale = loc.reshape(n), scale.reshape(n)
                q = dist.Normal(loc, scale)
                pyro.sample(site.name, q.to_event(site.event_dims) if site.event_dims else q)

    return guide


def _closed_form(program: Program, info: ProgramInfo, rows: tuple[torch.Tensor, ...]) -> bool:
    with torch.no_grad():
        guide_tr = poutine.trace(program.guide).get_trace(*rows)
        model_tr = poutine.trace(poutine.replay(program.model, trace=guide_tr)).get_trace(*rows)
    for name in info.latent:
        try:
            torch.distributions.kl_divergence(
                guide_tr.nodes[name]["fn"], model_tr.nodes[name]["fn"]
            )
        except NotImplementedError:
            return False
    return True


def _check_arguments(
    num_samples: int, elbo_samples: int, steps: int, particles: int, lr: float, analytic_kl: Any
) -> None:
    for arg, value in (
        ("num_samples", num_samples),
        ("elbo_samples", elbo_samples),
        ("steps", steps),
        ("particles", particles),
    ):
        check_int(value, arg, minimum=0 if arg == "steps" else 1)
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise UserError(f"lr must be a positive finite number; got {lr!r}")
    if analytic_kl not in (True, False, "auto"):
        raise UserError(f"analytic_kl must be True, False or 'auto'; got {analytic_kl!r}")


def _gaussian_latents(
    program: Program, rows: tuple[torch.Tensor, ...]
) -> tuple[ProgramInfo, list[GaussianSite], bool]:
    """The program's inspection, its Gaussian guide sites and whether every latent has a closed-form KL;
    a program without latent sites is one :class:`ProgramError` line."""
    with param_scope(program), torch.random.fork_rng(), evaluating(program):
        info = inspect_program(program, rows)
        require_per_point(info)
        if not info.latent:
            raise ProgramError(
                "the model has no latent sites: there is no inference gap (its log p(x) is exact with one "
                "draw: pv.iw_log_likelihood(program, x, 1))"
            )
        sites = gaussian_sites(program, info, rows)
        closed = _closed_form(program, info, rows)
    return info, sites, closed


def _refine(
    program: Program,
    info: ProgramInfo,
    sites: list[GaussianSite],
    rows: tuple[torch.Tensor, ...],
    settings: tuple[int, float, int, int],
    analytic: bool,
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], list[float]]:
    """Per-point Adam refinement of q's loc and scale (``settings``: steps, lr, particles, seed), the model
    frozen: the refined ``{site: (loc, scale)}`` and the loss per step (nats per point)."""
    steps, lr, particles, seed = settings
    n = len(rows[0])
    names = {s.name: (f"_refine.{s.name}.loc", f"_refine.{s.name}.scale") for s in sites}
    curve: list[float] = []
    loss_cls = TraceMeanField_ELBO if analytic else Trace_ELBO
    loss_fn = loss_cls(
        num_particles=particles,
        vectorize_particles=particles > 1,
        max_plate_nesting=info.max_plate_nesting,
    )
    with (
        param_scope(program),
        frozen(program.module),
        evaluating(program),
        torch.random.fork_rng(),
        pyro.validation_enabled(False),
    ):
        torch.manual_seed(seed)
        for s in sites:
            pyro.param(names[s.name][0], s.loc.clone())
            pyro.param(names[s.name][1], s.scale.clone(), constraint=dist.constraints.positive)
        local = _local_guide(sites, names, rows[0], info.data_plate, info.data_dim)
        unconstrained = [pyro.param(p).unconstrained() for pair in names.values() for p in pair]
        optim = torch.optim.Adam(unconstrained, lr=lr)
        sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda t: 1.0 - t / max(steps, 1))
        unscaled = PerPointScale()(
            program.model
        )  # the program's own scales are its loss, not log p(x)
        for _ in range(steps):
            optim.zero_grad()
            with translated("amortization_gap, refining the guide per point", program, rows):
                loss = loss_fn.differentiable_loss(unscaled, local, *rows)
            loss.backward()
            optim.step()
            sched.step()
            curve.append(loss.item() / n)
        refined = {
            s.name: (
                pyro.param(names[s.name][0]).detach().clone(),
                pyro.param(names[s.name][1]).detach().clone(),
            )
            for s in sites
        }
    return refined, curve


def amortization_gap(
    model: Any,
    guide: Any = None,
    x: Any = None,
    *,
    num_samples: int = 1000,
    elbo_samples: int = 1000,
    steps: int = 300,
    lr: float = 0.05,
    particles: int = 8,
    seed: int = 0,
    analytic_kl: bool | Literal["auto"] = "auto",
    data_plate: str | None = None,
) -> pd.DataFrame:
    """Split each point's inference gap into approximation and amortisation gaps by local refinement.

    Args:
        model, guide, x: ``(program, x)`` or ``(model, guide, x)``, the guide a mean-field Gaussian; ``x`` a
            sample of points ``(N, ...)`` or row-aligned tensors (the refinement costs ``steps`` ELBO
            evaluations of all of them).
        num_samples: K for the importance-weighted log p(x) (proposal: the refined q).
        elbo_samples: draws of z per point for each ELBO, common to both guides.
        steps: Adam steps of the per-point refinement (learning rate decayed linearly to 0).
        lr: initial Adam learning rate (on loc and the unconstrained scale).
        particles: draws of z per point per refinement step.
        seed: seeds the refinement and the estimators.
        analytic_kl: the KL in closed form (True), sampled (False), or closed form where every latent site
            has one registered and sampled otherwise ("auto", e.g. for a flow prior).
        data_plate: the data plate's name.

    Returns:
        One row per point, nats per point: ``log_px_iw``, ``elbo_amortized``, ``elbo_local``,
        ``inference_gap``, ``approximation_gap``, ``amortization_gap``, ``log_px_iw_amortized`` and the mean
        change of ``loc`` and ``log scale``. ``.attrs``: ``loss_curve`` (refinement loss per step, nats per
        point), ``settings`` (``analytic_kl`` as used). Nothing is clamped: a negative amortisation gap means
        the refinement did not converge (raise ``steps`` or lower ``lr``).

    Examples:
        >>> import torch
        >>> import ppl_vae as pv
        >>> _ = torch.manual_seed(0)
        >>> lg = pv.LinearGaussianVAE(input_dim=3, latent_dim=1)
        >>> x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
        >>> gaps = pv.amortization_gap(lg, x, num_samples=100, elbo_samples=100, steps=20)
        >>> len(gaps)
        4
    """
    program, data, _ = resolve(model, guide, x, 1, data_plate)
    _check_arguments(num_samples, elbo_samples, steps, particles, lr, analytic_kl)
    rows = program.rows(data, "x")
    n = len(rows[0])
    info, sites, closed = _gaussian_latents(program, rows)
    if analytic_kl is True and not closed:
        raise ProgramError(
            "analytic_kl=True: a latent site has no closed-form KL between guide and prior (e.g. a "
            "flow prior); pass analytic_kl='auto' or False (sampled KL)"
        )
    analytic = closed if analytic_kl == "auto" else bool(analytic_kl)
    refined, curve = _refine(program, info, sites, rows, (steps, lr, particles, seed), analytic)
    local = _local_guide(sites, refined, rows[0], info.data_plate, info.data_dim)
    refined_program = Program(
        program.model, local, info.data_plate, program.owner, identity=program.key
    )
    # one chunk of points (the local guide is tied to the rows); particles chunked for memory
    chunks = {"batch_size": n, "particle_chunk": max(1, 8192 // n)}
    elbo_amortized = elbo(program, rows, elbo_samples, analytic_kl=analytic, seed=seed, **chunks)
    elbo_local = elbo(
        refined_program, rows, elbo_samples, analytic_kl=analytic, seed=seed, **chunks
    )
    log_px = iw_log_likelihood(refined_program, rows, num_samples, seed=seed + 1, **chunks)
    log_px_amortized = iw_log_likelihood(program, rows, num_samples, seed=seed + 1, **chunks)
    frame = pd.DataFrame(
        {
            "log_px_iw": log_px.double().cpu().numpy(),
            "elbo_amortized": elbo_amortized.double().cpu().numpy(),
            "elbo_local": elbo_local.double().cpu().numpy(),
        }
    )
    frame["inference_gap"] = frame["log_px_iw"] - frame["elbo_amortized"]
    frame["approximation_gap"] = frame["log_px_iw"] - frame["elbo_local"]
    frame["amortization_gap"] = frame["elbo_local"] - frame["elbo_amortized"]
    frame["log_px_iw_amortized"] = log_px_amortized.double().cpu().numpy()
    frame["loc_change"] = (
        sum(((refined[s.name][0] - s.loc) ** 2).sum(-1) for s in sites).sqrt().cpu().numpy()
    )
    frame["log_scale_change"] = sum(
        (refined[s.name][1].log() - s.scale.log()).abs().mean(-1) for s in sites
    ).cpu().numpy() / len(sites)
    frame.index.name = "point"
    frame.attrs["loss_curve"] = curve
    frame.attrs["settings"] = {
        "num_samples": num_samples,
        "elbo_samples": elbo_samples,
        "steps": steps,
        "lr": lr,
        "particles": particles,
        "seed": seed,
        "analytic_kl": analytic,
    }
    return frame
