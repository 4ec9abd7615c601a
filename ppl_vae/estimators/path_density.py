r"""The per-point annealing path of any program, evaluated at any latent values with its gradients.

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

The HMC transitions that move along it are in :mod:`.hmc`. One evaluation is one model run on ``C x n``
rows and one backward pass (the decoder forward and backward); Normal latent sites whose parameters are
constants there (a N(0, I) prior; the guide's distribution, computed once per chunk when the guide has one
latent site, since it cannot depend on that site's value) are scored and differentiated in closed form, and
other guides are run at every evaluation. For ppl_vae's own programs the evaluation is captured once per
chunk as an ATen graph (``make_fx``) and replayed: no Pyro or autograd bookkeeping per step, checked
against the eager evaluation first (:data:`FAST_MODES`). Gradients are per chain and point because the
programs factorise over the data plate and the chain plate (true for any program whose latents are all
local; a batch-coupled layer such as BatchNorm in training mode would break it).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from torch.distributions import biject_to, constraints

from .._torch_compat import capture
from ..errors import ProgramError, UserError
from ..models import PURE_PROGRAMS
from ..program_chunks import per_point, site_sets
from ..programs import PerPointScale, Program, ProgramInfo

__all__ = [
    "CHAIN_PLATE",
    "FAST_MODES",
    "Evaluation",
    "PathDensity",
    "State",
    "check_fast",
    "graph_safe",
]

#: ``fast`` modes: "graph" captures one evaluation (the programs, log-densities and gradients) per chunk as an
#: ATen graph with ``make_fx`` and replays it (no Pyro or autograd bookkeeping; checked against the eager
#: evaluation first); "auto" does so for ppl_vae's own programs (no Python side effects between calls);
#: "eager" never.
FAST_MODES = ("auto", "graph", "eager")

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
    return t[
        tuple(
            slice(0, 1) if st == 0 and sz > 1 else slice(None)
            for st, sz in zip(t.stride(), t.shape, strict=True)
        )
    ]


def _normal_log_prob(fn: Any, value: torch.Tensor, event_dims: int) -> torch.Tensor:
    """``Normal(loc, scale)`` summed over ``event_dims``: differentiable, ``log scale`` on the compact scale."""
    loc, scale = _compact(fn.loc), _compact(fn.scale)
    quad = ((value - loc) / scale).square()
    log_norm = scale.log() + _HALF_LOG_2PI
    if event_dims:
        dims = tuple(range(-event_dims, 0))
        quad = quad.sum(dims)
        log_norm = log_norm.expand(
            log_norm.shape[: log_norm.dim() - event_dims] + value.shape[value.dim() - event_dims :]
        )
        log_norm = log_norm.sum(dims)
    return -0.5 * quad - log_norm


def _unwrap(fn: Any) -> tuple[Any, int]:
    """The base distribution under any ``Independent`` wrappers, and the event dims they add."""
    event_dims = 0
    while type(fn).log_prob is torch.distributions.Independent.log_prob:
        event_dims += fn.reinterpreted_batch_ndims
        fn = fn.base_dist
    return fn, event_dims


def _sum_event(t: torch.Tensor, event_dims: int) -> torch.Tensor:
    return t.sum(tuple(range(-event_dims, 0))) if event_dims else t


def _site_log_prob(site: dict, signs: dict) -> torch.Tensor:
    """A site's log-prob, differentiable: closed forms for ``Bernoulli(logits)`` on {0, 1} data (one
    ``softplus``; ``signs`` caches ``1 - 2 x`` per data tensor) and ``Normal`` (see :func:`_normal_log_prob`),
    through ``Independent``; the distribution's own ``log_prob`` otherwise."""
    fn, value = site["fn"], site["value"]
    base, event_dims = _unwrap(fn)
    method = type(base).log_prob
    batch = tuple(fn.batch_shape)
    lp = None
    if method is torch.distributions.Bernoulli.log_prob and not value.requires_grad:
        lp = _bernoulli_log_prob(base, value, event_dims, signs)
    elif (
        method is torch.distributions.Normal.log_prob
        and value.dim() >= event_dims
        and base.loc.dtype == value.dtype
        and base.scale.dtype == value.dtype
    ):
        lp = _normal_log_prob(base, value, event_dims)
    if lp is None or len(lp.shape) > len(batch):
        return fn.log_prob(value)
    return lp if tuple(lp.shape) == batch else lp.expand(batch)


