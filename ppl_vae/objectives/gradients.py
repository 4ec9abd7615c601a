r"""Lower-variance encoder gradients: sticking the landing (STL) and doubly reparameterised (DReG).

Both are objective parameters, ``trace:grad=stl``, ``iwae:k=K,grad=stl`` and ``iwae:k=K,grad=dreg``: the
bound (the loss's value) and the decoder's gradient are those of ``trace``/``iwae``; only the gradient
that reaches the guide's parameters :math:`\phi` changes.

**The maths.** With :math:`z_k = g_\phi(\epsilon_k, x)` reparameterised and
:math:`\log w_k = \log p_\theta(x, z_k) - \log q_\phi(z_k \mid x)`, the reparameterised gradient of a bound
has a *path* term through :math:`z_k` and a *direct* term through :math:`\phi` inside :math:`\log q_\phi`:

.. math::

    \nabla_\phi \log w_k = \frac{\partial \log w_k}{\partial z_k}\frac{\partial z_k}{\partial \phi}
    - \frac{\partial \log q_\phi(z_k \mid x)}{\partial \phi}.

* **STL** (Roeder, Wu & Duvenaud, 2017) drops the direct term: for the ELBO,
  :math:`\mathbb{E}_q[\nabla_\phi \log q_\phi(z)] = 0` (the score has mean zero), so the estimator
  :math:`\frac{1}{K}\sum_k \frac{\partial \log w_k}{\partial z_k}\frac{\partial z_k}{\partial \phi}` stays
  unbiased, and its variance vanishes as q approaches the posterior. For the IWAE bound the direct term
  is weighted by :math:`\tilde w_k = w_k / \sum_j w_j` and does *not* have mean zero, so
  ``iwae:grad=stl`` (:math:`\sum_k \tilde w_k\, \partial_z \log w_k\, \partial_\phi z_k`) is biased (Tucker et
  al., 2018, section 3); it is offered for comparison.
* **DReG** (Tucker, Lawson, Gu & Maddison, 2018) rewrites the direct term of the IWAE gradient with a
  second reparameterisation, :math:`\mathbb{E}[\sum_k \tilde w_k \nabla_\phi \log q] =
  \mathbb{E}[\sum_k (\tilde w_k - \tilde w_k^2)\, \partial_z \log w_k\, \partial_\phi z_k]`, which gives the
  unbiased :math:`\sum_k \tilde w_k^2\, \frac{\partial \log w_k}{\partial z_k}\frac{\partial z_k}{\partial \phi}`.

**How (any reparameterised guide).** The guide runs once under a particle plate (``z`` drawn with
``rsample``, with its graph to :math:`\phi`); the latent values are copied into leaves :math:`z'`
(detached, requiring grad); the model is replayed at :math:`z'` and the guide's densities are evaluated
at :math:`z'` (the drawn site's own distribution for a one-site guide; the guide replayed at :math:`z'`
when sites depend on each other, so :math:`\partial \log q(z_2 \mid z_1) / \partial z_1` is included).
Then :math:`G = \partial/\partial z' \sum_{k,n} c_{kn} \log w_{kn}` with weights :math:`c` held fixed
(:math:`1/K` for the ELBO, :math:`\tilde w` for STL-IWAE, :math:`\tilde w^2` for DReG) and the loss is

.. math::

    -s \Big[\sum_n \mathrm{bound}_n\big(\log p_\theta(x, z') - \mathrm{sg}(\log q_\phi(z'))\big)
    + \sum \mathrm{sg}(G) \cdot (z - \mathrm{sg}(z))\Big],

whose value is the bound (the second term is zero), whose :math:`\theta`-gradient is the usual one (z
fixed) and whose :math:`\phi`-gradient is :math:`s \sum \mathrm{sg}(G)\, \partial z / \partial \phi`; ``s`` is the
data scale (N/|B| in training), applied outside the log-mean-exp as in :mod:`.renyi`. Cost: the
decoder is differentiated twice (about 1.5-2x a plain step); for an IAF guide, scoring :math:`z'`
inverts the flow (d passes per step).

References:
    Roeder, Wu & Duvenaud (2017), Sticking the Landing: Simple, Lower-Variance Gradient Estimators for
    Variational Inference, NeurIPS.
    Tucker, Lawson, Gu & Maddison (2018), Doubly Reparameterized Gradient Estimators for Monte Carlo
    Objectives, arXiv:1810.04152 (ICLR 2019).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer.util import get_dependent_plate_dims, torch_sum
from pyro.poutine.util import site_is_subsample

from ..errors import ProgramError, UserError
from .renyi import flush_subnormal, log_mean_exp

__all__ = ["GRADIENTS", "PathwiseELBO", "check_grad"]

#: Values of an objective's ``grad`` parameter: the plain reparameterised gradient, STL, DReG.
GRADIENTS = ("reparam", "stl", "dreg")
_PLATE = "_pathwise_particles"


def check_grad(name: str, grad: Any) -> None:
    """Refuse a ``grad`` value the objective ``name`` does not have (DReG is for the IWAE bound)."""
    if grad not in GRADIENTS:
        raise UserError(
            f"objective {name!r}: grad must be one of {', '.join(GRADIENTS)} (reparam: the plain "
            f"reparameterised gradient; stl: sticking the landing; dreg: doubly reparameterised); "
            f"got {grad!r}"
        )
    if grad == "dreg" and name != "iwae":
        raise UserError(
            f"objective {name!r}: grad=dreg is the doubly reparameterised gradient of the IWAE bound; "
            "for the ELBO its weights are 1 and it is STL: use grad=stl, or iwae:k=K,grad=dreg"
        )


class PathwiseELBO:
    """The ELBO (``bound="elbo"``, mean over K particles) or the IWAE bound (``bound="iwae"``) with an STL or
    DReG gradient for the guide (see the module docstring). Has Pyro's ELBO interface: ``loss``,
    ``differentiable_loss``, ``loss_and_grads``, plus ``per_point_bound``."""

    def __init__(
        self, bound: str, grad: str, num_particles: int = 1, max_plate_nesting: int = 1
    ) -> None:
        if (
            bound not in ("elbo", "iwae")
            or grad not in ("stl", "dreg")
            or (bound, grad) == ("elbo", "dreg")
        ):
            raise ValueError(f"PathwiseELBO: no {grad!r} gradient for the {bound!r} bound")
        self.bound, self.grad = bound, grad
        self.num_particles = int(num_particles)
        self.max_plate_nesting = int(max_plate_nesting)

    def __repr__(self) -> str:
        return f"PathwiseELBO(bound={self.bound!r}, grad={self.grad!r}, num_particles={self.num_particles})"

    # ---------------------------------------------------------------- the program
    def check_program(self, info: Any, name: str) -> None:
        """Refuse programs this gradient cannot train (called by ``Objective.bind``)."""
        if info.non_reparam:
            raise ProgramError(
                f"objective {name!r} differentiates log w with respect to z; guide site(s) "
                f"{sorted(info.non_reparam)} have no rsample (discrete): use 'trace' or 'enum'"
            )
        if info.model_only or info.enumerated:
            raise ProgramError(
                f"objective {name!r} does not sum out enumerated sites "
                f"({sorted(set(info.model_only) | set(info.enumerated))}): use 'enum'"
            )
        if info.guide_aux:
            raise ProgramError(
                f"objective {name!r} needs a guide without auxiliary sites; got {sorted(info.guide_aux)}"
            )

    # ---------------------------------------------------------------- log weights
    def _terms(
        self,
        model: Callable,
        guide: Callable,
        args: tuple,
        kwargs: dict,
        pathwise: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor], Any]:
        """``(log_p, log_q, leaves, values, data_scale)``: per-particle (and per-point) unscaled log p(x, z') and
        log q(z'), the leaves z' (empty unless ``pathwise``) and the drawn z (with their graph to the guide)."""
        dim = -(self.max_plate_nesting + 1)
        guide_tr, guide_sites, latent = self._guide_draws(guide, args, kwargs, dim)
        values: dict[str, torch.Tensor] = {n: guide_sites[n]["value"] for n in latent}
        leaves = {n: v.detach().requires_grad_() for n, v in values.items()} if pathwise else {}
        at = leaves or values
        replay_tr = poutine.Trace()
        for n in latent:
            replay_tr.add_node(n, **{**guide_tr.nodes[n], "value": at[n]})
        with pyro.plate(_PLATE, self.num_particles, dim=dim):
            model_tr = poutine.trace(poutine.replay(model, trace=replay_tr)).get_trace(
                *args, **kwargs
            )
            q_sites = guide_sites
            if pathwise and len(latent) > 1:  # q(z2 | z1) must see z1' to give d log q / d z1'
                q_sites = _sites(
                    poutine.trace(poutine.replay(guide, trace=replay_tr)).get_trace(*args, **kwargs)
                )
        model_sites = list(_sites(model_tr).values())
        data_scale = self._data_scale(model_sites)
        sum_dims = get_dependent_plate_dims(model_sites)
        log_p = _total(model_sites, [s["value"] for s in model_sites], data_scale, sum_dims)
        log_q = _total([q_sites[n] for n in latent], [at[n] for n in latent], data_scale, sum_dims)
        if not torch.is_tensor(log_p) or not torch.is_tensor(log_q):
            raise ProgramError("the model and guide have no latent sample sites: nothing to weight")
        log_p, log_q = torch.broadcast_tensors(log_p, log_q)
        return log_p, log_q, leaves, values, data_scale

    def _guide_draws(
        self, guide: Callable, args: tuple, kwargs: dict, dim: int
    ) -> tuple[poutine.Trace, dict[str, dict[str, Any]], list[str]]:
        """The guide run under the particle plate: its trace, sample sites and latent names (each
        reparameterised, else a ProgramError naming it)."""
        with pyro.plate(_PLATE, self.num_particles, dim=dim):
            guide_tr = poutine.trace(guide).get_trace(*args, **kwargs)
        guide_sites = _sites(guide_tr)
        latent = [n for n, s in guide_sites.items() if not s["is_observed"]]
        for n in latent:
            if not getattr(guide_sites[n]["fn"], "has_rsample", False):
                raise ProgramError(
                    f"grad={self.grad} needs a reparameterised guide; site {n!r} draws from "
                    f"{type(guide_sites[n]['fn']).__name__}, which has no rsample"
                )
        return guide_tr, guide_sites, latent

    def _data_scale(self, model_sites: list[dict[str, Any]]) -> Any:
        """The scale on the observed sites (the trainer's N/|B|): one number, divided out of every term."""
        obs_scales = [s["scale"] for s in model_sites if s["is_observed"]]
        data_scale = obs_scales[0] if obs_scales else 1.0
        if torch.is_tensor(data_scale) and data_scale.numel() != 1:
            raise ProgramError(
                f"grad={self.grad} needs a scalar scale on the observed sites; got shape "
                f"{tuple(data_scale.shape)}"
            )
        return data_scale

    def _bound(self, log_w: torch.Tensor) -> torch.Tensor:
        if self.bound == "elbo":
            return log_w.mean(0)
        return log_mean_exp(log_w, dim=0)

    def _weights(self, log_w: torch.Tensor) -> torch.Tensor:
        if self.bound == "elbo":
            return torch.full_like(log_w, 1.0 / self.num_particles)
        normalised = torch.softmax(log_w, dim=0)
        return flush_subnormal(
            normalised if self.grad == "stl" else normalised.pow(2)
        )  # see .renyi

    # ---------------------------------------------------------------- losses
    def differentiable_loss(
        self, model: Callable, guide: Callable, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """``-s (sum_n bound_n + surrogate)``: the bound's value, the decoder's usual gradient, the guide's
        STL/DReG gradient (under ``torch.no_grad`` only the value)."""
        pathwise = torch.is_grad_enabled()
        log_p, log_q, leaves, values, data_scale = self._terms(model, guide, args, kwargs, pathwise)
        bound = self._bound(log_p - log_q.detach()).sum()
        if not pathwise:
            return -bound * data_scale
        log_w = log_p - log_q
        weights = self._weights(log_w.detach())
        names = list(leaves)
        grads = torch.autograd.grad(
            (weights * log_w).sum(),
            [leaves[n] for n in names],
            retain_graph=True,
            allow_unused=True,
        )
        surrogate: Any = 0.0
        for n, g in zip(names, grads, strict=True):
            if g is not None and values[n].requires_grad:
                surrogate = surrogate + (g.detach() * (values[n] - values[n].detach())).sum()
        return -(bound + surrogate) * data_scale

    def per_point_bound(
        self, model: Callable, guide: Callable, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """The bound per data point, ``(B,)`` nats, unscaled (no surrogate)."""
        with torch.no_grad():
            log_p, log_q, _, _, _ = self._terms(model, guide, args, kwargs, False)
        return self._bound(log_p - log_q)

    @torch.no_grad()
    def loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward()
        return float(loss.detach())


def _sites(trace: poutine.Trace) -> dict[str, dict[str, Any]]:
    """The sample sites of a trace (no plates' subsample sites), as plain dicts."""
    return {
        n: cast("dict[str, Any]", s)
        for n, s in trace.nodes.items()
        if s["type"] == "sample" and not site_is_subsample(s)
    }


def _total(
    sites: list[dict[str, Any]], values: list[torch.Tensor], data_scale: Any, sum_dims: Any
) -> Any:
    """``sum_s scale_s / data_scale * log p_s(value_s)`` over the sites, summed over their dependent plate
    dims (0.0 when every term is identically zero)."""
    out: Any = 0.0
    for site, value in zip(sites, values, strict=True):
        lp = site["fn"].log_prob(value)
        term = scale_and_mask(lp, site["scale"] / data_scale, site["mask"])
        if not is_identically_zero(term):
            out = out + torch_sum(term, sum_dims)
    return out
