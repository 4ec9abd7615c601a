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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from dataclasses import replace as with_changes
from types import MappingProxyType
from typing import Any, Protocol

import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO

from ..errors import ProgramError, UserError
from ..programs import ProgramInfo
from ..registry import REGISTRY, Entry, Param, format_spec, format_value
from .gradients import PathwiseELBO, check_grad
from .jit import CachedJitTrace_ELBO, CachedJitTraceMeanField_ELBO
from .renyi import VectorizedRenyiELBO
from .schedule import SCHEDULE_PARAMS, kl_schedule, scale_latents

__all__ = [
    "Bound",
    "CachedJitTraceMeanField_ELBO",
    "CachedJitTrace_ELBO",
    "FAST_PATHS",
    "Objective",
    "PathwiseELBO",
    "VectorizedRenyiELBO",
    "available_objectives",
    "fast_paths",
    "format_objective",
    "kl_schedule",
    "parse_objective",
    "register_objective",
    "scale_latents",
]


class Bound(Protocol):
    """What an objective estimates with: Pyro's ELBO interface (``Trace_ELBO``, ``RenyiELBO``, ours).

    ``differentiable_loss(model, guide, *args, **kwargs)`` is minus the bound, differentiable, summed over
    the batch and scaled by the handlers around it."""

    def differentiable_loss(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> torch.Tensor: ...


@dataclass
class Objective:
    """A parsed objective: the ELBO plus the parameters it was built with.

    ``loss(model, guide, *batch)`` is the differentiable negative bound (nats, summed over the batch
    and scaled by the handlers around it, e.g. the trainer's data-plate scale). ``kl_weight(step,
    epoch)`` is the weight the trainer puts on the latent sites (1.0 without ``beta``/``anneal``).
    """

    name: str
    params: dict[str, Any]
    elbo: Bound = field(repr=False)
    max_plate_nesting: int = 1

    @property
    def spec(self) -> str:
        """The canonical string that rebuilds this objective."""
        return format_objective(self.name, self.params)

    @property
    def entry(self) -> Entry | None:
        """The registry entry of this objective (None for an objective built outside the registry)."""
        return REGISTRY.get("objective", self.name)

    @property
    def fast_paths(self) -> frozenset[str]:
        """The fast paths of ``fit`` this objective declares for its parameters (see :func:`fast_paths`)."""
        return fast_paths(self.entry, self.params) if self.entry is not None else frozenset()

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
        if entry.trait("reparam_only") and info.non_reparam:
            site = info.non_reparam[0]
            raise ProgramError(
                f"objective {name!r} needs reparameterised guide sites; guide site(s) {_fmt(info.non_reparam)} "
                f"have no rsample (discrete). Use 'trace' (score-function gradient for {site!r}) or 'enum' "
                f"(sums {site!r} out exactly: mark it infer={{'enumerate': 'parallel'}}, e.g. with "
                "pyro.infer.config_enumerate(guide))"
            )
        if entry.trait("reparam_only") and info.guide_factors:
            raise ProgramError(
                f"objective {name!r} needs a fully reparameterised guide; guide factor site(s) "
                f"{_fmt(info.guide_factors)} (pyro.factor(..., has_rsample=False)) are not. Use 'trace' "
                "(score-function terms for them), or pass has_rsample=True if the factor comes from "
                "reparameterised draws"
            )
        if entry.trait("sums_enumerated") and not info.enumerated:
            raise ProgramError(
                f"objective {name!r} (TraceEnum_ELBO) sums out the discrete sites marked for enumeration, and "
                "this program marks none: it would train as 'trace' under another name. Mark them, "
                "infer={'enumerate': 'parallel'} or pyro.infer.config_enumerate(guide) (wrap the guide in "
                "pv.Program(m.model, config_enumerate(m.guide), owner=m)), or use 'trace'"
            )
        if info.model_only and not entry.trait("sums_enumerated"):
            raise ProgramError(
                f"model site(s) {_fmt(info.model_only)} are enumerated in the model and have no guide site: "
                f"only the 'enum' objective (TraceEnum_ELBO) sums them out; objective {name!r} cannot"
            )
        if entry.trait("local_only") and info.global_latent:
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
#: The fast paths an objective may declare (trait ``fast_paths``: path -> the parameter values it needs):
#: ``"fast_elbo"``, the fast ELBO stands in for the objective's Pyro loss (it then also gets graphs and the
#: compiled whole step; trait ``surrogate``: ``"trace"`` or ``"analytic"``, the form it sums); ``"graph"``,
#: the objective's own Pyro loss is captured as a graph (and compiled). Checked against the Pyro loss
#: on the first batch before use (:mod:`ppl_vae.train.fast`), whatever an entry declares.
FAST_PATHS = ("fast_elbo", "graph")


def fast_paths(entry: Entry, params: Mapping[str, Any]) -> frozenset[str]:
    """The paths of ``entry``'s ``fast_paths`` trait whose parameter conditions ``params`` meet.

    A condition is ``{parameter: allowed values}``: ``{"particles": (1,), "grad": ("reparam",)}``.
    """
    declared: Mapping[str, Mapping[str, tuple[Any, ...]]] = entry.trait("fast_paths", {})
    return frozenset(
        path
        for path, needs in declared.items()
        if all(params.get(k, entry.params[k].default) in allowed for k, allowed in needs.items())
    )


def register_objective(
    name: str,
    factory: Callable[..., Any],
    params: Mapping[str, Any] | tuple[Param, ...],
    doc: str,
    *,
    reparam_only: bool = False,
    local_only: bool = False,
    sums_enumerated: bool = False,
    fast_paths: Mapping[str, Mapping[str, tuple[Any, ...]]] | None = None,
    replace: bool = True,
    **traits: Any,
) -> None:
    """Add an objective: ``factory(**params)`` returns a Pyro ELBO (with ``differentiable_loss``) or an
    :class:`Objective` (with a ``max_plate_nesting`` argument when it can be built for the program's).

    ``params``: ``{name: default}`` or :class:`~ppl_vae.registry.Param` s. The flags say which programs
    it refuses (see :meth:`Objective.check`); ``fast_paths`` which fast paths of ``fit`` it supports, for
    which parameter values (see :data:`FAST_PATHS`; none by default: Pyro's loss every step).
    ``replace=True`` (the default, as before the registry): a name registered again is replaced.

    The factory is called once with the defaults, and an ELBO that ``fit`` cannot drive is refused here
    (and not registered), naming what it lacks (Pyro's ``TraceGraph_ELBO`` has ``loss_and_grads``, which runs
    its own backward pass, but no ``differentiable_loss``), rather than at the first training step.
    Examples:
        >>> from pyro.infer import Trace_ELBO
        >>> import ppl_vae as pv
        >>> pv.register_objective(
        ...     "trace_many", lambda particles=4: Trace_ELBO(num_particles=particles),
        ...     {"particles": 4}, "Trace_ELBO averaged over several particles",
        ... )
        >>> pv.parse_objective("trace_many:particles=8").spec
        'trace_many:particles=8'
    """
    REGISTRY.register(
        "objective",
        name,
        factory,
        params=params,
        doc=doc,
        replace=replace,
        check=_check_params,
        reparam_only=reparam_only,
        local_only=local_only,
        sums_enumerated=sums_enumerated,
        fast_paths=MappingProxyType(dict(fast_paths or {})),
        **traits,
    )
    try:
        _check_interface(REGISTRY.entry("objective", name))
    except UserError:
        REGISTRY.unregister("objective", name)
        raise


def _check_interface(entry: Entry) -> None:
    """Refuse a factory whose product ``fit`` cannot train with (one line, naming the missing method)."""
    name = entry.name
    if not callable(entry.factory):
        raise UserError(
            f"register_objective({name!r}): factory must be callable; got {type(entry.factory).__name__}"
        )
    try:
        made = _make(entry, entry.defaults())
    except Exception as err:  # noqa: BLE001 - the user's factory: said in one line
        raise UserError(
            f"register_objective({name!r}): factory(**{entry.defaults()}) failed: {type(err).__name__}: {err}"
        ) from err
    if isinstance(made, Objective):
        return
    if not callable(getattr(made, "differentiable_loss", None)):
        has = [m for m in ("loss_and_grads", "loss") if callable(getattr(made, m, None))]
        raise UserError(
            f"register_objective({name!r}): {type(made).__name__} has no differentiable_loss(model, guide, "
            f"*args), the loss fit differentiates"
            + (f" (it has {', '.join(has)}, which fit cannot use)" if has else "")
            + ": return a Pyro ELBO that has one (Trace_ELBO, TraceMeanField_ELBO, TraceEnum_ELBO, "
            "RenyiELBO), or a ppl_vae Objective whose loss(model, guide, *batch) returns a differentiable "
            "surrogate"
        )


def available_objectives() -> dict[str, str]:
    """Registered objective names with one-line descriptions and their parameters.

    Examples:
        >>> import ppl_vae as pv
        >>> {"trace", "analytic", "iwae", "renyi", "enum"} <= set(pv.available_objectives())
        True
    """
    return REGISTRY.describe("objective")


def format_objective(name: str, params: Mapping[str, Any]) -> str:
    """Inverse of :func:`parse_objective`'s string parsing: ``("iwae", {"k": 5}) -> "iwae:k=5"``.

    Parameters at their defaults are left out, so the string is canonical.

    Examples:
        >>> import ppl_vae as pv
        >>> pv.format_objective("iwae", {"k": 50})  # parameters at defaults are left out
        'iwae:k=50'
    """
    entry = REGISTRY.get("objective", name)
    if entry is None:
        return name + (
            ":" + ",".join(f"{k}={format_value(v)}" for k, v in params.items()) if params else ""
        )
    return format_spec(entry, params)


def parse_objective(spec: str | Objective, **overrides: Any) -> Objective:
    """Parse ``"name"`` or ``"name:key=value,..."`` into an :class:`Objective`.

    Raises :class:`~ppl_vae.errors.UserError` naming the valid objectives or parameters when the string
    is wrong (an unknown name or parameter, a parameter given twice, a value of the wrong type).

    Examples:
        >>> import ppl_vae as pv
        >>> pv.parse_objective("iwae:k=50").spec
        'iwae:k=50'
        >>> pv.parse_objective("analytic", beta=4).spec
        'analytic:beta=4'
    """
    if isinstance(spec, Objective):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"objective must be a non-empty string such as 'analytic'; got {spec!r}")
    parsed = REGISTRY.parse("objective", spec, **overrides)
    params = parsed.values
    made = _make(parsed.entry, params)
    return (
        made
        if isinstance(made, Objective)
        else Objective(name=parsed.name, params=params, elbo=made)
    )


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check_counts(name: str, params: dict[str, Any]) -> None:
    """``particles``/``k`` integers >= 1 that fit in memory; ``anneal``/``anneal_steps`` >= 0, one of them."""
    from .._checks import check_memory

    def bad(key: str, need: str) -> UserError:
        return UserError(f"objective {name!r}: {key} must be {need}; got {params[key]!r}")

    for key in ("particles", "k"):
        if key not in params:
            continue
        if not _is_int(params[key], 1):
            raise bad(key, "an integer >= 1")
        check_memory(  # one float per particle and data point, before any network runs
            params[key] * 4, f"objective {name!r} with {key}={params[key]}", f"use a smaller {key}"
        )
    for key in ("anneal", "anneal_steps"):
        if key in params and not _is_int(params[key], 0):
            raise bad(key, "an integer >= 0 (0: no warm-up)")
    if params.get("anneal") and params.get("anneal_steps"):
        raise UserError(
            f"objective {name!r}: choose one warm-up, anneal={params['anneal']} (epochs) or "
            f"anneal_steps={params['anneal_steps']} (steps), not both"
        )


