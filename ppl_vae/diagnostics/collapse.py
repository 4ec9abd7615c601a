r"""Posterior collapse and reconstructions, read from the guide and the model themselves.

For every latent site of a program the guide's distribution q(z | x_n) is read from a trace (no
``.encode`` is assumed: a PyTorch-style ``encode -> (mu, logvar)`` would be misread), and compared with
the model's prior at that site:

* **KL per dimension**: ``KL(q(z_j | x) || p(z_j))`` in closed form where both sides factorise over
  the dimensions (a ``Normal`` through ``.to_event``, as a mean-field guide and an N(0, I) prior do),
  averaged over the data; dimensions with KL near 0 carry no information about x (collapse). It is
  not defined for a full-rank or flow guide (``None``; their total KL is in the ELBO).
* **Active units** (Burda et al., 2015): unit j is active when :math:`\mathrm{Var}_x(\mathbb{E}_q[z_j]) > 0.01`;
  ``E_q[z]`` is the distribution's mean, or a Monte Carlo mean of :data:`MEAN_DRAWS` draws where it has
  no closed form (a flow).
* **Reconstruction at the posterior mean**: the model replayed with every continuous latent at ``E_q[z | x]``
  and every discrete one at its most probable value under q (those are left out of the unit counts):
  ``-log p(x | E_q z)`` (nats; the BCE for a Bernoulli likelihood) and the squared error of the
  observation's mean, per coordinate.

References:
    Burda, Grosse & Salakhutdinov (2015), Importance Weighted Autoencoders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from torch.distributions import Independent, kl_divergence

from ..errors import ProgramError
from ..estimators.importance import require_per_point, resolve, sandbox
from ..estimators.masked import row_mask
from ..program_chunks import particle_context, per_point, run_with_particles, site_sets
from ..program_errors import translated
from ..program_inspection import inspect_program
from ..programs import Program, ProgramInfo, rows_slice

__all__ = [
    "LatentSummary",
    "active_units",
    "kl_per_dimension",
    "latent_activity",
    "latent_summary",
    "reconstruction_error",
]

#: Draws of z for a Monte Carlo mean where q has no closed-form mean.
MEAN_DRAWS = 32
#: Points per call.
BATCH = 2048


@dataclass
class LatentSummary:
    """What the guide says about every point (latent dims of all local latent sites, concatenated).

    Attributes:
        names: ``site[j]`` per dimension.
        mean: ``(N, d)`` ``E_q[z | x_n]``; ``mean_exact``: False where a Monte Carlo mean was used.
        kl: ``(N, d)`` per-dimension KL from the prior, or None where not defined.
        recon_nll: ``(N,)`` ``-log p(x_n | E_q z)`` (nats); recon_mse: ``(N,)`` squared error per coordinate.
    """

    names: list[str]
    mean: torch.Tensor
    mean_exact: bool
    kl: torch.Tensor | None
    recon_nll: torch.Tensor
    recon_mse: torch.Tensor

    @property
    def latent_dim(self) -> int:
        return self.mean.shape[1]

    def activity(self) -> torch.Tensor:
        """``Var_x(E_q[z_j])`` per unit, ``(d,)``."""
        return self.mean.var(0) if len(self.mean) > 1 else torch.zeros(self.mean.shape[1])

    def active_units(self, threshold: float = 0.01) -> int:
        return int((self.activity() > threshold).sum())


def _unwrap(fn: Any) -> tuple[Any, int]:
    dims = 0
    while isinstance(fn, Independent):
        dims += fn.reinterpreted_batch_ndims
        fn = fn.base_dist
    return fn, dims


def _flat(t: torch.Tensor, info: ProgramInfo, n: int) -> torch.Tensor:
    """A site value/statistic under a 1-particle plate -> ``(n, -1)`` (data dim first)."""
    t = t.reshape((1,) * max(0, info.rank - t.dim()) + tuple(t.shape)) if t.dim() < info.rank else t
    t = t.movedim(info.data_index, 1)[0]
    return t.expand((n,) + tuple(t.shape[1:])).reshape(n, -1)


def _mc_mean(
    program: Program, info: ProgramInfo, batch: tuple[torch.Tensor, ...], vectorize: bool
) -> Any:
    """A guide trace whose site values are the means of :data:`MEAN_DRAWS` draws (one run per draw when the
    program does not vectorise over particles)."""
    if vectorize:
        return run_with_particles(program, info, batch, MEAN_DRAWS)[1]
    traces = [run_with_particles(program, info, batch, None)[1] for _ in range(MEAN_DRAWS)]
    mean = traces[0].copy()
    for name in mean.nodes:
        if mean.nodes[name]["type"] == "sample":
            values = torch.stack([t.nodes[name]["value"] for t in traces])
            mean.nodes[name] = dict(mean.nodes[name], value=values.float().mean(0, keepdim=True))
    return mean


def _site_stats(
    program: Program, info: ProgramInfo, batch: tuple[torch.Tensor, ...], vectorize: bool = True
) -> tuple[list[str], list[torch.Tensor], bool, list[torch.Tensor] | None, dict[str, torch.Tensor]]:
    n = len(batch[0])
    model_tr, guide_tr = run_with_particles(program, info, batch, 1 if vectorize else None)
    observed, latent, _ = site_sets(model_tr, guide_tr, info)  # this batch's sites
    names, means, kls, exact, raw = [], [], [], True, {"_observed": observed}
    draws_tr = None

    def lift(
        t: torch.Tensor,
    ) -> torch.Tensor:  # unvectorised runs: the particle dim of size 1 added
        return t if vectorize else t.unsqueeze(0)

    for name in latent:
        q, p = guide_tr.nodes[name]["fn"], model_tr.nodes[name]["fn"]
        if (
            name in info.non_reparam
        ):  # a discrete latent: decode at its most probable value, summarise nothing
            raw[name] = lift(q.mode.expand(guide_tr.nodes[name]["value"].shape))
            continue
        try:
            raw[name] = lift(q.mean.expand(guide_tr.nodes[name]["value"].shape))
        except NotImplementedError:
            exact = False
            if draws_tr is None:
                draws_tr = _mc_mean(program, info, batch, vectorize)
            raw[name] = draws_tr.nodes[name]["value"]
            raw[name] = raw[name].mean(0, keepdim=True) if vectorize else lift(raw[name][0])
        mean = _flat(raw[name], info, n)
        means.append(mean)
        names += [f"{name}[{j}]" for j in range(mean.shape[1])]
        qb, qd = _unwrap(q)
        pb, pd = _unwrap(p)
        kl = None
        if kls is not None and qd == pd:
            try:
                kl = _flat(lift(kl_divergence(qb, pb)), info, n)
            except (NotImplementedError, RuntimeError, ValueError):
                kl = None
        if kl is None or kl.shape != mean.shape:
            kls = None
        else:
            kls.append(kl)
    return names, means, exact, kls, raw


def _reconstruction(
    program: Program,
    info: ProgramInfo,
    batch: tuple[torch.Tensor, ...],
    means: dict[str, Any],
    vectorize: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model with every latent fixed at q's mean: ``-log p(x | E_q z)`` and the squared error per coordinate
    (per observed coordinate when the program is given a mask, ``model(x, mask)``)."""
    n = len(batch[0])
    observed = means.pop("_observed")
    if not vectorize:  # values without the particle dim of size 1
        means = {k: v[0] for k, v in means.items()}
    with particle_context(info, 1 if vectorize else None):
        tr = poutine.trace(poutine.condition(program.model, data=means)).get_trace(*batch)
    nll = batch[0].new_zeros(n)
    sq, count = batch[0].new_zeros(n), 0
    for name in observed:
        site = tr.nodes[name]
        lp = scale_and_mask(site["fn"].log_prob(site["value"]), site["scale"], site["mask"])
        nll = nll - per_point(lp, info)[0].expand(n)
        if not site["value"].is_floating_point() or site["mask"] is not None:
            continue  # labels, factors and masked sites: no squared error
        try:
            diff = _flat(site["fn"].mean - site["value"], info, n)
        except (NotImplementedError, RuntimeError):
            continue
        seen = row_mask(batch)  # model(x, mask): missing cells hold a fill, not data
        if seen is not None and site["value"] is batch[0]:
            seen = seen.reshape(n, -1).to(diff.dtype)
            diff = torch.where(seen.bool(), diff, diff.new_zeros(()))
            if bool(torch.isfinite(diff).all()):
                sq, count = sq + diff.pow(2).sum(-1), count + seen.sum(-1)
        elif bool(torch.isfinite(diff).all()):
            sq, count = sq + diff.pow(2).sum(-1), count + diff.shape[1]
    if isinstance(count, torch.Tensor):
        return nll, sq / count.clamp_min(1)
    return nll, sq / max(count, 1) if count else torch.full_like(sq, math.nan)


