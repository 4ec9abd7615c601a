"""An inference method: a model, a guide family and an objective with its parameters.

Written the same way in Python and on the command line, parts separated by ``/``::

    "iwae:k=5"                               the objective alone: a VAE with a mean-field guide (today's meaning)
    "iaf:n=2/iwae:k=5,grad=dreg"             a guide family and an objective (model: vae)
    "hvae/trace"                             a model and an objective (guide: meanfield)
    "vae:nets=conv/fullrank/analytic"        model/guide/objective

The objective is always the last part; before it, at most a model (``vae``, ``linear``, ``hvae``, ``m2``,
with options: :mod:`ppl_vae.models.names`) and a guide (``meanfield``, ``fullrank``, ``iaf:n=K``:
:mod:`ppl_vae.guides`), in that order; each part is named ``name:key=value,...`` as objectives are. Or in
Python: ``Method(model="vae", guide="iaf:n=2", objective="iwae:k=5,grad=dreg")``. :attr:`Method.label`
leaves out the defaults (``vae``, ``meanfield``), so a bare objective keeps its label (the objective as
written); :attr:`Method.key` is canonical (two spellings of one method, such as ``iwae`` and
``iwae:k=5``, share it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import UserError
from ..guides import GUIDES, canonical_guide
from ..models.names import MODEL_NAMES, canonical_model, make_model, model_name
from ..objectives import parse_objective
from ..registry import REGISTRY

__all__ = ["Method", "ProgramMethod", "method_of", "model_axis"]


@dataclass(frozen=True)
class Method:
    """(model, guide, objective), each a spec string; model and guide held in canonical form, the objective
    as written (validated; see the module docstring).

    Examples:
        >>> import ppl_vae as pv
        >>> pv.Method(guide="iaf:n=2", objective="iwae:k=5")
        Method(model='vae', guide='iaf:n=2', objective='iwae:k=5')
    """

    model: str = "vae"
    guide: str = "meanfield"
    objective: str = "analytic"

    def __post_init__(self) -> None:
        model = canonical_model(self.model)
        guide = canonical_guide(self.guide)
        if not isinstance(self.objective, str):
            raise UserError(
                f"objective must be a string such as 'iwae:k=5'; got {self.objective!r}"
            )
        objective = self.objective.strip()
        parse_objective(objective)  # raises, listing the valid objectives
        families = [e.name for e in REGISTRY.entries("model") if e.trait("guide_families")]
        if guide != "meanfield" and model.partition(":")[0] not in families:
            raise UserError(
                f"method {self.model}/{self.guide}/{self.objective}: model {model!r} has a mean-field "
                f"guide per latent site; guide families are for {' and '.join(map(repr, families))} "
                "models"
            )
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "guide", guide)
        object.__setattr__(self, "objective", objective)

    @classmethod
    def parse(cls, method: Any) -> Method:
        """A :class:`Method` from itself, a string (``"model/guide/objective"``, see the module docstring),
        a dict with keys ``model``, ``guide``, ``objective``, or a ``(model, guide, objective)`` tuple."""
        if isinstance(method, Method):
            return method
        if isinstance(method, dict):
            unknown = sorted(set(method) - {"model", "guide", "objective"})
            if unknown:
                raise UserError(f"a method dict has keys model, guide, objective; got {unknown}")
            return cls(**method)
        if isinstance(method, tuple) and len(method) == 3:
            return cls(*method)
        if not isinstance(method, str) or not method.strip():
            raise UserError(
                f"a method is a string such as 'iwae:k=5' or 'vae/iaf:n=2/iwae:k=5,grad=dreg', or "
                f"ppl_vae.Method(model=..., guide=..., objective=...); got {method!r}"
            )
        fields = _fields_of(method)
        return cls(**fields)

    @property
    def label(self) -> str:
        """The canonical string: the objective alone for a mean-field VAE, else ``model/guide/objective``."""
        if self.model == "vae" and self.guide == "meanfield":
            return self.objective
        return f"{self.model}/{self.guide}/{self.objective}"

    @property
    def key(self) -> tuple[str, str, str]:
        """``(model, guide, canonical objective)``: what identifies the method however it was spelled."""
        return (self.model, self.guide, parse_objective(self.objective).spec)

    @property
    def family(self) -> tuple[str, str]:
        """What fixes the parameter shapes: methods of one family start from the same weights."""
        return (self.model, self.guide)

    def build(self, input_dim: int, **defaults: Any) -> nn.Module:
        """The model for rows of ``input_dim`` values (``defaults``: see :func:`~ppl_vae.models.make_model`);
        a table's families (``schema=``) go to vae and hvae, the other models get one Gaussian for every
        column (and say at their first step that it scores model-space values)."""
        if defaults.get("schema") is not None and self.model.partition(":")[0] not in (
            "vae",
            "hvae",
        ):
            defaults = {**defaults, "schema": None, "likelihood": "gaussian"}
        return make_model(self.model, input_dim, self.guide, **defaults)

    def __str__(self) -> str:
        return self.label


@dataclass(frozen=True, eq=False)
class ProgramMethod:
    """A user's own program under an objective: ``ProgramMethod("cvae", CVAE, "analytic")``.

    ``build`` is called with no arguments (under the seed's ``torch.manual_seed``, so every method built by
    the same factory starts from the same weights for a seed) and returns an object with Pyro
    ``.model``/``.guide``. The comparison trains it on the Dataset it is given; a program that needs more
    than the observations (labels, conditioning inputs) takes them from the Dataset with the program
    contract's ``dataset_inputs(dataset, split)`` hook; ``data_plate`` names its data plate when that is not
    ``"data"`` (as ``fit(..., data_plate=)``).
    """

    name: str
    build_program: Any
    objective: str = "analytic"
    data_plate: str | None = None  # the program's data plate when it is not named "data"

    def __post_init__(self) -> None:
        if self.data_plate is not None and (
            not isinstance(self.data_plate, str) or not self.data_plate
        ):
            raise UserError(
                f"ProgramMethod {self.name!r}: data_plate must be a plate's name; got {self.data_plate!r}"
            )
        if not isinstance(self.name, str) or not self.name.strip() or "/" in self.name:
            raise UserError(f"a program method needs a name without '/'; got {self.name!r}")
        if not callable(self.build_program):
            raise UserError(
                f"ProgramMethod {self.name!r}: build_program must be a callable returning a program "
                f"(e.g. the class); got {type(self.build_program).__name__}"
            )
        object.__setattr__(self, "objective", parse_objective(self.objective).spec)

    model = property(lambda self: self.name)
    guide = property(lambda self: "own")

    @property
    def label(self) -> str:
        return f"{self.name}/{self.objective}"

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.name, "own", self.objective)

    @property
    def family(self) -> tuple[str, str]:
        return (self.name, "own")

    def build(self, input_dim: int, **defaults: Any) -> Any:
        return self.build_program()

    def __str__(self) -> str:
        return self.label


def method_of(model: nn.Module, objective: str) -> Method:
    """The method a trained model and its objective make (for runs trained elsewhere)."""
    config = getattr(model, "config", {}) or {}
    name = model_name(model)
    if name not in MODEL_NAMES:
        name = "vae"
    options = ""
    if name == "vae" and config.get("nets", "mlp") != "mlp":
        options = f":nets={config['nets']}"
    return Method(name + options, config.get("guide", "meanfield"), objective)


def _fields_of(method: str) -> dict[str, str]:
    """``"[model/][guide/]objective"`` -> the fields given; a lone prefix is a model or a guide by name."""
    parts = [p.strip() for p in method.strip().split("/")]
    if any(not p for p in parts) or len(parts) > 3:
        raise UserError(
            f"method {method!r}: write 'objective', 'guide/objective', 'model/objective' or "
            "'model/guide/objective' (e.g. 'vae/iaf:n=2/iwae:k=5,grad=dreg')"
        )
    *prefix, objective = parts
    fields: dict[str, str] = {"objective": objective}
    if len(prefix) == 2:
        fields.update(model=prefix[0], guide=prefix[1])
    elif prefix:
        name = prefix[0].partition(":")[0]
        if name in MODEL_NAMES:
            fields["model"] = prefix[0]
        elif name in GUIDES:
            fields["guide"] = prefix[0]
        else:
            raise UserError(
                f"method {method!r}: {name!r} is neither a model ({', '.join(MODEL_NAMES)}) nor a "
                f"guide ({', '.join(GUIDES)})"
            )
    return fields


def model_axis(
    methods: Any, models: Mapping[str, Any] | None, objectives: Sequence[str] | None
) -> tuple[list[Any], dict[str, str]]:
    """The methods of a comparison and ``{method label: model name}``.

    With ``models`` (``{name: model spec or program factory}``, e.g. ``{"d=2": "vae:latent=2",
    "mine": MyProgram}``) every model is crossed with every objective (default ``["analytic"]``); a spec
    names a registry model (``"vae:latent=2"``, ``"linear:latent=4"``, ``"vae:latent=2/iaf:n=2"`` with a
    guide), a callable is a :class:`ProgramMethod`. Without ``models``: ``methods`` as given, each its
    own name. Giving both is refused.
    """
    if models is None:
        if objectives is not None:
            raise UserError(
                "objectives= goes with models=; with methods=, write each method in full"
            )
        return methods, {}
    if methods:
        raise UserError("give methods= or models= (with objectives=), not both")
    if not isinstance(models, Mapping) or not models:
        raise UserError(
            f"models must be a non-empty dict {{name: spec or program factory}}, e.g. "
            f"{{'d=2': 'vae:latent=2', 'd=8': 'vae:latent=8'}}; got {models!r}"
        )
    objectives = ["analytic"] if objectives is None else list(objectives)
    if not objectives or any(not isinstance(o, str) for o in objectives):
        raise UserError(f"objectives must be a non-empty list of strings; got {objectives!r}")
    out: list[Any] = []
    names: dict[str, str] = {}
    for name, spec in models.items():
        for objective in objectives:
            method = _model_method(str(name), spec, objective)
            out.append(method)
            names[method.label] = str(name) if len(objectives) == 1 else f"{name}/{objective}"
    return out, names


def _model_method(name: str, spec: Any, objective: str) -> Method | ProgramMethod:
    """One cell's method: a registry model spec (``model`` or ``model/guide``) or a program factory."""
    if callable(spec) and not isinstance(spec, str):
        return ProgramMethod(name, spec, objective)
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(
            f"model {name!r}: a spec string such as 'vae:latent=2' or a callable returning a program; "
            f"got {spec!r}"
        )
    parts = [p.strip() for p in spec.split("/")]
    if len(parts) > 2:
        raise UserError(
            f"model {name!r}: write 'model' or 'model/guide' (no objective); got {spec!r}"
        )
    return Method(parts[0], parts[1] if len(parts) == 2 else "meanfield", objective)