def _check_params(params: dict[str, Any], text: str) -> None:
    """The values every built-in objective's parameters must take (an entry's ``check``)."""
    name = text.partition(":")[0].strip()
    _check_counts(name, params)
    beta = params.get("beta", 1.0)
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta >= 0):
        raise UserError(f"objective {name!r}: beta must be a finite number >= 0; got {beta!r}")
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


def _make(entry: Entry, params: dict[str, Any], max_plate_nesting: int = 1) -> Any:
    if _takes_nesting(entry.factory):
        return entry.factory(**params, max_plate_nesting=max_plate_nesting)
    return entry.factory(**params)


def _trace(
    particles: int = 1, max_plate_nesting: int = 1, grad: str = "reparam", **_schedule: Any
) -> Bound:
    if grad != "reparam":
        return PathwiseELBO("elbo", grad, particles, max_plate_nesting)
    return Trace_ELBO(
        num_particles=particles,
        vectorize_particles=particles > 1,
        max_plate_nesting=max_plate_nesting,
    )


def _analytic(particles: int = 1, max_plate_nesting: int = 1, **_schedule: Any) -> Bound:
    return TraceMeanField_ELBO(
        num_particles=particles,
        vectorize_particles=particles > 1,
        max_plate_nesting=max_plate_nesting,
    )