@torch.no_grad()
def latent_summary(
    model: Any,
    guide: Any = None,
    x: Any = None,
    *,
    seed: int = 0,
    data_plate: str | None = None,
    vectorize_particles: bool = True,
) -> LatentSummary:
    """Read q(z | x_n) for every point: means, per-dimension KL where defined, reconstructions at the mean.

    Takes ``(program, x)`` or ``(model, guide, x)``, as the estimators do; ``vectorize_particles=False``
    for programs that do not broadcast over a leading particle dimension (as the estimators). A program
    without latent sites has ``latent_dim`` 0.
    """
    program, data, _ = resolve(model, guide, x, 1, data_plate)
    rows = program.rows(data, "x")
    n = len(rows[0])
    with sandbox(program, seed, rows[0].device), pyro.validation_enabled(False):
        info = inspect_program(program, rows)
        require_per_point(info)
        means, kls, nlls, mses = [], [], [], []
        names, exact, has_kl = [], True, True
        for start in range(0, n, BATCH):
            batch = rows_slice(rows, slice(start, start + BATCH))
            before = names
            with translated(
                f"latent summary, rows {start}-{start + len(batch[0]) - 1}", program, batch
            ):
                names, m, ex, kl, raw = _site_stats(program, info, batch, vectorize_particles)
            if before and before != names:
                raise ProgramError(
                    f"the latent sites differ between chunks of {BATCH} points (rows from {start} on have "
                    f"{len(names)} latent dimensions, earlier rows {len(before)}): per-unit summaries need the "
                    "same latents for every point; summarise rows of one structure at a time"
                )
            exact = exact and ex
            none = batch[0].new_zeros(len(batch[0]), 0)  # a program without latent sites
            means.append(torch.cat(m, 1) if m else none)
            if kl is None:
                has_kl = False
            elif has_kl:
                kls.append(torch.cat(kl, 1) if kl else none)
            nll, mse = _reconstruction(program, info, batch, raw, vectorize_particles)
            nlls.append(nll)
            mses.append(mse)
    return LatentSummary(
        names,
        torch.cat(means),
        exact,
        torch.cat(kls) if has_kl else None,
        torch.cat(nlls),
        torch.cat(mses),
    )


