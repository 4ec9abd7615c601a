r"""Training objectives: names (with parameters) -> Pyro ELBOs, checked against the program they train.

An objective is named by a string ``"name"`` or ``"name:key=value,key=value"``, the same in Python
and on the command line (``iwae:k=5``, ``analytic:beta=4``, ``trace:anneal=10``):

================  ========================================  ==============================================
name              estimator                                 the bound, per data point
================  ========================================  ==============================================
``trace``         ``Trace_ELBO``                            E_q[log p(x, z) - log q(z | x)], every term sampled
                                                            (score-function gradients for discrete sites)
``analytic``      ``TraceMeanField_ELBO``                   E_q[log p(x | z)] - KL(q(z | x) || p(z)), the KL in
                                                            closed form where registered
``enum``          ``TraceEnum_ELBO``                        the ELBO with enumerated discrete sites summed out
``iwae``          :class:`~.renyi.VectorizedRenyiELBO`      E[log 1/K sum_k w_k],  w_k = p(x, z_k) / q(z_k | x)
``*:grad=stl``    :class:`~.gradients.PathwiseELBO`         ``trace`` or ``iwae``, sticking-the-landing encoder gradient
``iwae:grad=dreg`` :class:`~.gradients.PathwiseELBO`        ``iwae``, doubly reparameterised encoder gradient
``renyi``         :class:`~.renyi.VectorizedRenyiELBO`      1/(1-a) E[log 1/K sum_k w_k^(1-a)]
``jit_trace``     :class:`~.jit.CachedJitTrace_ELBO`        as ``trace``, compiled with ``torch.jit.trace``
``jit_analytic``  :class:`~.jit.CachedJitTraceMeanField_ELBO`  as ``analytic``, compiled
================  ========================================  ==============================================

**Same bound, different noise.** ``trace`` and ``analytic`` estimate the same ELBO; the analytic KL
removes the Monte Carlo noise of the KL term (Kingma & Welling, 2014, eq. 10). Every ELBO objective
takes ``beta``/``anneal``/``anneal_steps`` (:mod:`.schedule`).

**Bound to a program.** :meth:`Objective.bind` reads what :func:`~ppl_vae.programs.inspect_program`
found: ``max_plate_nesting`` comes from the program (never a hard-coded 1), and an objective that
cannot train the program correctly refuses it, naming the site and the objective that can:
``analytic`` and the importance-weighted objectives need reparameterised guide sites (with validation
off, ``TraceMeanField_ELBO`` would silently drop the score-function term and a discrete q(y|x) would
never learn); the importance-weighted and JIT objectives need every latent inside the data plate;
only ``enum`` sums out discrete sites the guide does not sample.

References:
    Kingma & Welling (2014), Auto-Encoding Variational Bayes.
    Burda, Grosse & Salakhutdinov (2015), Importance Weighted Autoencoders.
    Li & Turner (2016), Rényi Divergence Variational Inference.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from pyro.infer import ELBO, Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO

from ..errors import ProgramError, UserError
from ..programs import ProgramInfo
from .gradients import PathwiseELBO, check_grad
from .jit import CachedJitTrace_ELBO, CachedJitTraceMeanField_ELBO
from .renyi import VectorizedRenyiELBO
from .schedule import SCHEDULE_PARAMS, kl_schedule, scale_latents

__all__ = [
    "CachedJitTraceMeanField_ELBO",
    "CachedJitTrace_ELBO",
    "Objective",
    "ObjectiveSpec",
    "PathwiseELBO",
    "VectorizedRenyiELBO",
    "available_objectives",
    "format_objective",
    "kl_schedule",
    "parse_objective",
    "register_objective",
    "scale_latents",
]


@dataclass(frozen=True)
class ObjectiveSpec:
    """A registered objective: its factory, the parameters it accepts (name -> default), and what
    programs it can train (see :meth:`Objective.bind`)."""

    name: str
    factory: Callable[..., Any]
    params: dict[str, Any]
    doc: str
    reparam_only: bool = False
    local_only: bool = False
    sums_enumerated: bool = False


@dataclass
class Objective:
    """A parsed objective: the ELBO plus the parameters it was built with.

    ``loss(model, guide, *batch)`` is the differentiable negative bound (nats, summed over the batch
    and scaled by the handlers around it, e.g. the trainer's data-plate scale). ``kl_weight(step,
    epoch)`` is the weight the trainer puts on the latent sites (1.0 without ``beta``/``anneal``).
    """

    name: str
    params: dict[str, Any]
    elbo: Any = field(repr=False)
    max_plate_nesting: int = 1

    @property
    def spec(self) -> str:
        """The canonical string that rebuilds this objective."""
        return format_objective(self.name, self.params)

    @property
    def entry(self) -> ObjectiveSpec | None:
        return _REGISTRY.get(self.name)

    def loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.elbo.differentiable_loss(model, guide, *args, **kwargs)

    def kl_weight(self, step: int, epoch: int) -> float:
        """Weight on the KL term at a training step (1.0: the plain ELBO)."""
        schedule = {k: self.params[k] for k in SCHEDULE_PARAMS if k in self.params}
        return kl_schedule(step, epoch, **schedule) if schedule else 1.0

    def check(self, info: ProgramInfo) -> None:
        """Refuse a program this objective cannot train correctly (:class:`~ppl_vae.errors.ProgramError`)."""
        entry = self.entry
        if entry is None:
            return
        name = self.spec
        if entry.reparam_only and info.non_reparam:
            site = info.non_reparam[0]
            raise ProgramError(
                f"objective {name!r} needs reparameterised guide sites; guide site(s) {_fmt(info.non_reparam)} "
                f"have no rsample (discrete). Use 'trace' (score-function gradient for {site!r}) or 'enum' "
                f"(sums {site!r} out exactly: mark it infer={{'enumerate': 'parallel'}}, e.g. with "
                "pyro.infer.config_enumerate(guide))"
            )
        if info.model_only and not entry.sums_enumerated:
            raise ProgramError(
                f"model site(s) {_fmt(info.model_only)} are enumerated in the model and have no guide site: "
                f"only the 'enum' objective (TraceEnum_ELBO) sums them out; objective {name!r} cannot"
            )
        if entry.local_only and info.global_latent:
            raise ProgramError(
                f"objective {name!r} needs every latent site inside the data plate {info.data_plate!r}; "
                f"site(s) {_fmt(info.global_latent)} are global (outside it). Train this program with "
                "'trace' or 'analytic', which scale global sites by 1 and local ones by N/|B|"
            )
        check_program = getattr(
            self.elbo, "check_program", None
        )  # e.g. grad=stl/dreg (PathwiseELBO)
        if callable(check_program):
            check_program(info, name)

    def bind(self, info: ProgramInfo) -> Objective:
        """This objective checked against a program and built with its ``max_plate_nesting``."""
        self.check(info)
        if self.max_plate_nesting == info.max_plate_nesting:
            return self
        entry = self.entry
        if entry is None or not _takes_nesting(entry.factory):
            raise ProgramError(
                f"the program nests {info.max_plate_nesting} plates, but objective {self.spec!r} was built "
                f"for {self.max_plate_nesting}: register its factory with a max_plate_nesting argument"
            )
        bound = copy.copy(self)
        made = _make(entry, self.params, info.max_plate_nesting)
        bound.elbo = made.elbo if isinstance(made, Objective) else made
        bound.max_plate_nesting = info.max_plate_nesting
        return bound


def _fmt(names: Any) -> str:
    return "{" + ", ".join(repr(n) for n in sorted(names)) + "}"


# --------------------------------------------------------------------------- registry
_REGISTRY: dict[str, ObjectiveSpec] = {}


def register_objective(
    name: str,
    factory: Callable[..., Any],
    params: dict[str, Any],
    doc: str,
    *,
    reparam_only: bool = False,
    local_only: bool = False,
    sums_enumerated: bool = False,
) -> None:
    """Add an objective: ``factory(**params)`` returns a Pyro ELBO (with ``differentiable_loss``) or an
    :class:`Objective`. The flags say which programs it refuses (see :meth:`Objective.bind`)."""
    _REGISTRY[name] = ObjectiveSpec(
        name, factory, dict(params), doc, reparam_only, local_only, sums_enumerated
    )


def available_objectives() -> dict[str, str]:
    """Registered objective names with one-line descriptions and their parameters."""
    return {
        name: spec.doc
        + (
            f" (parameters: {', '.join(f'{k}={v}' for k, v in spec.params.items())})"
            if spec.params
            else ""
        )
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
        raise UserError(
            f"objective {spec!r}: parameter {key!r} must be of type {target.__name__}; "
            f"got {value!r}"
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
    return name + (
        ":" + ",".join(f"{k}={_format_value(v)}" for k, v in shown.items()) if shown else ""
    )


def parse_objective(spec: str | Objective, **overrides: Any) -> Objective:
    """Parse ``"name"`` or ``"name:key=value,..."`` into an :class:`Objective`.

    Raises :class:`~ppl_vae.errors.UserError` naming the valid objectives or parameters when the string
    is wrong (an unknown name or parameter, a parameter given twice, a value of the wrong type).
    """
    if isinstance(spec, Objective):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"objective must be a non-empty string such as 'analytic'; got {spec!r}")
    name, _, arg_str = spec.strip().partition(":")
    if name not in _REGISTRY:
        raise UserError(
            f"unknown objective {name!r}; choose one of: "
            + "; ".join(f"{k} - {v}" for k, v in available_objectives().items())
        )
    entry = _REGISTRY[name]
    params = dict(entry.params)
    given: set[str] = set()
    for item in filter(None, (p.strip() for p in arg_str.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise UserError(f"objective {spec!r}: parameters are written key=value; got {item!r}")
        key = key.strip()
        if key not in entry.params:
            valid = ", ".join(entry.params) or "none"
            raise UserError(
                f"objective {name!r} has no parameter {key!r}; valid parameters: {valid}"
            )
        if key in given:
            raise UserError(f"objective {spec!r}: parameter {key!r} is given more than once")
        given.add(key)
        params[key] = _convert(value.strip(), entry.params[key], key, spec)
    for key in overrides:
        if key not in entry.params:
            valid = ", ".join(entry.params) or "none"
            raise UserError(
                f"objective {name!r} has no parameter {key!r}; valid parameters: {valid}"
            )
    params.update(overrides)
    _check_params(name, params)
    made = _make(entry, params)
    return made if isinstance(made, Objective) else Objective(name=name, params=params, elbo=made)


def _check_params(name: str, params: dict[str, Any]) -> None:
    from .._checks import check_memory

    def bad(key: str, need: str) -> UserError:
        return UserError(f"objective {name!r}: {key} must be {need}; got {params[key]!r}")

    for key in ("particles", "k"):
        if key in params and (
            not isinstance(params[key], int) or isinstance(params[key], bool) or params[key] < 1
        ):
            raise bad(key, "an integer >= 1")
        if key in params:  # one float per particle and data point, before any network runs
            check_memory(
                params[key] * 4,
                f"objective {name!r} with {key}={params[key]}",
                f"use a smaller {key}",
            )
    if "beta" in params and not (
        isinstance(params["beta"], (int, float))
        and math.isfinite(params["beta"])
        and params["beta"] >= 0
    ):
        raise bad("beta", "a finite number >= 0")
    for key in ("anneal", "anneal_steps"):
        if key in params and (
            not isinstance(params[key], int) or isinstance(params[key], bool) or params[key] < 0
        ):
            raise bad(key, "an integer >= 0 (0: no warm-up)")
    if params.get("anneal") and params.get("anneal_steps"):
        raise UserError(
            f"objective {name!r}: choose one warm-up, anneal={params['anneal']} (epochs) or "
            f"anneal_steps={params['anneal_steps']} (steps), not both"
        )
    if "grad" in params:
        check_grad(name, params["grad"])
    if "alpha" in params:
        alpha = params["alpha"]
        if not (isinstance(alpha, (int, float)) and math.isfinite(alpha)) or alpha == 1:
            raise UserError(
                f"objective {name!r}: alpha must be a finite number other than 1 (alpha=1 is the ELBO: "
                f"use 'trace' or 'analytic'); got {alpha!r}"
            )


def _takes_nesting(factory: Callable[..., Any]) -> bool:
    try:
        return "max_plate_nesting" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def _make(entry: ObjectiveSpec, params: dict[str, Any], max_plate_nesting: int = 1) -> Any:
    if _takes_nesting(entry.factory):
        return entry.factory(**params, max_plate_nesting=max_plate_nesting)
    return entry.factory(**params)


def _trace(
    particles: int = 1, max_plate_nesting: int = 1, grad: str = "reparam", **_schedule: Any
) -> ELBO:
    if grad != "reparam":
        return PathwiseELBO("elbo", grad, particles, max_plate_nesting)
    return Trace_ELBO(
        num_particles=particles,
        vectorize_particles=particles > 1,
        max_plate_nesting=max_plate_nesting,
    )


def _analytic(particles: int = 1, max_plate_nesting: int = 1, **_schedule: Any) -> ELBO:
    return TraceMeanField_ELBO(
        num_particles=particles,
        vectorize_particles=particles > 1,
        max_plate_nesting=max_plate_nesting,
    )


def _enum(particles: int = 1, max_plate_nesting: int = 1, **_schedule: Any) -> ELBO:
    return TraceEnum_ELBO(
        num_particles=particles,
        vectorize_particles=particles > 1,
        max_plate_nesting=max_plate_nesting,
    )


def _jit_trace(particles: int = 1, max_plate_nesting: int = 1, **_schedule: Any) -> ELBO:
    return CachedJitTrace_ELBO(
        num_particles=particles,
        vectorize_particles=particles > 1,
        max_plate_nesting=max_plate_nesting,
    )


def _jit_analytic(particles: int = 1, max_plate_nesting: int = 1, **_schedule: Any) -> ELBO:
    return CachedJitTraceMeanField_ELBO(
        num_particles=particles,
        vectorize_particles=particles > 1,
        max_plate_nesting=max_plate_nesting,
    )


def _iwae(k: int = 5, max_plate_nesting: int = 1, grad: str = "reparam") -> ELBO:
    if grad != "reparam":
        return PathwiseELBO("iwae", grad, k, max_plate_nesting)
    return VectorizedRenyiELBO(alpha=0.0, num_particles=k, max_plate_nesting=max_plate_nesting)


def _renyi(alpha: float = 0.5, k: int = 5, max_plate_nesting: int = 1) -> ELBO:
    return VectorizedRenyiELBO(alpha=alpha, num_particles=k, max_plate_nesting=max_plate_nesting)


_ELBO_PARAMS = {"particles": 1, **SCHEDULE_PARAMS}
register_objective(
    "trace",
    _trace,
    {**_ELBO_PARAMS, "grad": "reparam"},
    "Trace_ELBO: every ELBO term sampled; grad=stl: sticking-the-landing encoder gradient",
)
register_objective(
    "analytic",
    _analytic,
    _ELBO_PARAMS,
    "TraceMeanField_ELBO: closed-form KL(q || p)",
    reparam_only=True,
)
register_objective(
    "enum",
    _enum,
    _ELBO_PARAMS,
    "TraceEnum_ELBO: discrete sites marked for enumeration summed out exactly",
    sums_enumerated=True,
)
register_objective(
    "jit_trace",
    _jit_trace,
    _ELBO_PARAMS,
    "Trace_ELBO compiled with torch.jit.trace",
    local_only=True,
)
register_objective(
    "jit_analytic",
    _jit_analytic,
    _ELBO_PARAMS,
    "TraceMeanField_ELBO compiled with torch.jit.trace",
    reparam_only=True,
    local_only=True,
)
register_objective(
    "iwae",
    _iwae,
    {"k": 5, "grad": "reparam"},
    "RenyiELBO(alpha=0): importance-weighted bound with k samples; grad=dreg|stl: doubly "
    "reparameterised / sticking-the-landing encoder gradient",
    reparam_only=True,
    local_only=True,
)
register_objective(
    "renyi",
    _renyi,
    {"alpha": 0.5, "k": 5},
    "RenyiELBO: Renyi bound of order alpha with k samples",
    reparam_only=True,
    local_only=True,
)
