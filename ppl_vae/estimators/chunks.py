r"""One chunk of importance sampling: the log weights (or the closed-form-KL ELBO terms) of ``k`` particles
for ``n`` points, from one guide run under a particle plate and the model replayed on it.

.. math::

    \log w_{kn} = \sum_{s \in \text{model}} \log p_s(\cdot_{kn}) - \sum_{s \in \text{guide}} \log q_s(\cdot_{kn})

summed over each chunk's *own* sites (:func:`~ppl_vae.program_chunks.site_sets`: a program's sites may depend
on the batch), unscaled (:class:`~ppl_vae.program_sites.PerPointScale`), masks applied, accumulated in
float64. Observed values outside their site's support are counted per site (:func:`warn_support` says so once
per call). The closed-form variant (:func:`analytic_chunk`) is used only when the guide samples the latents in
the model's order (:func:`check_analytic`), as Pyro's mean-field check requires.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask

from ..errors import ProgramError
from ..program_chunks import per_point, run_with_particles, site_sets
from ..program_sites import ProgramWarning, same_latent_order, support_shares
from ..programs import Program, ProgramInfo
from .kernels import site_log_prob

__all__ = [
    "analytic_chunk",
    "check_analytic",
    "log_w_chunk",
    "sum_sites",
    "unvectorised",
    "warn_support",
]

Batch = tuple[torch.Tensor, ...]


def _site_log_prob(site: dict, scratch: dict | None, info: ProgramInfo) -> torch.Tensor:
    """One site's log-prob (mask applied; scales were removed by :class:`~ppl_vae.programs.PerPointScale`)
    summed per particle and point; a failure names the site."""
    try:
        lp = scale_and_mask(site_log_prob(site, scratch), site["scale"], site["mask"])
    except Exception as err:
        err._ppl_vae_site = site["name"]  # type: ignore[attr-defined]  # read by program_failure
        raise
    if lp.dim() > info.rank:
        raise ProgramError(
            f"site {site['name']!r} has log_prob shape {tuple(lp.shape)} in this chunk: batch dims outside "
            f"every plate (max plate nesting {info.max_plate_nesting}); declare them with pyro.plate or move "
            "them into the event with .to_event(...)"
        )
    return per_point(lp, info)


def sum_sites(
    trace: poutine.Trace,
    names: tuple[str, ...],
    info: ProgramInfo,
    shape: tuple[int, int],
    like: torch.Tensor,
    scratch: dict | None = None,
) -> torch.Tensor:
    """Sum of the named sites' log-probs (mask applied, unscaled), per particle and point: ``shape``.

    Accumulated in float64: the sum of a few large terms of opposite sign (log p(x, z) and log q(z | x) of a
    badly scaled column, 1e5 and more) keeps its small difference, which float32 rounds away.
    """
    total = None
    for name in names:
        lp = _site_log_prob(trace.nodes[name], scratch, info).double()
        total = lp if total is None else total + lp
    if total is None:
        return like.new_zeros(shape, dtype=torch.float64)
    return total.expand(shape)


def _keep(scratch: dict | None, traces: tuple) -> None:
    # Keep this chunk's tensors alive until the next chunk's exist, as the loop variables of a plain-torch
    # loop do: freeing a whole chunk at once can hand the heap back to the OS, and the next chunk takes it
    # again page by page (measured: up to 25 MB of page faults per 4096-row call, 10-25% of the time).
    if scratch is not None:
        scratch["previous_traces"] = traces


def _count_support(
    scratch: dict | None, model_tr: poutine.Trace, observed: tuple[str, ...]
) -> None:
    """Add this chunk's observed values outside their sites' supports to ``scratch["support"]`` (eager
    chunks only: a compiled chunk is traced on fake tensors)."""
    if scratch is None:
        return
    counts = scratch.setdefault("support", {})
    for name, (out, total) in support_shares(model_tr.nodes, observed).items():
        fn = model_tr.nodes[name]["fn"]
        while hasattr(fn, "base_dist"):  # .to_event(), .mask(): the family underneath
            fn = fn.base_dist
        seen = counts.setdefault(name, [0, 0, type(fn).__name__])
        seen[0] += out
        seen[1] += total


def log_w_chunk(
    program: Program, batch: Batch, k: int | None, info: ProgramInfo, scratch: dict | None = None
) -> torch.Tensor:
    """``(k, n)`` log weights ``log p(x, z) - log q(z | x)`` for one chunk (float64; ``k=None``: one
    particle, the programs unvectorised). The chunk's own sites are summed (:func:`~ppl_vae.programs.site_sets`)."""
    model_tr, guide_tr = run_with_particles(program, info, batch, k)
    _keep(scratch, (model_tr, guide_tr))
    observed, latent, aux = site_sets(model_tr, guide_tr, info)
    _count_support(scratch, model_tr, observed)
    shape, like = (k or 1, len(batch[0])), batch[0]
    log_p = sum_sites(model_tr, observed + latent, info, shape, like, scratch)
    log_q = sum_sites(guide_tr, latent + aux, info, shape, like, scratch)
    return log_p - log_q


