"""Training objectives: names (with parameters) -> Pyro ELBOs.

An objective is named by a string ``"name"`` or ``"name:key=value,key=value"``,
the same in Python and on the command line:

============  ==============================  ==============================================
name          Pyro estimator                   the bound, per data point
============  ==============================  ==============================================
``trace``     ``Trace_ELBO``                   E_q[log p(x, z) - log q(z | x)], all terms sampled
``analytic``  ``TraceMeanField_ELBO``          E_q[log p(x | z)] - KL(q(z | x) || p(z)), KL in
                                               closed form: 1/2 sum_j (s_j^2 + m_j^2 - 1 - log s_j^2)
============  ==============================  ==============================================

Both are the same bound; the analytic KL removes the Monte Carlo noise of the
KL term, so its gradient estimator has lower variance (Kingma & Welling, 2014,
eq. 10). Common parameter: ``particles`` (int, default 1), the number of
samples of z per data point.

Further objectives register themselves with :func:`register_objective`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.messenger import Messenger


@dataclass(frozen=True)
class ObjectiveSpec:
    """A registered objective: its factory and the parameters it accepts (name -> default)."""

    name: str
    factory: Callable[..., ELBO]
    params: dict[str, Any]
    doc: str


@dataclass
class Objective:
    """A parsed objective: the Pyro ELBO plus the parameters it was built with.

    ``loss(model, guide, x)`` is the differentiable negative bound (nats, summed over
    the batch and scaled by any ``poutine.scale`` the caller applies).
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
        return 1.0


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


_REGISTRY: dict[str, ObjectiveSpec] = {}


def register_objective(name: str, factory: Callable[..., ELBO], params: dict[str, Any], doc: str) -> None:
    """Add an objective to the registry; ``factory(**params)`` returns a Pyro ELBO."""
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


def format_objective(name: str, params: dict[str, Any]) -> str:
    """Inverse of :func:`parse_objective`'s string parsing: ``("iwae", {"k": 5}) -> "iwae:k=5"``."""
    spec = _REGISTRY.get(name)
    shown = {k: v for k, v in params.items() if spec is None or spec.params.get(k) != v}
    return name + (":" + ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()) if shown else "")


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
    params.update(overrides)
    return _build(name, params)


def _build(name: str, params: dict[str, Any]) -> Objective:
    entry = _REGISTRY[name]
    if "particles" in params and params["particles"] < 1:
        raise ValueError(f"objective {name!r}: particles must be >= 1; got {params['particles']}")
    elbo = entry.factory(**params)
    if isinstance(elbo, Objective):
        return elbo
    return Objective(name=name, params=params, elbo=elbo)


def _trace(particles: int = 1) -> ELBO:
    return Trace_ELBO(num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1)


def _analytic(particles: int = 1) -> ELBO:
    return TraceMeanField_ELBO(num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1)


register_objective("trace", _trace, {"particles": 1}, "Trace_ELBO: every ELBO term sampled")
register_objective("analytic", _analytic, {"particles": 1}, "TraceMeanField_ELBO: closed-form KL(q || p)")