def _enum(particles: int = 1, max_plate_nesting: int = 1, **_schedule: Any) -> Bound:
    return TraceEnum_ELBO(
        num_particles=particles,
        vectorize_particles=particles > 1,
        max_plate_nesting=max_plate_nesting,
    )


def _jit_trace(particles: int = 1, max_plate_nesting: int = 1, **_schedule: Any) -> Bound:
    return CachedJitTrace_ELBO(
        num_particles=particles,
        vectorize_particles=particles > 1,
        max_plate_nesting=max_plate_nesting,
    )


def _jit_analytic(particles: int = 1, max_plate_nesting: int = 1, **_schedule: Any) -> Bound:
    return CachedJitTraceMeanField_ELBO(
        num_particles=particles,
        vectorize_particles=particles > 1,
        max_plate_nesting=max_plate_nesting,
    )


def _iwae(k: int = 5, max_plate_nesting: int = 1, grad: str = "reparam") -> Bound:
    if grad != "reparam":
        return PathwiseELBO("iwae", grad, k, max_plate_nesting)
    return VectorizedRenyiELBO(alpha=0.0, num_particles=k, max_plate_nesting=max_plate_nesting)


def _renyi(alpha: float = 0.5, k: int = 5, max_plate_nesting: int = 1) -> Bound:
    return VectorizedRenyiELBO(alpha=alpha, num_particles=k, max_plate_nesting=max_plate_nesting)


