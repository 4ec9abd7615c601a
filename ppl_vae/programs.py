r"""The program contract: what every entry point of ppl_vae accepts, and what it finds in it.

**Programs.** A program is any object with Pyro programs ``.model`` and ``.guide`` (an
``nn.Module`` written as in Pyro's ``examples/vae/vae.py`` works unchanged; our
:class:`~ppl_vae.models.VAE` is one such object, with no path the contract does not give to
users), or :class:`Program` for two free functions. Optional hooks of the owner object:
``check_data(x, arg)`` validates the observations at the boundary (our VAE checks the likelihood's
support with it), or ``check_rows(rows, arg)`` the whole row-aligned batch (``(x, mask)``);
``dataset_inputs(dataset, split)`` returns the row-aligned tensors (labels, conditioning inputs, the
mask of missing cells) a program takes after ``x`` when it is given a :class:`~ppl_vae.data.Dataset`;
``split_missing(rows)`` turns ``(x_with_nan, ...)`` into ``(filled, mask, ...)`` (the built-in VAEs: NaN
means missing); ``epoch_metrics(dataset)`` returns extra numbers ``fit`` records after every epoch (M2's
test accuracy).

**Missing values.** NaN in the observations means a missing cell: :meth:`Program.rows` hands them to the
owner's ``split_missing`` hook, and refuses them in one line showing the Pyro idiom for a program without
one (:data:`~ppl_vae.data.missing.PYRO_MASK_IDIOM`).

**Data.** A tensor ``(N, ...)`` (rows are data points, any trailing shape), a
:class:`~ppl_vae.data.Dataset` (its train split), or a tuple of row-aligned tensors
``(x, y, ...)`` passed positionally: ``model(*batch)``, ``guide(*batch)`` (conditioning inputs,
labels). Every slice the library makes keeps the rows aligned.

**The data plate** is found **by name** (``"data"`` unless ``data_plate=`` says otherwise),
sized (``pyro.plate("data", len(x))``), unsized (``pyro.plate("data")``) or subsampled
(``pyro.plate("data", N, subsample_size=len(x))``): never by matching sizes. Sites inside it
are *local* (one value per data point); sites outside are *global*. In training a local site's
log-density is scaled by N/|B| and a global one's by 1, as Pyro's own subsampling does
(:class:`DataPlateScale`); a plate that declares its own full size is honoured when that size is
the number of training rows and refused otherwise. The estimators neutralise a plate's own
subsample scale, so per-point values are never multiplied by it.

**Parameters.** Every parameter the programs register (``pyro.module``, ``pyro.param`` with its
constraint) is trained, in a scoped parameter store; the trained values of plain ``pyro.param``
sites are kept per program (:func:`trained_params`) and seen by every later call that is given
the same program (:func:`param_scope`); module parameters live on their modules.

**Where the rest lives.** The inspection (:func:`~ppl_vae.program_inspection.inspect_program`: the data plate
by name or as the one plate around the observations, site classes, scales, supports) and a chunk's run
(:mod:`ppl_vae.program_chunks`: a particle plate, unscaled sites, the chunk's own site sets) have modules of
their own, importable from here as before; what is read from sites (scales, supports, order, modes) is in
:mod:`ppl_vae.program_sites`, one-line errors from a program in :mod:`ppl_vae.program_errors`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Union, cast, runtime_checkable

import pyro.poutine as poutine
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import Message
from pyro.poutine.util import site_is_subsample

from ._checks import check_finite
from .errors import ArgumentTypeError, DataError
from .program_sites import (
    PerPointScale,
    ProgramWarning,
    eval_mode,
    program_modules,
)

if TYPE_CHECKING:
    import pandas as pd

    from .data import Dataset

__all__ = [
    "DataLike",
    "DataPlateScale",
    "PerPointScale",
    "Program",
    "ProgramInfo",
    "ProgramLike",
    "ProgramWarning",
    "PyroFn",
    "PyroProgram",
    "as_program",
    "as_rows",
    "data_frame",
    "evaluating",
    "hook_rows",
    "rows_slice",
    "sample_sites",
    "vectorized_frames",
    "with_data_plate",
]

#: Names of the contract that live in their own modules (the inspection, the chunk runs), importable from
#: here as before: ``from ppl_vae.programs import inspect_program`` (:func:`__getattr__`).
MOVED = {
    "find_data_plate": "program_inspection",
    "detect_data_plate": "program_inspection",
    "inspect_program": "program_inspection",
    "particle_context": "program_chunks",
    "per_point": "program_chunks",
    "run_with_particles": "program_chunks",
    "site_sets": "program_chunks",
}

#: How many rows :func:`inspect_program` runs the programs on.
INSPECT_ROWS = 16
PARTICLE_PLATE = "_particles"
MODULE_DIVIDER = "$$$"  # pyro.module's "name$$$param"


@runtime_checkable
class PyroProgram(Protocol):
    """Anything with a Pyro ``model`` and ``guide`` called as ``model(*batch)``, ``guide(*batch)`` (an
    ``nn.Module`` written as in Pyro's ``examples/vae/vae.py``, :class:`~ppl_vae.VAE`, a :class:`Program`)."""

    @property
    def model(self) -> Callable[..., object]: ...

    @property
    def guide(self) -> Callable[..., object]: ...


#: A Pyro program function, called as ``fn(*batch)`` (its return value is not used).
PyroFn = Callable[..., object]
#: What the entry points accept as "the program": an object with ``.model``/``.guide``
#: (:class:`PyroProgram`, :class:`Program`), or a model function (with ``guide=`` beside it).
ProgramLike = Union[PyroProgram, "Program", PyroFn]
#: Data as the entry points take it: a tensor ``(N, ...)``, a :class:`~ppl_vae.data.Dataset`, a tuple
#: (or list) of row-aligned tensors passed positionally (``model(*batch)``), or a table as a pandas
#: DataFrame (for a table model, :mod:`ppl_vae.models.tables`).
DataLike = Union[
    torch.Tensor, "Dataset", tuple[torch.Tensor, ...], list[torch.Tensor], "pd.DataFrame"
]


# ============================================================================ programs
@dataclass(eq=False)
class Program:
    """A model/guide pair with the name of its data plate.

    Args:
        model, guide: Pyro programs, called as ``model(*batch)`` and ``guide(*batch)``.
        data_plate: the name of the plate over data points (default ``"data"``).
        owner: the object the pair belongs to (an ``nn.Module`` whose parameters and
            ``check_data`` it uses); set by :func:`as_program`, None for free functions.

    Examples:
        >>> import pyro
        >>> import pyro.distributions as dist
        >>> import torch
        >>> import ppl_vae as pv
        >>> def model(x):
        ...     loc = pyro.param("loc", torch.zeros(1))
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
        ...         pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)
        >>> def guide(x):
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("z", dist.Normal(0.8 * x, 0.45).to_event(1))
        >>> program = pv.Program(model, guide)
        >>> pv.iw_log_likelihood(program, torch.zeros(5, 1), num_samples=50, seed=0).shape
        torch.Size([5])
    """

    model: Callable[..., Any]
    guide: Callable[..., Any]
    data_plate: str = "data"
    owner: Any = field(default=None, repr=False)
    identity: Any = field(
        default=None, repr=False
    )  # what :attr:`key` returns when set (derived programs)

    def __post_init__(self) -> None:
        for arg in ("model", "guide"):
            if not callable(getattr(self, arg)):
                raise ArgumentTypeError(
                    f"Program: {arg} must be a callable Pyro program; got "
                    f"{type(getattr(self, arg)).__name__}"
                )
        if not isinstance(self.data_plate, str) or not self.data_plate:
            raise ArgumentTypeError(
                f"data_plate must be the name of a plate (a non-empty string); "
                f"got {self.data_plate!r}"
            )

    @property
    def module(self) -> torch.nn.Module | None:
        """The ``nn.Module`` the programs belong to, if any (where module parameters live)."""
        return self.owner if isinstance(self.owner, torch.nn.Module) else None

    @property
    def modules(self) -> list[torch.nn.Module]:
        """Every ``nn.Module`` the pair belongs to (the owner, the owner's module attributes, model and guide
        when they are modules): what the estimators put in eval mode (:func:`evaluating`)."""
        return program_modules(self.owner, self.model, self.guide)

    @property
    def key(self) -> Any:
        """What identifies this program across calls (for the trained ``pyro.param`` values): the
        owner object, else the model function (so ``(model, guide)`` and ``Program(model, guide)``
        name the same program)."""
        if self.identity is not None:
            return self.identity
        return self.owner if self.owner is not None else getattr(self.model, "__self__", self.model)

    def check_data(self, batch: tuple[torch.Tensor, ...], arg: str) -> tuple[torch.Tensor, ...]:
        """The owner's ``check_rows(batch, arg)`` if it has one, else its ``check_data(x, arg)`` on the
        observations (the first tensor), if it has one."""
        rows_check = getattr(self.owner, "check_rows", None)
        if callable(rows_check):
            return tuple(rows_check(tuple(batch), arg))
        check = getattr(self.owner, "check_data", None)
        if not callable(check):
            return batch
        return (check(batch[0], arg), *batch[1:])

    def rows(self, data: Any, arg: str = "x", split: str = "train") -> tuple[torch.Tensor, ...]:
        """The row-aligned tensors of ``data`` as this program takes them, checked: a Dataset's ``split``
        with the owner's ``dataset_inputs``, NaN split into filled values and a mask by the owner's
        ``split_missing`` (see the module docstring), then :meth:`check_data`."""
        from .data import Dataset
        from .data.missing import PYRO_MASK_IDIOM

        if isinstance(data, Dataset):
            hook = getattr(self.owner, "dataset_inputs", None)
            x = data.train if split == "train" else data.test
            extra = tuple(hook(data, split)) if callable(hook) else ()
            if not callable(hook) and data.has_missing:
                raise DataError(
                    f"{arg}: the data have missing cells and this program takes no mask: {PYRO_MASK_IDIOM}"
                )
            return self.check_data(as_rows((x, *extra), arg), arg)
        rows = as_rows(data, arg, nan_ok=True)
        if rows[0].is_floating_point() and bool(torch.isnan(rows[0]).any()):
            split_hook = getattr(self.owner, "split_missing", None)
            if not callable(split_hook):
                raise DataError(
                    f"{arg} has missing values (NaN) and this program has no way to leave them out: "
                    f"{PYRO_MASK_IDIOM}"
                )
            rows = tuple(split_hook(rows))
        return self.check_data(rows, arg)


def as_program(
    program: ProgramLike, guide: PyroFn | None = None, data_plate: str | None = None
) -> Program:
    """Normalise the forms every entry point accepts into a :class:`Program`.

    ``as_program(vae)`` (an object with ``.model``/``.guide``), ``as_program(model, guide)`` (two
    callables; bound methods of one object count as that object), or a :class:`Program`.
    """
    if isinstance(program, Program):
        if guide is not None:
            raise ArgumentTypeError("pass either a Program or (model, guide), not both")
        if data_plate is not None and data_plate != program.data_plate:
            return Program(
                program.model, program.guide, data_plate, program.owner, program.identity
            )
        return program
    plate = "data" if data_plate is None else data_plate
    if guide is not None:
        if not callable(program):
            raise ArgumentTypeError(
                f"model must be a callable Pyro program; got {type(program).__name__}"
            )
        owner = getattr(program, "__self__", None)
        if owner is None or getattr(guide, "__self__", None) is not owner:
            owner = None
        return Program(program, guide, plate, owner)
    model, guide_fn = getattr(program, "model", None), getattr(program, "guide", None)
    if callable(model) and callable(guide_fn):
        return Program(model, guide_fn, plate, program)
    raise ArgumentTypeError(
        f"expected a program: an object with .model and .guide Pyro programs (e.g. ppl_vae.VAE or an "
        f"nn.Module written as in Pyro's examples/vae/vae.py), ppl_vae.Program(model, guide), or "
        f"(model, guide); got {type(program).__name__}"
    )


# ============================================================================ data rows
def as_rows(data: DataLike, arg: str = "data", nan_ok: bool = False) -> tuple[torch.Tensor, ...]:
    """The row-aligned tensors of ``data``: a tensor ``(N, ...)`` -> ``(x,)``, a tuple/list of
    tensors -> itself, a :class:`~ppl_vae.data.Dataset` -> ``(data.train,)`` (with ``data.train_mask``
    after it when cells are missing).

    Checks: tensors with at least one dimension, the same number N >= 1 of rows, finite values in
    floating tensors (``nan_ok``: NaN allowed in the observations, the first tensor, for
    :meth:`Program.rows` to split); integer observations (the first tensor) become float32.
    """
    from .data import Dataset

    if isinstance(data, Dataset):
        data = data.train if data.train_mask is None else (data.train, data.train_mask)
    if isinstance(data, torch.Tensor):
        parts: Sequence[Any] = (data,)
    elif isinstance(data, (tuple, list)) and data:
        parts = data
    else:
        raise ArgumentTypeError(
            f"{arg} must be a tensor (N, ...), a tuple of row-aligned tensors (x, y, ...) or a "
            f"ppl_vae Dataset; got {type(data).__name__}"
        )
    rows = [
        _checked_rows(t, i, arg if len(parts) == 1 else f"{arg}[{i}]", nan_ok)
        for i, t in enumerate(parts)
    ]
    n = len(rows[0])
    if any(len(t) != n for t in rows):
        raise DataError(
            f"the tensors of {arg} must have the same number of rows (row-aligned); got "
            f"{[len(t) for t in rows]}"
        )
    return tuple(rows)


def _checked_rows(t: Any, i: int, name: str, nan_ok: bool) -> torch.Tensor:
    """``data``'s ``i``-th tensor checked (a tensor with N >= 1 rows, finite floats: NaN allowed in the
    observations, ``i == 0``, when ``nan_ok``); integer observations become float32."""
    if not isinstance(t, torch.Tensor):
        raise ArgumentTypeError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
    if t.dim() == 0 or t.shape[0] == 0:
        raise DataError(
            f"{name} must have at least one row (shape (N, ...)); got shape {tuple(t.shape)}"
        )
    if i == 0 and not (t.is_floating_point() or t.is_complex()):
        t = t.float()
    if not (i == 0 and nan_ok and t.is_floating_point() and not bool(torch.isinf(t).any())):
        check_finite(t, name)
    return t


def hook_rows(hook: Callable[..., Any], dataset: Any, split: str) -> tuple[torch.Tensor, ...]:
    """The tensors a program's ``dataset_inputs(dataset, split)`` hook returns, as a tuple: one tensor alone
    is one input; anything else is a one-line refusal naming what came back (never its values)."""
    got = hook(dataset, split)
    if isinstance(got, torch.Tensor):
        return (got,)
    if isinstance(got, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in got):
        return tuple(got)
    what = type(got).__name__
    if isinstance(got, (tuple, list)):
        what += " of " + ", ".join(type(t).__name__ for t in got[:4])
    raise ArgumentTypeError(
        f"dataset_inputs(dataset, {split!r}) must return the row-aligned tensors the program takes after x, "
        f"a tuple such as (labels,); got a {what}"
    )


def rows_slice(rows: tuple[torch.Tensor, ...], index: Any) -> tuple[torch.Tensor, ...]:
    """The same rows of every tensor (a slice or an index tensor)."""
    return tuple(t[index] for t in rows)


# ============================================================================ inspection
@dataclass(frozen=True)
class ProgramInfo:
    """What one inspection of a program found (see :func:`inspect_program`).

    Attributes:
        data_plate, data_dim: the data plate's name and (negative) batch dim.
        full_size: the size the data plate declares when it subsamples
            (``pyro.plate("data", N, subsample_size=...)``), else None.
        observed: observed model sites; latent: the other model sample sites.
        guide_aux: guide sites marked ``infer={"is_auxiliary": True}``.
        local: sample sites (model or guide) inside the data plate.
        global_latent: latent sites outside it.
        non_reparam: guide latent sites without ``rsample`` (discrete ones).
        enumerated: sites with ``infer={"enumerate": ...}`` (in model or guide).
        model_only: model latents the guide does not sample (model-side enumeration).
        max_plate_nesting: the deepest vectorised plate of model and guide (>= 1).
        param_names: plain ``pyro.param`` sites (not ``pyro.module``'s).
        scaled: ``(site, scale)`` for the sites the program scales itself (``poutine.scale``): its training
            objective, removed from every per-point value (:class:`PerPointScale`).
        outside_support: ``(site, share)`` of observed values outside the site's support, on the inspected rows.
        guide_factors: observed guide sites (``pyro.factor``) that are not reparameterised (no rsample).
    """

    data_plate: str
    data_dim: int
    full_size: int | None
    observed: tuple[str, ...]
    latent: tuple[str, ...]
    guide_aux: tuple[str, ...]
    local: frozenset[str]
    global_latent: tuple[str, ...]
    non_reparam: tuple[str, ...]
    enumerated: tuple[str, ...]
    model_only: tuple[str, ...]
    max_plate_nesting: int
    param_names: tuple[str, ...]
    scaled: tuple[tuple[str, float | str], ...] = ()
    outside_support: tuple[tuple[str, float], ...] = ()
    guide_factors: tuple[str, ...] = ()

    @property
    def rank(self) -> int:
        """Batch rank under a particle plate (one more than :attr:`max_plate_nesting`)."""
        return self.max_plate_nesting + 1

    @property
    def data_index(self) -> int:
        """Index of the data dim in a log-prob padded to :attr:`rank` dims."""
        return self.rank + self.data_dim


def sample_sites(trace: poutine.Trace) -> dict[str, dict[str, Any]]:
    """Sample sites of a trace, without plates' subsample sites and ``pyro.deterministic`` records."""
    return {
        n: cast("dict[str, Any]", s)
        for n, s in trace.nodes.items()
        if s["type"] == "sample"
        and not site_is_subsample(s)
        and not (s["infer"] or {}).get("_deterministic", False)
    }


def vectorized_frames(site: dict) -> list:
    return [f for f in site["cond_indep_stack"] if f.vectorized]


def _fmt(names: Any) -> str:
    return "{" + ", ".join(repr(n) for n in sorted(names)) + "}"


def data_frame(site: Mapping[str, Any], plate: str) -> Any:
    """The frame of the plate named ``plate`` among a site's plates, or None."""
    return next((f for f in site["cond_indep_stack"] if f.name == plate), None)


def with_data_plate(program: Program, info: ProgramInfo) -> Program:
    """``program`` with the data plate the inspection found (the same program when it is the one named)."""
    if info.data_plate == program.data_plate:
        return program
    return Program(program.model, program.guide, info.data_plate, program.owner, program.key)


@contextlib.contextmanager
def evaluating(program: Program) -> Iterator[None]:
    """The program's modules in eval mode (BatchNorm running statistics, no Dropout), each submodule's
    mode restored after: estimators' values never depend on the other points of a chunk."""
    with eval_mode(program.modules):
        yield


# ============================================================================ scaling
class DataPlateScale(Messenger):
    """Scale sites inside the data plate by ``scale`` (N/|B| in training) and leave global sites at 1.

    A data plate that subsamples (``pyro.plate("data", N, subsample_size=B)``) has already multiplied
    its sites by N/B; that factor is replaced, not multiplied, so the result is ``scale`` either way
    (``scale=1`` gives the unscaled per-point log-densities the estimators need). ``latent_weight``
    multiplies every latent site (the KL weight of beta-VAEs and annealing), local or global.
    """

    def __init__(self, plate: str, scale: float = 1.0, latent_weight: float = 1.0) -> None:
        super().__init__()
        self.plate = plate
        self.scale = scale
        self.latent_weight = latent_weight

    def _process_message(self, msg: Message) -> None:
        if msg["type"] != "sample" or site_is_subsample(msg):
            return
        frame = data_frame(msg, self.plate)
        if frame is not None:
            own = 1.0
            if (
                frame.full_size not in (None, -1)
                and frame.size not in (-1, 0)
                and frame.full_size != frame.size
            ):
                own = frame.full_size / frame.size
            if own != 1.0 or self.scale != 1.0:
                msg["scale"] = (self.scale / own) * msg["scale"]
        if self.latent_weight != 1.0 and not msg["is_observed"]:
            msg["scale"] = self.latent_weight * msg["scale"]


def __getattr__(name: str) -> Any:
    """The names in :data:`MOVED`, from the modules they live in (imported on first use: no import cycle)."""
    if name in MOVED:
        import importlib

        return getattr(importlib.import_module(f"{__package__}.{MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