def unvectorised(chunk_fn: Callable) -> Callable:
    """``chunk_fn`` run once per particle without a particle plate (for programs that do not vectorise)."""

    def run(
        program: Program, batch: Batch, k: int, info: ProgramInfo, scratch: dict | None = None
    ) -> torch.Tensor:
        return torch.cat([chunk_fn(program, batch, None, info, scratch) for _ in range(k)])

    return run


def check_analytic(info: ProgramInfo, guide_tr: poutine.Trace, model_tr: poutine.Trace) -> bool:
    """Refuse what a closed-form KL cannot do; False (sampled KL, said once) when the guide samples the
    latents in another order than the model, which breaks the mean-field restriction the closed form needs."""
    if info.guide_aux:
        raise ProgramError(
            f"analytic_kl=True needs a guide without auxiliary sites; got "
            f"{sorted(info.guide_aux)}: use analytic_kl=False"
        )
    for name in info.latent:
        q, p = guide_tr.nodes[name]["fn"], model_tr.nodes[name]["fn"]
        if not q.has_rsample:
            raise ProgramError(
                f"analytic_kl=True needs reparameterised guide sites; site {name!r} samples from "
                f"{type(q).__name__}, which has no rsample: use analytic_kl=False (sampled KL)"
            )
        try:
            torch.distributions.kl_divergence(q, p)
        except NotImplementedError:
            raise ProgramError(
                f"analytic_kl=True: no closed-form KL is registered for ({type(q).__name__}, {type(p).__name__}) "
                f"at site {name!r}; use analytic_kl=False (sampled KL), or make both sides the same family "
                "(e.g. Normal(...).to_event(1) in model and guide)"
            ) from None
    if not same_latent_order(model_tr, guide_tr, info.latent):
        order_p = [n for n in model_tr.nodes if n in info.latent]
        order_q = [n for n in guide_tr.nodes if n in info.latent]
        warnings.warn(
            f"elbo(analytic_kl=True): the guide samples {order_q} and the model {order_p}: a closed-form KL "
            "per site is the ELBO only when both sample in the same order (Pyro's mean-field check), so the "
            "KL is sampled instead (analytic_kl=False; same expectation, more variance)",
            ProgramWarning,
            stacklevel=3,
        )
        return False
    return True


def analytic_chunk(
    program: Program, batch: Batch, k: int | None, info: ProgramInfo, scratch: dict | None = None
) -> torch.Tensor:
    """``(k, n)`` values of ``log p(x | z) - sum_sites KL(q || p)``, the KL in closed form (float64)."""
    model_tr, guide_tr = run_with_particles(program, info, batch, k)
    _keep(scratch, (model_tr, guide_tr))
    observed, latent, _ = site_sets(model_tr, guide_tr, info)
    _count_support(scratch, model_tr, observed)
    shape = (k or 1, len(batch[0]))
    total = sum_sites(model_tr, observed, info, shape, batch[0], scratch)
    for name in latent:
        q_site, p_site = guide_tr.nodes[name], model_tr.nodes[name]
        kl = torch.distributions.kl_divergence(q_site["fn"], p_site["fn"])
        kl = scale_and_mask(kl, q_site["scale"], q_site["mask"])
        total = total - per_point(kl, info).double().expand(shape)
    return total


def warn_support(counts: dict[str, list]) -> None:
    """One warning per site with observed values outside its distribution's support (validation off or not)."""
    for name, (out, total, family) in counts.items():
        if out:
            warnings.warn(
                f"ppl_vae: {out / total:.1%} of the values observed at site {name!r} ({out} of {total}) lie "
                f"outside the support of its {family}: their log-densities are not log-likelihoods (the "
                "distribution cannot produce them; validate_args=False only hides it). Transform the data "
                "into the support (binarise grey levels) or choose a likelihood that holds them",
                ProgramWarning,
                stacklevel=3,
            )