def _bernoulli_log_prob(
    base: Any, value: torch.Tensor, event_dims: int, signs: dict
) -> torch.Tensor | None:
    """``-softplus(logits * (1 - 2 x))`` summed over the event for {0, 1} data given as logits (``signs``
    caches ``1 - 2 x`` per data tensor); None where that form does not apply (probs, other values)."""
    logits = base.__dict__.get("logits")
    cached = signs.get(id(value))
    if cached is None or cached[0] is not value:
        binary = value.is_floating_point() and bool(((value == 0) | (value == 1)).all())
        cached = signs[id(value)] = (value, 1.0 - 2.0 * value if binary else None)
    if logits is not None and cached[1] is not None and logits.dtype == value.dtype:
        return -_sum_event(torch.nn.functional.softplus(logits * cached[1]), event_dims)
    return None


def _closed_normal(site: dict) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(log-prob, its gradient in the value)`` without autograd for a ``Normal`` site whose parameters are
    constants here (a prior N(0, I), a guide's distribution computed once per chunk), unscaled and unmasked;
    None otherwise."""
    base, event_dims = _unwrap(site["fn"])
    scale_ok = isinstance(site["scale"], (int, float)) and site["scale"] == 1.0
    if (
        type(base).log_prob is not torch.distributions.Normal.log_prob
        or site["mask"] is not None
        or not scale_ok
        or base.loc.requires_grad
        or base.scale.requires_grad
    ):
        return None
    value = site["value"].detach()
    loc, scale = _compact(base.loc), _compact(base.scale)
    if loc.dtype != value.dtype or scale.dtype != value.dtype:
        return None
    w = (value - loc) / scale
    lp = _normal_log_prob(base, value, event_dims)
    grad = (-w / scale).expand(value.shape)
    batch = tuple(site["fn"].batch_shape)
    if len(lp.shape) > len(batch) or tuple(grad.shape) != tuple(value.shape):
        return None
    return (lp if tuple(lp.shape) == batch else lp.expand(batch)), grad


def _is_real(support: Any) -> bool:
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real


def _discrete_sites(info: ProgramInfo, sites: dict, latent: tuple[str, ...]) -> list[str]:
    found = set(info.non_reparam) | set(info.enumerated) | set(info.model_only)
    found |= {n for n in latent if n in sites and sites[n]["fn"].support.is_discrete}
    return sorted(found)


def graph_safe(program: Program) -> bool:
    """ppl_vae's own programs (registered functions, every submodule from torch or ppl_vae): no Python side
    effects between calls, so a captured evaluation replays them faithfully."""
    funcs = (
        getattr(program.model, "__func__", program.model),
        getattr(program.guide, "__func__", program.guide),
    )
    if not all(f in PURE_PROGRAMS for f in funcs) or program.module is None:
        return False
    return all(
        type(m).__module__.startswith(("torch.", "ppl_vae.")) for m in program.module.modules()
    )


def check_fast(fast: Any) -> None:
    if fast not in FAST_MODES:
        raise UserError(f"fast must be one of {', '.join(map(repr, FAST_MODES))}; got {fast!r}")


class PathDensity:
    """The annealing path's ends for one chunk: ``batch`` (n rows), ``chains`` C, ``init`` "guide" or "prior".

    Construction samples nothing that is kept; it reads the latent sites' supports from one model trace.
    """

    def __init__(
        self,
        program: Program,
        info: ProgramInfo,
        batch: tuple[torch.Tensor, ...],
        chains: int,
        init: str,
        fast: str = "eager",
    ) -> None:
        self.program, self.info, self.batch, self.chains, self.init = (
            program,
            info,
            batch,
            chains,
            init,
        )
        self.fast = ("graph" if graph_safe(program) else "eager") if fast == "auto" else fast
        self.graph: Callable | None = None
        self.names: list[str] = []
        self.n = len(batch[0])
        self.shape = (chains, self.n)
        early = sorted(set(info.non_reparam) | set(info.enumerated) | set(info.model_only))
        if early:
            raise ProgramError(
                f"annealed importance sampling moves the latents with HMC, which needs continuous latents; "
                f"site(s) {early} are discrete (or enumerated): sum them out in the model and guide, or use "
                "iw_log_likelihood (importance sampling from the guide)"
            )
        model_tr = self._trace(program.model)
        # this chunk's own sites (a program's sites may depend on the batch: Pyro's DMM)
        self.observed, self.latent, _ = site_sets(
            model_tr, self._trace(program.guide if init == "guide" else program.model), info
        )
        discrete = _discrete_sites(info, model_tr.nodes, self.latent)
        if discrete:
            raise ProgramError(
                f"annealed importance sampling moves the latents with HMC, which needs continuous latents; "
                f"site(s) {discrete} are discrete (or enumerated): sum them out in the model and guide, or use "
                "iw_log_likelihood (importance sampling from the guide)"
            )
        # A guide with one latent site: its distribution cannot depend on the latent's value, so it is computed
        # once per chunk (without a graph) and scored at every new value (no guide run per evaluation).
        self.guide_site: dict | None = None
        self.signs: dict = {}  # 1 - 2 x for {0, 1} data scored by Bernoulli(logits), per data tensor
        self.transforms: dict[str, Any] = {}
        for name in self.latent:
            support = model_tr.nodes[name]["fn"].support
            self.transforms[name] = None if _is_real(support) else biject_to(support)

    # ------------------------------------------------------------------ program runs
    def _trace(self, fn: Callable, values: dict | None = None) -> poutine.Trace:
        if values is not None:
            fn = poutine.condition(fn, data=values)
        with (
            pyro.plate(CHAIN_PLATE, self.chains, dim=-self.info.rank),
            PerPointScale(),
        ):
            return poutine.trace(fn).get_trace(*self.batch)

    def _sum(self, sites: list[dict]) -> torch.Tensor:
        """Sum of the sites' log-probs (scale and mask applied) per chain and point: ``(C, n)``."""
        total = self.batch[0].new_zeros(self.shape)
        for site in sites:
            lp = scale_and_mask(_site_log_prob(site, self.signs), site["scale"], site["mask"])
            total = total + per_point(lp, self.info)
        return total

    def _guide_closed(self, z: dict[str, torch.Tensor]) -> tuple[torch.Tensor, State] | None:
        """The one-site guide's log-density and gradient in closed form (see :meth:`_closed`), or None."""
        if len(self.latent) != 1:
            return None
        name = self.latent[0]
        if self.guide_site is None:
            self._guide_log_prob({k: v.detach() for k, v in z.items()})
        return self._closed([dict(self.guide_site, value=z[name], name=name)])

    def _guide_log_prob(self, z: dict[str, torch.Tensor]) -> torch.Tensor:
        """``log q(z | x)`` per chain and point, the guide conditioned on ``z``."""
        if self.guide_site is None:
            if len(self.latent) != 1:
                trace = self._trace(self.program.guide, z)
                return self._sum([trace.nodes[k] for k in self.latent])
            with torch.no_grad():
                self.guide_site = dict(
                    self._trace(self.program.guide, {k: v.detach() for k, v in z.items()}).nodes[
                        self.latent[0]
                    ]
                )
        return self._sum([dict(self.guide_site, value=z[self.latent[0]])])

    def sample_initial(self) -> dict[str, torch.Tensor]:
        """Latent values ``z ~ f_0`` (constrained), one per chain and point."""
        trace = self._trace(self.program.guide if self.init == "guide" else self.program.model)
        return {name: trace.nodes[name]["value"].detach() for name in self.latent}

    def to_unconstrained(self, z: dict[str, torch.Tensor]) -> State:
        return {
            k: (z[k] if t is None else t.inv(z[k])).detach() for k, t in self.transforms.items()
        }

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

    def _closed(self, sites: list[dict]) -> tuple[torch.Tensor, State] | None:
        """Closed-form log-probs (per chain and point) and gradients of latent sites on real supports, when
        :func:`_closed_normal` applies to every one of them; else None (autograd takes them)."""
        total, grads = self.batch[0].new_zeros(self.shape), {}
        for site in sites:
            closed = _closed_normal(site) if self.transforms[site["name"]] is None else None
            if closed is None:
                return None
            total = total + per_point(closed[0], self.info)
            grads[site["name"]] = closed[1]
        return total, grads

    def evaluate(self, u: State) -> Evaluation:
        """Both ends and their gradients at the unconstrained values ``u`` (through the captured graph once
        there is one: see :data:`FAST_MODES`)."""
        if self.fast == "graph":
            self._capture(u)
        if self.graph is None:
            return self._evaluate(u)
        m = len(self.names)
        with torch.no_grad():
            out = self.graph(*[u[k] for k in self.names])
        return Evaluation(
            out[0],
            out[1],
            dict(zip(self.names, out[2 : 2 + m], strict=True)),
            dict(zip(self.names, out[2 + m :], strict=True)),
        )

    def _capture(self, u: State) -> None:
        """Capture :meth:`_evaluate` for ``u``'s shapes (once per chunk), check it, or say why not and stay eager."""
        self.fast, self.names = "eager", list(u)  # one attempt per chunk

        def flat(*values: torch.Tensor) -> tuple[torch.Tensor, ...]:
            ev = self._evaluate(dict(zip(self.names, values, strict=True)))
            return (
                ev.base,
                ev.joint,
                *[ev.grad_base[k] for k in self.names],
                *[ev.grad_joint[k] for k in self.names],
            )

        values = [u[k] for k in self.names]
        eager = flat(
            *values
        )  # also fills the caches the graph reads (the guide's distribution, 1 - 2 x)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                graph = capture(flat, *values)
            with torch.no_grad():
                out = graph(*values)
            same = all(
                a.shape == b.shape
                and bool(torch.isclose(a, b, rtol=1e-4, atol=1e-4, equal_nan=True).all())
                for a, b in zip(out, eager, strict=True)
            )
            problem = None if same else "its numbers differ from the eager evaluation's"
        except Exception as err:  # noqa: BLE001 - data-dependent Python, unsupported ops: stay eager, say so
            problem = f"{type(err).__name__}: {str(err).strip()[:200]}"
        if problem is not None:
            warnings.warn(
                f"ppl_vae AIS: could not capture the log-density evaluation as a graph ({problem}); "
                "running it eagerly (same numbers, slower; fast='eager' skips the attempt)",
                RuntimeWarning,
                stacklevel=5,
            )
            return
        self.graph = graph

    def _evaluate(self, u: State) -> Evaluation:
        """Both ends and their gradients at ``u``, through the programs (eager).

        One backward pass through the model per evaluation. Normal latent sites with constant parameters (a
        N(0, I) prior, a one-site guide's distribution) are scored and differentiated in closed form; other
        guides are scored on a second leaf copy of ``u`` so that the same backward pass gives both gradients.
        """
        names = list(u)
        zero = {k: torch.zeros_like(v) for k, v in u.items()}

        def add(a: State, b: State) -> State:
            return {k: a[k] + b[k] if k in b else a[k] for k in a}

        def fill(grads: tuple) -> State:
            return {k: zero[k] if g is None else g for k, g in zip(names, grads, strict=True)}

        with torch.enable_grad():
            leaves = {k: v.detach().requires_grad_() for k, v in u.items()}
            inputs = [leaves[k] for k in names]
            z, log_det = self._constrain(leaves)
            model_tr = self._trace(self.program.model, z)
            prior = self._closed([model_tr.nodes[k] for k in self.latent])
            observed = self._sum([model_tr.nodes[k] for k in self.observed]) + log_det
            if prior is None:  # autograd for the prior terms too
                observed = observed + self._sum([model_tr.nodes[k] for k in self.latent])
                prior = (observed.new_zeros(self.shape), {})
            if self.init == "prior":
                if not prior[
                    1
                ]:  # base = the prior terms, through autograd: a second (cheap) pass first
                    base = self._sum([model_tr.nodes[k] for k in self.latent]) + log_det
                    g_base = fill(
                        torch.autograd.grad(
                            base.sum(), inputs, retain_graph=True, allow_unused=True
                        )
                    )
                else:
                    base, g_base = prior[0] + log_det.detach(), add(zero, prior[1])
                g_joint = add(
                    fill(torch.autograd.grad(observed.sum(), inputs, allow_unused=True)), prior[1]
                )
                joint = observed.detach() + prior[0]
                return Evaluation(base.detach(), joint, g_base, g_joint)
            guide = self._guide_closed(z)
            if guide is not None:
                base, g_base = guide[0], add(zero, guide[1])
                g_obs = fill(torch.autograd.grad(observed.sum(), inputs, allow_unused=True))
            else:
                copies = {k: v.detach().requires_grad_() for k, v in u.items()}
                z_q, log_det_q = self._constrain(copies)
                base = self._guide_log_prob(z_q) + log_det_q
                grads = torch.autograd.grad(
                    base.sum() + observed.sum(),
                    [copies[k] for k in names] + inputs,
                    allow_unused=True,
                )
                g_base, g_obs = fill(grads[: len(names)]), fill(grads[len(names) :])
        return Evaluation(base.detach(), observed.detach() + prior[0], g_base, add(g_obs, prior[1]))

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
