r"""Hamiltonian Monte Carlo on the per-point annealing path of any program, vectorised over chains and points.

For one chunk of ``n`` data points and ``C`` chains, :class:`PathDensity` evaluates, at **any** latent
values, the two ends of the geometric path that :mod:`.ais` anneals along,

.. math::

    \log f_\beta(z) = (1 - \beta) \log f_0(z) + \beta \log p(x, z), \qquad
    f_0 = q(z \mid x) \text{ (the guide) or } p(z) \text{ (the prior)},

with their gradients with respect to ``z``. It is generic: the model and the guide are **conditioned** on
the current latent values (``poutine.condition``) under a chain plate left of all their plates, so a guide
whose later sites depend on earlier ones is scored correctly, event shapes and plates nested inside the
data plate keep the program's own shapes, and log-densities are summed per chain and point
(:func:`~ppl_vae.programs.per_point`). Latents with a constrained support are moved in unconstrained space
(``biject_to(support)``, plus ``log |det J|``, which cancels in the AIS weights).

The transitions are HMC with an identity mass matrix, ``L`` leapfrog steps, one Metropolis test per chain
and point, and a step size per point (shared by its chains). One evaluation is one model trace on
``C x n`` rows (the decoder forward and backward) and, for ``f_0 = q``, one guide trace on ``n`` rows.
Gradients are per chain and point because the programs factorise over the data plate and the chain
plate (true for any program whose latents are all local; a batch-coupled layer such as BatchNorm in
training mode would break it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from torch.distributions import biject_to, constraints

from ..errors import ProgramError
from ..programs import DataPlateScale, Program, ProgramInfo, per_point
from .kernels import fast_log_prob

__all__ = ["CHAIN_PLATE", "Evaluation", "PathDensity", "find_step_size", "hmc_step"]

CHAIN_PLATE = "_chains"
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
State = dict[str, torch.Tensor]  # unconstrained latent values per site: (C, ...batch..., event)


@dataclass
class Evaluation:
    """``base = log f_0 + log|det J|`` and ``joint = log p(x, z) + log|det J|``, each ``(C, n)``, with
    their gradients with respect to the unconstrained values (dicts of the state's shapes)."""

    base: torch.Tensor
    joint: torch.Tensor
    grad_base: State
    grad_joint: State

    def log_f(self, beta: float) -> torch.Tensor:
        return self.base + beta * (self.joint - self.base)

    def grad(self, beta: float) -> State:
        return {k: g + beta * (self.grad_joint[k] - g) for k, g in self.grad_base.items()}


def _compact(t: torch.Tensor) -> torch.Tensor:
    """``t`` with its broadcast (stride-0) dims cut to size 1: a guide's ``loc`` expanded over chains is
    ``(C, n, d)`` with stride 0 along C; its log is taken C times less often on the compact view."""
    return t[tuple(slice(0, 1) if st == 0 and sz > 1 else slice(None) for st, sz in zip(t.stride(), t.shape, strict=True))]


def _normal_log_prob(fn: Any, value: torch.Tensor, event_dims: int) -> torch.Tensor:
    """``Normal(loc, scale)`` summed over ``event_dims``: differentiable, ``log scale`` on the compact scale."""
    loc, scale = _compact(fn.loc), _compact(fn.scale)
    quad = ((value - loc) / scale).square()
    log_norm = scale.log() + _HALF_LOG_2PI
    if event_dims:
        dims = tuple(range(-event_dims, 0))
        quad = quad.sum(dims)
        log_norm = log_norm.expand(log_norm.shape[: log_norm.dim() - event_dims] + value.shape[value.dim() - event_dims:])
        log_norm = log_norm.sum(dims)
    return -0.5 * quad - log_norm


def _site_log_prob(site: dict) -> torch.Tensor:
    """A site's log-prob, differentiable: closed forms for ``Bernoulli(logits)`` (one ``softplus``) and
    ``Normal`` (see :func:`_normal_log_prob`), through ``Independent``; the distribution's own ``log_prob``
    otherwise."""
    fn, value = site["fn"], site["value"]
    base, event_dims = fn, 0
    while type(base).log_prob is torch.distributions.Independent.log_prob:
        event_dims += base.reinterpreted_batch_ndims
        base = base.base_dist
    method = type(base).log_prob
    if method is torch.distributions.Bernoulli.log_prob and not value.requires_grad:
        lp = fast_log_prob(fn, value)
        if lp is not None:
            return lp
    if (method is torch.distributions.Normal.log_prob and value.dim() >= event_dims
            and base.loc.dtype == value.dtype and base.scale.dtype == value.dtype):
        lp = _normal_log_prob(base, value, event_dims)
        batch = tuple(fn.batch_shape)
        if tuple(lp.shape) == batch:
            return lp
        if len(lp.shape) <= len(batch):
            return lp.expand(batch)
    return fn.log_prob(value)


def _is_real(support: Any) -> bool:
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real


def _discrete_sites(info: ProgramInfo, sites: dict) -> list[str]:
    found = set(info.non_reparam) | set(info.enumerated) | set(info.model_only)
    found |= {n for n in info.latent if n in sites and sites[n]["fn"].support.is_discrete}
    return sorted(found)


class PathDensity:
    """The annealing path's ends for one chunk: ``batch`` (n rows), ``chains`` C, ``init`` "guide" or "prior".

    Construction samples nothing that is kept; it reads the latent sites' supports from one model trace.
    """

    def __init__(self, program: Program, info: ProgramInfo, batch: tuple[torch.Tensor, ...], chains: int,
                 init: str) -> None:
        self.program, self.info, self.batch, self.chains, self.init = program, info, batch, chains, init
        self.n = len(batch[0])
        self.shape = (chains, self.n)
        model_tr = self._trace(program.model)
        discrete = _discrete_sites(info, model_tr.nodes)
        if discrete:
            raise ProgramError(
                f"annealed importance sampling moves the latents with HMC, which needs continuous latents; "
                f"site(s) {discrete} are discrete (or enumerated): sum them out in the model and guide, or use "
                "iw_log_likelihood (importance sampling from the guide)"
            )
        # A guide with one latent site: its distribution cannot depend on the latent's value, so it is computed
        # once per chunk (without a graph) and scored at every new value (no guide run per evaluation).
        self.guide_site: dict | None = None
        self.transforms: dict[str, Any] = {}
        for name in info.latent:
            support = model_tr.nodes[name]["fn"].support
            self.transforms[name] = None if _is_real(support) else biject_to(support)

    # ------------------------------------------------------------------ program runs
    def _trace(self, fn: Callable, values: dict | None = None) -> poutine.Trace:
        if values is not None:
            fn = poutine.condition(fn, data=values)
        with pyro.plate(CHAIN_PLATE, self.chains, dim=-self.info.rank), DataPlateScale(self.info.data_plate, 1.0):
            return poutine.trace(fn).get_trace(*self.batch)

    def _sum(self, sites: list[dict]) -> torch.Tensor:
        """Sum of the sites' log-probs (scale and mask applied) per chain and point: ``(C, n)``."""
        total = self.batch[0].new_zeros(self.shape)
        for site in sites:
            lp = scale_and_mask(_site_log_prob(site), site["scale"], site["mask"])
            total = total + per_point(lp, self.info)
        return total

    def _guide_log_prob(self, z: dict[str, torch.Tensor]) -> torch.Tensor:
        """``log q(z | x)`` per chain and point, the guide conditioned on ``z``."""
        if self.guide_site is None:
            if len(self.info.latent) != 1:
                trace = self._trace(self.program.guide, z)
                return self._sum([trace.nodes[k] for k in self.info.latent])
            with torch.no_grad():
                self.guide_site = dict(self._trace(self.program.guide, {k: v.detach() for k, v in z.items()})
                                       .nodes[self.info.latent[0]])
        return self._sum([dict(self.guide_site, value=z[self.info.latent[0]])])

    def sample_initial(self) -> dict[str, torch.Tensor]:
        """Latent values ``z ~ f_0`` (constrained), one per chain and point."""
        trace = self._trace(self.program.guide if self.init == "guide" else self.program.model)
        return {name: trace.nodes[name]["value"].detach() for name in self.info.latent}

    def to_unconstrained(self, z: dict[str, torch.Tensor]) -> State:
        return {k: (z[k] if t is None else t.inv(z[k])).detach() for k, t in self.transforms.items()}

    def _constrain(self, leaves: State) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Constrained values and ``log |det J|`` per chain and point."""
        z, log_det = {}, self.batch[0].new_zeros(self.shape)
        for name, t in self.transforms.items():
            if t is None:
                z[name] = leaves[name]
                continue
            z[name] = t(leaves[name])
            ldj = t.log_abs_det_jacobian(leaves[name], z[name])
            extra = ldj.dim() - self.info.rank  # event dims of the site the transform does not sum
            ldj = ldj.sum(tuple(range(-extra, 0))) if extra > 0 else ldj
            log_det = log_det + per_point(ldj, self.info)
        return z, log_det

    def evaluate(self, u: State) -> Evaluation:
        """Both ends and their gradients at the unconstrained values ``u``.

        From the guide, ``f_0`` and ``p`` are scored on two leaf copies of ``u`` so that one backward pass gives
        both gradients; from the prior (both ends from one model run) two passes, the first one cheap.
        """
        info, names = self.info, list(u)
        with torch.enable_grad():
            leaves = {k: v.detach().requires_grad_() for k, v in u.items()}
            z, log_det = self._constrain(leaves)
            model_tr = self._trace(self.program.model, z)
            joint = self._sum([model_tr.nodes[k] for k in info.observed + info.latent]) + log_det
            inputs = [leaves[k] for k in names]
            if self.init == "guide":
                copies = {k: v.detach().requires_grad_() for k, v in u.items()}
                z_q, log_det_q = self._constrain(copies)
                base = self._guide_log_prob(z_q) + log_det_q
                grads = torch.autograd.grad(base.sum() + joint.sum(), [copies[k] for k in names] + inputs,
                                            allow_unused=True)
                g_base, g_joint = grads[: len(names)], grads[len(names):]
            else:
                base = self._sum([model_tr.nodes[k] for k in info.latent]) + log_det
                g_base = torch.autograd.grad(base.sum(), inputs, retain_graph=True, allow_unused=True)
                g_joint = torch.autograd.grad(joint.sum(), inputs, allow_unused=True)

        def fill(grads: tuple) -> State:
            return {k: torch.zeros_like(u[k]) if g is None else g for k, g in zip(names, grads, strict=True)}

        return Evaluation(base.detach(), joint.detach(), fill(g_base), fill(g_joint))

    # ------------------------------------------------------------------ per-point reductions
    def per_point(self, state: State, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``fn`` of every coordinate, summed over each site's event and non-data plate dims: ``(C, n)``."""
        total = self.batch[0].new_zeros(self.shape)
        for v in state.values():
            t = fn(v)
            extra = t.dim() - self.info.rank
            t = t.sum(tuple(range(-extra, 0))) if extra > 0 else t
            total = total + per_point(t, self.info)
        return total

    def spread(self, values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """A ``(n,)`` or ``(C, n)`` tensor viewed so it broadcasts against a state tensor ``like``."""
        shape = [1] * like.dim()
        shape[self.info.data_index] = self.n
        if values.dim() == 2:
            shape[0] = self.chains
        return values.reshape(shape)


# ====================================================================== transitions
def _kinetic(density: PathDensity, p: State) -> torch.Tensor:
    return 0.5 * density.per_point(p, torch.square)


def _leapfrog(density: PathDensity, u: State, p: State, ev: Evaluation, beta: float, eps: torch.Tensor,
              steps: int) -> tuple[State, State, Evaluation]:
    e = {k: density.spread(eps, v) for k, v in u.items()}
    grad = ev.grad(beta)
    p = {k: p[k] + 0.5 * e[k] * grad[k] for k in u}
    for i in range(steps):
        u = {k: u[k] + e[k] * p[k] for k in u}
        ev = density.evaluate(u)
        grad = ev.grad(beta)
        step = e if i < steps - 1 else {k: 0.5 * v for k, v in e.items()}
        p = {k: p[k] + step[k] * grad[k] for k in u}
    return u, p, ev


def _log_accept(density: PathDensity, ev0: Evaluation, p0: State, ev1: Evaluation, p1: State, u1: State,
                beta: float) -> torch.Tensor:
    """log of the Metropolis ratio per chain and point; -inf where the proposal is not finite."""
    log_r = (ev1.log_f(beta) - _kinetic(density, p1)) - (ev0.log_f(beta) - _kinetic(density, p0))
    finite = density.per_point(u1, lambda v: (~torch.isfinite(v)).to(v.dtype)) == 0
    finite &= density.per_point(ev1.grad(beta), lambda v: (~torch.isfinite(v)).to(v.dtype)) == 0
    return torch.where(finite & ~torch.isnan(log_r), log_r, torch.full_like(log_r, -torch.inf))


def hmc_step(density: PathDensity, u: State, ev: Evaluation, beta: float, eps: torch.Tensor, steps: int,
             ) -> tuple[State, Evaluation, torch.Tensor]:
    """One HMC transition leaving ``f_beta`` invariant, per chain and point.

    Returns the new state, its evaluation and the acceptance probabilities ``min(1, r)``: ``(C, n)``.
    """
    p0 = {k: torch.randn_like(v) for k, v in u.items()}
    u1, p1, ev1 = _leapfrog(density, u, p0, ev, beta, eps, steps)
    log_r = _log_accept(density, ev, p0, ev1, p1, u1, beta)
    accept = torch.rand_like(log_r).log() < log_r
    new_u = {k: torch.where(density.spread(accept, v), u1[k], v) for k, v in u.items()}

    def pick(a: State, b: State) -> State:
        return {k: torch.where(density.spread(accept, v), v, b[k]) for k, v in a.items()}

    new_ev = Evaluation(torch.where(accept, ev1.base, ev.base), torch.where(accept, ev1.joint, ev.joint),
                        pick(ev1.grad_base, ev.grad_base), pick(ev1.grad_joint, ev.grad_joint))
    return new_u, new_ev, log_r.clamp(max=0.0).exp()


def find_step_size(density: PathDensity, u: State, ev: Evaluation, beta: float, eps: torch.Tensor,
                   chains: slice = slice(None), rounds: int = 20) -> torch.Tensor:
    """A starting step size per point (Hoffman & Gelman 2014, Alg. 4, per point): double or halve ``eps``
    until one leapfrog step's acceptance probability, averaged over the ``chains``, crosses 1/2.

    The proposals are thrown away: the state and its distribution are unchanged.
    """

    def accept(e: torch.Tensor) -> torch.Tensor:
        p0 = {k: torch.randn_like(v) for k, v in u.items()}
        u1, p1, ev1 = _leapfrog(density, u, p0, ev, beta, e, 1)
        return _log_accept(density, ev, p0, ev1, p1, u1, beta).clamp(max=0.0).exp()[chains].mean(0)

    up = accept(eps) > 0.5
    active = torch.ones_like(up)
    for _ in range(rounds):
        trial = torch.where(up, eps * 2.0, eps * 0.5)
        a = accept(torch.where(active, trial, eps))
        crossed = torch.where(up, a <= 0.5, a > 0.5)
        # going up: keep the last size that was still accepted; going down: take the first that is
        eps = torch.where(active & ~(up & crossed), trial, eps)
        active &= ~crossed
        if not bool(active.any()):
            break
    return eps
