r"""Training objectives: names (with parameters) -> Pyro ELBOs.

An objective is named by a string ``"name"`` or ``"name:key=value,key=value"``,
the same in Python and on the command line (``iwae:k=5``, ``analytic:beta=4``,
``trace:anneal=10``):

================  ==================================  ==============================================
name              Pyro estimator                       the bound, per data point
================  ==================================  ==============================================
``trace``         ``Trace_ELBO``                       E_q[log p(x, z) - log q(z | x)], all terms sampled
``analytic``      ``TraceMeanField_ELBO``              E_q[log p(x | z)] - KL(q(z | x) || p(z)), KL in
                                                       closed form: 1/2 sum_j (s_j^2 + m_j^2 - 1 - log s_j^2)
``jit_trace``     :class:`CachedJitTrace_ELBO`         as ``trace``, compiled with ``torch.jit.trace``
``jit_analytic``  :class:`CachedJitTraceMeanField_ELBO` as ``analytic``, compiled
``iwae``          ``RenyiELBO(alpha=0)``               E[log 1/K sum_k w_k],  w_k = p(x, z_k) / q(z_k | x)
``renyi``         ``RenyiELBO(alpha)``                 1/(1-a) E[log 1/K sum_k w_k^(1-a)]
================  ==================================  ==============================================

**Same bound, different noise.** ``trace`` and ``analytic`` estimate the same ELBO;
the analytic KL removes the Monte Carlo noise of the KL term, so its gradient
estimator has lower variance (Kingma & Welling, 2014, eq. 10).

**Importance weighting** (Burda et al., 2015). With K samples ``z_k ~ q(z | x)``,

.. math::

    \mathcal{L}_K(x) = \mathbb{E}\Big[\log \frac{1}{K} \sum_{k=1}^K w_k\Big]
    \le \log p(x), \qquad \mathcal{L}_1 = \mathrm{ELBO} \le \mathcal{L}_K \le \mathcal{L}_{K+1},

and :math:`\mathcal{L}_K \to \log p(x)` as K grows. The Rényi bound of order
:math:`\alpha` (Li & Turner, 2016) is
:math:`\mathcal{L}_\alpha = \frac{1}{1-\alpha}\mathbb{E}\log\frac{1}{K}\sum_k w_k^{1-\alpha}`;
:math:`\alpha = 0` is the IWAE bound, :math:`\alpha \to 1` the ELBO. Pyro's
``RenyiELBO`` in pyro-ppl 1.9.2 has no ``differentiable_loss``, and its ``loss``
multiplies the *log* weights by any ``poutine.scale`` around it, which is not what a
mini-batch scale should do (``log mean exp(c a) != c log mean exp(a)``).
:class:`VectorizedRenyiELBO` computes the same number from unscaled per-point log
weights and applies the data scale *outside* the log-mean-exp, so mini-batch
training is an unbiased estimate of the sum of per-point bounds.

**β and annealing.** Every ELBO objective takes ``beta`` (float, default 1) and a
linear warm-up of the KL weight from 0 to β: ``anneal=E`` over the first E epochs or
``anneal_steps=S`` over the first S optimiser steps,

.. math::

    \mathcal{L}_\beta = \mathbb{E}_q[\log p(x \mid z)] - \beta\, \mathrm{KL}(q(z \mid x) \,\|\, p(z)),
    \qquad \beta_t = \beta \min(1, t / T).

β > 1 is the β-VAE (Higgins et al., 2017); the warm-up is KL annealing (Bowman et
al., 2016). The weight is applied by :class:`scale_latents` (``poutine.scale`` on the
latent sites in model *and* guide), which the trainer wraps around the loss, so it
works for both ``Trace_ELBO`` (scales log p(z) - log q(z)) and ``TraceMeanField_ELBO``
(scales the closed-form KL).

**JIT.** Pyro's ``JitTrace_ELBO``/``JitTraceMeanField_ELBO`` (pyro-ppl 1.9.2) key their
compile cache on the number of arguments, ``id(model)`` and kwargs: a bound method
``vae.model`` is a new object on every attribute access, ``JitTraceMeanField_ELBO``
stores its compiled function under another name than the one it tests (so it calls
``torch.jit.trace`` on every step), and any ``poutine.scale`` active at trace time is
frozen into the graph (the mini-batch scale N/B of the first batch is reused for a
smaller last batch, and an annealed KL weight stays at its first value).
:class:`CachedJitTrace_ELBO` and :class:`CachedJitTraceMeanField_ELBO` compile once per
(model, guide, input shapes), and pass the scales of observed and latent sites as
tensor inputs to the compiled graph.

References:
    Kingma & Welling (2014), Auto-Encoding Variational Bayes.
    Burda, Grosse & Salakhutdinov (2015), Importance Weighted Autoencoders.
    Li & Turner (2016), Rényi Divergence Variational Inference.
    Higgins et al. (2017), beta-VAE: Learning Basic Visual Concepts with a Constrained
    Variational Framework.
    Bowman et al. (2016), Generating Sentences from a Continuous Space.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyro
import pyro.ops.jit
import pyro.poutine as poutine
import torch
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer import ELBO, RenyiELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.util import get_dependent_plate_dims, torch_sum
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.scale_messenger import ScaleMessenger
from pyro.poutine.trace_messenger import TraceMessenger


@dataclass(frozen=True)
class ObjectiveSpec:
    """A registered objective: its factory and the parameters it accepts (name -> default)."""

    name: str
    factory: Callable[..., ELBO]
    params: dict[str, Any]
    doc: str


#: Parameters of the KL-weight schedule, read by :meth:`Objective.kl_weight`.
SCHEDULE_PARAMS: dict[str, Any] = {"beta": 1.0, "anneal": 0, "anneal_steps": 0}


def kl_schedule(step: int, epoch: int, beta: float = 1.0, anneal: int = 0, anneal_steps: int = 0) -> float:
    """The KL weight at a training step: ``beta * min(1, t / T)`` during a linear warm-up.

    Args:
        step: optimiser steps taken before this one (0 for the first step).
        epoch: the current epoch, counted from 1.
        beta: the weight after the warm-up (1: the plain ELBO; > 1: beta-VAE).
        anneal: warm-up length in epochs (0: none). Epoch ``e`` gets ``beta * min(1, (e - 1) / anneal)``:
            0 in the first epoch, ``beta`` from epoch ``anneal + 1`` on.
        anneal_steps: warm-up length in steps (0: none): ``beta * min(1, step / anneal_steps)``.
    """
    if anneal and anneal_steps:
        raise ValueError(f"choose one warm-up: anneal={anneal} (epochs) or anneal_steps={anneal_steps}, not both")
    if anneal_steps:
        return beta * min(1.0, step / anneal_steps)
    if anneal:
        return beta * min(1.0, max(epoch - 1, 0) / anneal)
    return beta


@dataclass
class Objective:
    """A parsed objective: the Pyro ELBO plus the parameters it was built with.

    ``loss(model, guide, x)`` is the differentiable negative bound (nats, summed over
    the batch and scaled by any ``poutine.scale`` the caller applies).
    ``kl_weight(step, epoch)`` is the weight the trainer puts on the latent sites
    (see :func:`kl_schedule`; 1.0 for objectives without ``beta``/``anneal``).
    """

    name: str
    params: dict[str, Any]
    elbo: ELBO = field(repr=False)

    @property
    def spec(self) -> str:
        """The canonical string that rebuilds this objective."""
        return format_objective(self.name, self.params)

    def loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.elbo.differentiable_loss(model, guide, *args, **kwargs)

    def kl_weight(self, step: int, epoch: int) -> float:
        """Weight on the KL term at a training step (1.0: the plain ELBO)."""
        schedule = {k: self.params[k] for k in SCHEDULE_PARAMS if k in self.params}
        return kl_schedule(step, epoch, **schedule) if schedule else 1.0


class scale_latents(Messenger):  # noqa: N801 - used like poutine.scale
    """Multiply the log-density scale of every *latent* sample site by ``weight``.

    Applied around an ELBO call it scales ``log p(z)`` in the model and ``log q(z | x)``
    in the guide (or the closed-form KL, which ``TraceMeanField_ELBO`` scales by the
    guide site's scale), leaving ``log p(x | z)`` alone: the KL term of the ELBO is
    multiplied by ``weight``, as in the beta-VAE (Higgins et al., 2017) and KL annealing.
    """

    def __init__(self, weight: float) -> None:
        if not weight >= 0:
            raise ValueError(f"KL weight must be >= 0; got {weight!r}")
        super().__init__()
        self.weight = weight

    def _process_message(self, msg: dict[str, Any]) -> None:
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.weight * msg["scale"]


# --------------------------------------------------------------------------- Rényi / IWAE


class VectorizedRenyiELBO(RenyiELBO):
    r"""``RenyiELBO`` with vectorised particles, per-point bounds and a ``differentiable_loss``.

    For a batch ``x: (B, D)`` and K particles, the per-point log weights are
    ``log w[k, n] = log p(x_n | z_kn) + r (log p(z_kn) - log q(z_kn | x_n))`` (unscaled;
    ``r`` is the ratio of a latent site's scale to the observed sites' scale, i.e. a KL
    weight applied by :class:`scale_latents`), the per-point bound is
    ``L_n = 1/(1-a) log mean_k exp((1-a) log w[k, n])``, and the loss is
    ``-s sum_n L_n`` with ``s`` the scale of the observed sites (the trainer's N/B).
    Without any scale the value equals ``RenyiELBO.loss`` on the same random numbers;
    the gradient equals the one ``RenyiELBO.loss_and_grads`` builds for reparameterised
    guides (normalised weights times the gradients of the log weights).

    Needs ``max_plate_nesting`` (the data plate is dim -1 by default) and a guide whose
    latent sites are reparameterisable.
    """

    def __init__(self, alpha: float = 0.0, num_particles: int = 2, max_plate_nesting: int = 1) -> None:
        super().__init__(
            alpha=alpha, num_particles=num_particles, max_plate_nesting=max_plate_nesting,
            vectorize_particles=True,
        )

    def _log_weights(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> tuple[torch.Tensor, Any, bool]:
        """Unscaled log weights ``(K, B)`` (or ``(K,)`` without a per-point plate), the data scale, per-point flag."""
        (model_trace, guide_trace), = self._get_traces(model, guide, args, kwargs)
        obs_scales = [site["scale"] for site in model_trace.nodes.values()
                      if site["type"] == "sample" and site["is_observed"]]
        data_scale = obs_scales[0] if obs_scales else 1.0
        for s in obs_scales[1:]:
            if not _same_scale(s, data_scale):
                raise ValueError(
                    "VectorizedRenyiELBO needs one scale on all observed sites (the mini-batch scale); "
                    f"got {s!r} and {data_scale!r}"
                )
        if torch.is_tensor(data_scale) and data_scale.numel() != 1:
            raise ValueError(
                f"VectorizedRenyiELBO needs a scalar scale on the observed sites; got shape {tuple(data_scale.shape)}"
            )
        sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
        log_w: Any = 0.0
        for sign, trace in ((1.0, model_trace), (-1.0, guide_trace)):
            for name, site in trace.nodes.items():
                if site["type"] != "sample":
                    continue
                if sign < 0 and not site["fn"].has_rsample:
                    raise ValueError(
                        f"iwae/renyi loss needs a reparameterised guide; site {name!r} draws from "
                        f"{type(site['fn']).__name__}, which has no rsample"
                    )
                relative = site["scale"] / data_scale
                term = scale_and_mask(site["unscaled_log_prob"], relative, site["mask"])
                if is_identically_zero(term):
                    continue
                log_w = log_w + sign * torch_sum(term, sum_dims)
        if not torch.is_tensor(log_w):
            raise ValueError("the model and guide have no sample sites: nothing to weight")
        if self.num_particles == 1:  # Pyro adds no particle plate for one particle
            log_w = log_w.unsqueeze(0)
        per_point = not sum_dims and log_w.dim() == 2
        return log_w, data_scale, per_point

    def _bound(self, log_w: torch.Tensor) -> torch.Tensor:
        a = 1.0 - self.alpha
        return (torch.logsumexp(a * log_w, dim=0) - math.log(self.num_particles)) / a

    def per_point_bound(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The bound ``L_n`` per data point, ``(B,)`` nats, unscaled and differentiable."""
        log_w, _, per_point = self._log_weights(model, guide, args, kwargs)
        if not per_point:
            raise ValueError(
                "per-point bounds need every sample site inside the data plate (the right-most batch dim); "
                "this model has sites outside it, so the bound is one number per batch"
            )
        return self._bound(log_w)

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        """``-s * sum_n L_n``: a differentiable loss whose value is Pyro's ``RenyiELBO.loss``."""
        log_w, data_scale, _ = self._log_weights(model, guide, args, kwargs)
        loss = -self._bound(log_w).sum() * data_scale
        return loss

    @torch.no_grad()
    def loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward()
        return loss.item()


def _same_scale(a: Any, b: Any) -> bool:
    if torch.is_tensor(a) or torch.is_tensor(b):
        return bool(torch.as_tensor(a).eq(torch.as_tensor(b)).all())
    return a == b


# --------------------------------------------------------------------------- JIT


class _SiteScales(Messenger):
    """Scale observed sites by ``obs`` and latent sites by ``latent`` (tensors inside a JIT graph)."""

    def __init__(self, obs: torch.Tensor, latent: torch.Tensor) -> None:
        super().__init__()
        self.obs = obs
        self.latent = latent

    def _process_message(self, msg: dict[str, Any]) -> None:
        if msg["type"] == "sample":
            msg["scale"] = (self.obs if msg["is_observed"] else self.latent) * msg["scale"]


def _outer_scales() -> tuple[float, float] | None:
    """The scales the active handlers put on observed and latent sites, or None if unknown.

    Known handlers: ``poutine.scale`` (both), :class:`scale_latents` (latent sites), and
    ``poutine.trace(param_only=True)`` (no effect on samples; SVI uses it).
    """
    obs, latent = 1.0, 1.0
    for frame in _PYRO_STACK:
        if isinstance(frame, scale_latents):
            latent = latent * float(frame.weight)
        elif isinstance(frame, ScaleMessenger):
            if torch.is_tensor(frame.scale) and frame.scale.numel() != 1:
                return None
            obs, latent = obs * float(frame.scale), latent * float(frame.scale)
        elif isinstance(frame, TraceMessenger) and frame.param_only:
            continue
        else:
            return None
    return obs, latent


def _signature(args: tuple) -> tuple:
    sig = []
    for i, a in enumerate(args):
        if not torch.is_tensor(a):
            raise TypeError(
                f"JIT objectives take tensors only as positional arguments; argument {i} is "
                f"{type(a).__name__}: pass non-tensors as keyword arguments"
            )
        sig.append((tuple(a.shape), str(a.dtype), str(a.device), a.requires_grad))
    return tuple(sig)


class _CachedJit:
    """Mixin: compile the tensor-only loss once per (model, guide, input shapes, kwargs).

    ``torch.jit.trace`` is deprecated in torch 2.13 and warns on every compile; those
    warnings are silenced here only (``ignore_jit_warnings`` also hides TracerWarnings).
    """

    def __init__(self, *args: Any, ignore_jit_warnings: bool = True, jit_options: dict | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ignore_jit_warnings = ignore_jit_warnings
        self.jit_options = dict(jit_options or {})
        self._compiled: dict[tuple, pyro.ops.jit.CompiledFunction] = {}
        self._fallback_warned = False

    @property
    def num_compiled(self) -> int:
        """How many graphs have been traced so far (one per model/guide pair and input signature)."""
        return sum(len(fn.compiled) for fn in self._compiled.values())

    def _tensor_loss(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> torch.Tensor:
        raise NotImplementedError

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        scales = _outer_scales()
        if scales is None:  # an unknown handler is active: do not freeze it into a graph
            if not self._fallback_warned:
                warnings.warn(
                    f"{type(self).__name__}: an effect handler other than poutine.scale/scale_latents is "
                    "active around the loss; running the eager (uncompiled) loss so it is not frozen "
                    "into the graph", RuntimeWarning, stacklevel=2,
                )
                self._fallback_warned = True
            return self._tensor_loss(model, guide, args, kwargs)
        key = (model, guide)
        fn = self._compiled.get(key)
        if fn is None:
            def scaled_loss(obs_scale: torch.Tensor, latent_scale: torch.Tensor, *inner: Any, **kw: Any) -> torch.Tensor:
                kw.pop("_signature")
                with _SiteScales(obs_scale, latent_scale):
                    return self._tensor_loss(model, guide, inner, kw)

            fn = pyro.ops.jit.trace(scaled_loss, ignore_warnings=self.ignore_jit_warnings,
                                    jit_options=dict(self.jit_options))
            self._compiled[key] = fn
        ref = args[0] if args and torch.is_tensor(args[0]) else None
        obs = torch.tensor(scales[0], dtype=ref.dtype if ref is not None else None,
                           device=ref.device if ref is not None else None)
        latent = torch.tensor(scales[1], dtype=obs.dtype, device=obs.device)
        call_kwargs = dict(kwargs, _signature=_signature(args))
        with poutine.block(hide_types=["sample", "observe"]), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit.*")
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.*")
            if pyro.ops.jit._hashable_args_kwargs((obs, latent) + args, call_kwargs) not in fn.compiled:
                # compiling runs the function three times; do it on a copy of the RNG so the
                # first compiled call draws the same numbers as the eager loss would
                with torch.random.fork_rng(devices=[ref.device] if ref is not None and ref.is_cuda else []):
                    fn(obs, latent, *args, **call_kwargs)
            return fn(obs, latent, *args, **call_kwargs)

    @torch.no_grad()
    def loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward(retain_graph=self.retain_graph)
        return loss.item()


class CachedJitTrace_ELBO(_CachedJit, Trace_ELBO):  # noqa: N801 - Pyro's naming
    """``Trace_ELBO`` compiled with ``torch.jit.trace``, once per (model, guide, input shapes).

    Unlike pyro-ppl 1.9.2's ``JitTrace_ELBO``: works with bound methods (``vae.model``),
    re-traces for a new batch shape, and takes the scales of observed and latent sites
    (mini-batch N/B, KL weight) as inputs instead of freezing them at trace time.
    """

    def _tensor_loss(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> torch.Tensor:
        # Trace_ELBO.differentiable_loss calls .item(), which a trace would freeze; this is the
        # tensor-only version of Trace_ELBO._differentiable_loss_particle (as in JitTrace_ELBO).
        from pyro.infer.trace_elbo import _compute_log_r

        loss: Any = 0.0
        surrogate_loss: Any = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            elbo_particle: Any = 0.0
            surrogate_particle: Any = 0.0
            log_r = None
            for site in model_trace.nodes.values():
                if site["type"] == "sample":
                    elbo_particle = elbo_particle + site["log_prob_sum"]
                    surrogate_particle = surrogate_particle + site["log_prob_sum"]
            for site in guide_trace.nodes.values():
                if site["type"] == "sample":
                    _, score_function_term, entropy_term = site["score_parts"]
                    elbo_particle = elbo_particle - site["log_prob_sum"]
                    if not is_identically_zero(entropy_term):
                        surrogate_particle = surrogate_particle - entropy_term.sum()
                    if not is_identically_zero(score_function_term):
                        if log_r is None:
                            log_r = _compute_log_r(model_trace, guide_trace)
                        downstream = log_r.sum_to(site["cond_indep_stack"])
                        surrogate_particle = surrogate_particle + (downstream * score_function_term).sum()
            loss = loss - elbo_particle / self.num_particles
            surrogate_loss = surrogate_loss - surrogate_particle / self.num_particles
        return loss + (surrogate_loss - surrogate_loss.detach())


class CachedJitTraceMeanField_ELBO(_CachedJit, TraceMeanField_ELBO):  # noqa: N801 - Pyro's naming
    """``TraceMeanField_ELBO`` compiled with ``torch.jit.trace``, once per (model, guide, input shapes).

    pyro-ppl 1.9.2's ``JitTraceMeanField_ELBO`` tests ``_loss_and_surrogate_loss`` but stores
    ``_differentiable_loss``, so it re-traces on every call; this class does not, and handles
    scales and batch shapes as :class:`CachedJitTrace_ELBO` does.
    """

    def _tensor_loss(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> torch.Tensor:
        loss: Any = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            _, loss_particle = self._differentiable_loss_particle(model_trace, guide_trace)
            loss = loss + loss_particle / self.num_particles
        return loss


# --------------------------------------------------------------------------- registry


_REGISTRY: dict[str, ObjectiveSpec] = {}


def register_objective(name: str, factory: Callable[..., ELBO], params: dict[str, Any], doc: str) -> None:
    """Add an objective to the registry; ``factory(**params)`` returns a Pyro ELBO (or an :class:`Objective`)."""
    _REGISTRY[name] = ObjectiveSpec(name, factory, dict(params), doc)


def available_objectives() -> dict[str, str]:
    """Registered objective names with one-line descriptions and their parameters."""
    return {
        name: spec.doc + (f" (parameters: {', '.join(f'{k}={v}' for k, v in spec.params.items())})" if spec.params else "")
        for name, spec in _REGISTRY.items()
    }


def _convert(value: str, default: Any, key: str, spec: str) -> Any:
    target = type(default)
    try:
        if target is bool:
            if value.lower() in ("1", "true", "yes"):
                return True
            if value.lower() in ("0", "false", "no"):
                return False
            raise ValueError(value)
        return target(value)
    except ValueError:
        raise ValueError(
            f"objective {spec!r}: parameter {key!r} must be of type {target.__name__}; got {value!r}"
        ) from None


def _format_value(v: Any) -> str:
    if isinstance(v, float):
        short = format(v, "g")
        return short if float(short) == v else repr(v)
    return str(v)


def format_objective(name: str, params: dict[str, Any]) -> str:
    """Inverse of :func:`parse_objective`'s string parsing: ``("iwae", {"k": 5}) -> "iwae:k=5"``.

    Parameters at their defaults are left out, so the string is canonical.
    """
    spec = _REGISTRY.get(name)
    shown = {k: v for k, v in params.items() if spec is None or spec.params.get(k) != v}
    return name + (":" + ",".join(f"{k}={_format_value(v)}" for k, v in shown.items()) if shown else "")


def parse_objective(spec: str | Objective, **overrides: Any) -> Objective:
    """Parse ``"name"`` or ``"name:key=value,..."`` into an :class:`Objective`.

    Raises ``ValueError`` naming the valid objectives or parameters when the string is wrong.
    """
    if isinstance(spec, Objective):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"objective must be a non-empty string such as 'analytic'; got {spec!r}")
    name, _, arg_str = spec.strip().partition(":")
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown objective {name!r}; choose one of: "
            + "; ".join(f"{k} - {v}" for k, v in available_objectives().items())
        )
    entry = _REGISTRY[name]
    params = dict(entry.params)
    for item in filter(None, (p.strip() for p in arg_str.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"objective {spec!r}: parameters are written key=value; got {item!r}")
        key = key.strip()
        if key not in entry.params:
            valid = ", ".join(entry.params) or "none"
            raise ValueError(f"objective {name!r} has no parameter {key!r}; valid parameters: {valid}")
        params[key] = _convert(value.strip(), entry.params[key], key, spec)
    for key in overrides:
        if key not in entry.params:
            valid = ", ".join(entry.params) or "none"
            raise ValueError(f"objective {name!r} has no parameter {key!r}; valid parameters: {valid}")
    params.update(overrides)
    return _build(name, params)


def _check_params(name: str, params: dict[str, Any]) -> None:
    def bad(key: str, need: str) -> ValueError:
        return ValueError(f"objective {name!r}: {key} must be {need}; got {params[key]!r}")

    for key in ("particles", "k"):
        if key in params and (not isinstance(params[key], int) or isinstance(params[key], bool) or params[key] < 1):
            raise bad(key, "an integer >= 1")
    if "beta" in params and not (isinstance(params["beta"], (int, float)) and math.isfinite(params["beta"])
                                 and params["beta"] >= 0):
        raise bad("beta", "a finite number >= 0")
    for key in ("anneal", "anneal_steps"):
        if key in params and (not isinstance(params[key], int) or isinstance(params[key], bool) or params[key] < 0):
            raise bad(key, "an integer >= 0 (0: no warm-up)")
    if params.get("anneal") and params.get("anneal_steps"):
        raise ValueError(
            f"objective {name!r}: choose one warm-up, anneal={params['anneal']} (epochs) or "
            f"anneal_steps={params['anneal_steps']} (steps), not both"
        )
    if "alpha" in params:
        alpha = params["alpha"]
        if not (isinstance(alpha, (int, float)) and math.isfinite(alpha)) or alpha == 1:
            raise ValueError(
                f"objective {name!r}: alpha must be a finite number other than 1 (alpha=1 is the ELBO: "
                f"use 'trace' or 'analytic'); got {alpha!r}"
            )


def _build(name: str, params: dict[str, Any]) -> Objective:
    entry = _REGISTRY[name]
    _check_params(name, params)
    elbo = entry.factory(**params)
    if isinstance(elbo, Objective):
        return elbo
    return Objective(name=name, params=params, elbo=elbo)


def _trace(particles: int = 1, **_schedule: Any) -> ELBO:
    return Trace_ELBO(num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1)


def _analytic(particles: int = 1, **_schedule: Any) -> ELBO:
    return TraceMeanField_ELBO(num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1)


def _jit_trace(particles: int = 1, **_schedule: Any) -> ELBO:
    return CachedJitTrace_ELBO(num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1)


def _jit_analytic(particles: int = 1, **_schedule: Any) -> ELBO:
    return CachedJitTraceMeanField_ELBO(
        num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1
    )


def _iwae(k: int = 5) -> ELBO:
    return VectorizedRenyiELBO(alpha=0.0, num_particles=k, max_plate_nesting=1)


def _renyi(alpha: float = 0.5, k: int = 5) -> ELBO:
    return VectorizedRenyiELBO(alpha=alpha, num_particles=k, max_plate_nesting=1)


_ELBO_PARAMS = {"particles": 1, **SCHEDULE_PARAMS}
register_objective("trace", _trace, _ELBO_PARAMS, "Trace_ELBO: every ELBO term sampled")
register_objective("analytic", _analytic, _ELBO_PARAMS, "TraceMeanField_ELBO: closed-form KL(q || p)")
register_objective("jit_trace", _jit_trace, _ELBO_PARAMS, "Trace_ELBO compiled with torch.jit.trace")
register_objective("jit_analytic", _jit_analytic, _ELBO_PARAMS,
                   "TraceMeanField_ELBO compiled with torch.jit.trace")
register_objective("iwae", _iwae, {"k": 5}, "RenyiELBO(alpha=0): importance-weighted bound with k samples")
register_objective("renyi", _renyi, {"alpha": 0.5, "k": 5}, "RenyiELBO: Renyi bound of order alpha with k samples")