_ELBO_PARAMS = (
    Param("particles", 1, int, "samples of z per data point"),
    Param("beta", 1.0, float, "weight on the KL term (beta-VAE)"),
    Param("anneal", 0, int, "KL warm-up over this many epochs (0: none)"),
    Param("anneal_steps", 0, int, "KL warm-up over this many steps (0: none)"),
)
_GRAD = Param("grad", "reparam", str, "encoder gradient: reparam, stl (sticking the landing)")
_K = Param("k", 5, int, "importance samples per data point")
_ONE = (1,)
register_objective(
    "trace",
    _trace,
    (*_ELBO_PARAMS, _GRAD),
    "Trace_ELBO: every ELBO term sampled; grad=stl: sticking-the-landing encoder gradient",
    fast_paths={
        "fast_elbo": {"particles": _ONE, "grad": ("reparam",)},
        "graph": {"grad": ("stl",)},
    },
    surrogate="trace",
)
register_objective(
    "analytic",
    _analytic,
    _ELBO_PARAMS,
    "TraceMeanField_ELBO: closed-form KL(q || p)",
    reparam_only=True,
    fast_paths={"fast_elbo": {"particles": _ONE}},
    surrogate="analytic",
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
    (_K, with_changes(_GRAD, doc="encoder gradient: reparam, dreg (doubly reparameterised), stl")),
    "RenyiELBO(alpha=0): importance-weighted bound with k samples; grad=dreg|stl: doubly "
    "reparameterised / sticking-the-landing encoder gradient",
    reparam_only=True,
    local_only=True,
    fast_paths={"graph": {}},
)
register_objective(
    "renyi",
    _renyi,
    (Param("alpha", 0.5, float, "order of the Renyi divergence (not 1)"), _K),
    "RenyiELBO: Renyi bound of order alpha with k samples",
    reparam_only=True,
    local_only=True,
    fast_paths={"graph": {}},
)


def _fast_paths_cell(entry: Entry) -> str:
    declared: Mapping[str, Mapping[str, tuple[Any, ...]]] = entry.trait("fast_paths", {})
    parts = []
    for path, needs in declared.items():
        cond = ", ".join(f"{k}={'/'.join(map(format_value, v))}" for k, v in needs.items())
        parts.append(path.replace("_", " ") + (f" ({cond})" if cond else ""))
    return "; ".join(parts) or "none (Pyro's loss)"


def _refuses_cell(entry: Entry) -> str:
    needs = [
        text
        for trait, text in (
            ("reparam_only", "reparameterised guide sites"),
            ("local_only", "every latent in the data plate"),
        )
        if entry.trait(trait)
    ]
    return "; ".join(needs) or "-"


REGISTRY.add_column("objective", "fast paths", _fast_paths_cell)
REGISTRY.add_column("objective", "needs", _refuses_cell)
REGISTRY.add_column(
    "objective", "sums enumerated sites", lambda e: "yes" if e.trait("sums_enumerated") else "-"
)
