r"""Hamiltonian Monte Carlo on the annealing path of :mod:`.path_density`, vectorised over chains and points.

HMC with an identity mass matrix, ``L`` leapfrog steps, one Metropolis test per chain and point, and a step
size per point (shared by its chains): :func:`hmc_step` moves every chain one transition that leaves
``f_beta`` invariant; :func:`find_step_size` starts the step size by doubling/halving until a proposal's
acceptance crosses 1/2 (proposals thrown away).

References:
    Neal (2011), MCMC using Hamiltonian dynamics, Handbook of Markov Chain Monte Carlo.
"""

from __future__ import annotations

import math

import torch

from .path_density import Evaluation, PathDensity, State

__all__ = ["find_step_size", "hmc_step"]


def _kinetic(density: PathDensity, p: State) -> torch.Tensor:
    return 0.5 * density.per_point(p, torch.square)


def _leapfrog(
    density: PathDensity,
    u: State,
    p: State,
    ev: Evaluation,
    beta: float,
    eps: torch.Tensor,
    steps: int,
) -> tuple[State, State, Evaluation]:
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


def _log_accept(
    density: PathDensity,
    ev0: Evaluation,
    p0: State,
    ev1: Evaluation,
    p1: State,
    beta: float,
) -> torch.Tensor:
    """log of the Metropolis ratio per chain and point; -inf where it is NaN. A non-finite proposal is refused
    this way: its log-density is not finite, or its gradient, and so the final momentum ``p1``, is not."""
    log_r = (ev1.log_f(beta) - _kinetic(density, p1)) - (ev0.log_f(beta) - _kinetic(density, p0))
    return log_r.nan_to_num(nan=-math.inf, posinf=-math.inf)


def hmc_step(
    density: PathDensity,
    u: State,
    ev: Evaluation,
    beta: float,
    eps: torch.Tensor,
    steps: int,
) -> tuple[State, Evaluation, torch.Tensor]:
    """One HMC transition leaving ``f_beta`` invariant, per chain and point.

    Returns the new state, its evaluation and the acceptance probabilities ``min(1, r)``: ``(C, n)``.
    """
    p0 = {k: torch.randn_like(v) for k, v in u.items()}
    u1, p1, ev1 = _leapfrog(density, u, p0, ev, beta, eps, steps)
    log_r = _log_accept(density, ev, p0, ev1, p1, beta)
    accept = torch.rand_like(log_r).log() < log_r
    new_u = {k: torch.where(density.spread(accept, v), u1[k], v) for k, v in u.items()}

    def pick(a: State, b: State) -> State:
        return {k: torch.where(density.spread(accept, v), v, b[k]) for k, v in a.items()}

    new_ev = Evaluation(
        torch.where(accept, ev1.base, ev.base),
        torch.where(accept, ev1.joint, ev.joint),
        pick(ev1.grad_base, ev.grad_base),
        pick(ev1.grad_joint, ev.grad_joint),
    )
    return new_u, new_ev, log_r.clamp(max=0.0).exp()


def find_step_size(
    density: PathDensity,
    u: State,
    ev: Evaluation,
    beta: float,
    eps: torch.Tensor,
    chains: slice = slice(None),
    rounds: int = 20,
) -> torch.Tensor:
    """A starting step size per point (Hoffman & Gelman 2014, Alg. 4, per point): double or halve ``eps``
    until one leapfrog step's acceptance probability, averaged over the ``chains``, crosses 1/2.

    The proposals are thrown away: the state and its distribution are unchanged.
    """

    def accept(e: torch.Tensor) -> torch.Tensor:
        p0 = {k: torch.randn_like(v) for k, v in u.items()}
        u1, p1, ev1 = _leapfrog(density, u, p0, ev, beta, e, 1)
        return _log_accept(density, ev, p0, ev1, p1, beta).clamp(max=0.0).exp()[chains].mean(0)

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