def kl_per_dimension(program: Any, x: Any) -> torch.Tensor | None:
    """``KL(q(z_j | x) || p(z_j))`` per latent unit, closed form, averaged over the rows: ``(d,)`` nats
    (None where the guide does not factorise over dimensions).

    Examples:
        >>> import torch
        >>> import ppl_vae as pv
        >>> _ = torch.manual_seed(0)
        >>> x = torch.bernoulli(torch.full((20, 6), 0.5), generator=torch.Generator().manual_seed(0))
        >>> vae = pv.VAE(input_dim=6, latent_dim=2, hidden_dims=(8,))
        >>> kl = pv.kl_per_dimension(vae, x)  # closed form for a mean-field guide
        >>> kl.shape, bool((kl >= 0).all())
        (torch.Size([2]), True)
    """
    s = latent_summary(program, x)
    return None if s.kl is None else s.kl.mean(0)


def latent_activity(program: Any, x: Any) -> torch.Tensor:
    """``Var_x(E_q[z_j | x])`` per latent unit, ``(d,)`` (Burda et al., 2015)."""
    return latent_summary(program, x).activity()


def active_units(program: Any, x: Any, threshold: float = 0.01) -> int:
    """Number of units with ``Var_x(E_q[z_j | x]) > threshold`` (0.01, as in Burda et al., 2015).

    Examples:
        >>> import torch
        >>> import ppl_vae as pv
        >>> _ = torch.manual_seed(0)
        >>> x = torch.bernoulli(torch.full((20, 6), 0.5), generator=torch.Generator().manual_seed(0))
        >>> vae = pv.VAE(input_dim=6, latent_dim=2, hidden_dims=(8,))
        >>> 0 <= pv.active_units(vae, x) <= 2
        True
    """
    return latent_summary(program, x).active_units(threshold)


def reconstruction_error(program: Any, x: Any) -> dict[str, torch.Tensor]:
    """Per point, decoding the posterior mean: ``{"nll": -log p(x | E_q z) (nats), "mse": squared error per
    coordinate}``; ``"bce"`` is the ``nll`` (kept for Bernoulli likelihoods' readers)."""
    s = latent_summary(program, x)
    return {"nll": s.recon_nll, "mse": s.recon_mse, "bce": s.recon_nll}
