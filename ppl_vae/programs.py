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
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions import Unit
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from ._checks import check_finite
from .errors import ArgumentTypeError, DataError, ProgramError
from .program_errors import program_failure
from .program_sites import (
    PerPointScale,
    ProgramWarning,
    enclosing_plates,
    eval_mode,
    program_modules,
    say_once,
    support_shares,
    user_scales,
)

__all__ = [
    "DataPlateScale",
    "PerPointScale",
    "Program",
    "ProgramInfo",
    "ProgramWarning",
    "PyroProgram",
    "as_program",
    "as_rows",
    "inspect_program",
    "per_point",
    "run_with_particles",
    "site_sets",
]

#: How many rows :func:`inspect_program` runs the programs on.
INSPECT_ROWS = 16
PARTICLE_PLATE = "_particles"
_MODULE_DIVIDER = "$$$"  # pyro.module's "name$$$param"


@runtime_checkable
class PyroProgram(Protocol):
    """Anything with a Pyro ``model`` and ``guide`` called as ``model(*batch)``, ``guide(*batch)``."""

    def model(self, *args: Any) -> Any: ...

    def guide(self, *args: Any) -> Any: ...


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
    program: Any, guide: Callable | None = None, data_plate: str | None = None
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
    if callable(getattr(program, "model", None)) and callable(getattr(program, "guide", None)):
        return Program(program.model, program.guide, plate, program)
    raise ArgumentTypeError(
        f"expected a program: an object with .model and .guide Pyro programs (e.g. ppl_vae.VAE or an "
        f"nn.Module written as in Pyro's examples/vae/vae.py), ppl_vae.Program(model, guide), or "
        f"(model, guide); got {type(program).__name__}"
    )


# ============================================================================ data rows
def as_rows(data: Any, arg: str = "data", nan_ok: bool = False) -> tuple[torch.Tensor, ...]:
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
    rows = []
    for i, t in enumerate(parts):
        name = arg if len(parts) == 1 else f"{arg}[{i}]"
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
        rows.append(t)
    n = len(rows[0])
    if any(len(t) != n for t in rows):
        raise DataError(
            f"the tensors of {arg} must have the same number of rows (row-aligned); got "
            f"{[len(t) for t in rows]}"
        )
    return tuple(rows)


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


def sample_sites(trace: poutine.Trace) -> dict[str, dict]:
    """Sample sites of a trace, without plates' subsample sites and ``pyro.deterministic`` records."""
    return {
        n: s
        for n, s in trace.nodes.items()
        if s["type"] == "sample"
        and not site_is_subsample(s)
        and not s["infer"].get("_deterministic", False)
    }


def vectorized_frames(site: dict) -> list:
    return [f for f in site["cond_indep_stack"] if f.vectorized]


def _fmt(names: Any) -> str:
    return "{" + ", ".join(repr(n) for n in sorted(names)) + "}"


def _data_frame(site: dict, plate: str) -> Any:
    return next((f for f in site["cond_indep_stack"] if f.name == plate), None)


def find_data_plate(
    program: Program, model_sites: dict, observed: list[str], n0: int
) -> tuple[int, int | None]:
    """The data plate's dim and declared full size; errors that name the sites, plates and the fix."""
    name = program.data_plate
    if not observed:
        raise ProgramError(
            "the model has no observed sample site (obs=...): nothing scores the data; observe it with "
            "pyro.sample(name, dist, obs=x)"
        )
    outside = [s for s in observed if _data_frame(model_sites[s], name) is None]
    if outside:
        plates = {s: [f.name for f in model_sites[s]["cond_indep_stack"]] for s in outside}
        hint = (
            f"pass data_plate={sorted({p for ps in plates.values() for p in ps})[0]!r} if that is your data "
            "plate, or "
            if any(plates.values())
            else ""
        )
        raise ProgramError(
            f"observed site(s) {_fmt(outside)} are not inside a plate named {name!r} (their plates: {plates}); "
            f"per-point values and mini-batch scaling need the data plate by name: {hint}wrap the "
            f"observations in `with pyro.plate({name!r}, len(x)):`"
        )
    frame = _data_frame(model_sites[observed[0]], name)
    if frame.dim is None:
        raise ProgramError(
            f"the data plate {name!r} is sequential (`for i in pyro.plate(...)`); ppl_vae needs a vectorised "
            f"plate: `with pyro.plate({name!r}, len(x)):` with the data on its batch dim"
        )
    for s in observed:
        other = _data_frame(model_sites[s], name)
        if other.dim != frame.dim:
            raise ProgramError(
                f"observed sites use the plate {name!r} at different dims ({frame.dim} and "
                f"{other.dim}); use one data plate"
            )
    size, full = frame.size, frame.full_size
    if size != -1 and size != n0:
        if full is not None and full != size:
            what = f"subsample_size={size}"
        else:
            what = f"size {size}"
        raise ProgramError(
            f"the data plate {name!r} has {what} but the batch has {n0} rows: size it by the batch "
            f"(pyro.plate({name!r}, len(x))), or declare the full data size with "
            f"pyro.plate({name!r}, N, subsample_size=len(x))"
        )
    return frame.dim, (full if full is not None and full not in (-1, size) else None)


def _traces(
    program: Program, batch: tuple[torch.Tensor, ...]
) -> tuple[poutine.Trace, poutine.Trace, poutine.Trace]:
    """Guide, replayed model (log-probs computed, validation on) and the parameters they register; an
    exception from the programs becomes one :class:`ProgramError` line naming the site (see
    :mod:`ppl_vae.program_errors`)."""
    n0 = len(batch[0])
    shapes = ", ".join(str(tuple(t.shape)) for t in batch)
    entry = f"running the model and guide on the first {n0} rows (batch shapes {shapes}) failed"
    with poutine.trace(param_only=True) as param_capture, pyro.validation_enabled(True):
        try:
            guide_tr = poutine.trace(program.guide).get_trace(*batch)
            model_tr = poutine.trace(poutine.replay(program.model, trace=guide_tr)).get_trace(
                *batch
            )
            for tr in (guide_tr, model_tr):
                tr.compute_log_prob(lambda name, site: not site_is_subsample(site))
        except ProgramError:
            raise
        except Exception as err:
            hint = ""
            if f"inside plate('{program.data_plate}')" in str(err):
                hint = (
                    f" (the data plate {program.data_plate!r} is sized differently from the batch: size it by the "
                    f"batch, pyro.plate({program.data_plate!r}, len(x)), or declare the full data size with "
                    f"pyro.plate({program.data_plate!r}, N, subsample_size=len(x)))"
                )
            raise program_failure(err, entry + hint, program, batch) from err
    return guide_tr, model_tr, param_capture.trace


def detect_data_plate(program: Program, model_sites: dict, observed: list[str]) -> Program:
    """``program`` itself when a plate has its data plate's name (or none is observed), else the program
    with the one plate that encloses every observed site as its data plate (said once, a
    :class:`ProgramWarning`); two candidates are refused naming both."""
    name = program.data_plate
    if name != "data" or not observed:
        return program
    if any(_data_frame(model_sites[s], name) is not None for s in observed):
        return program
    candidates = enclosing_plates(model_sites, observed)
    if len(candidates) > 1:
        raise ProgramError(
            f"no plate is named 'data' and the plates {candidates} all enclose every observed site: "
            f"pass data_plate= with the plate over data points (e.g. data_plate={candidates[0]!r})"
        )
    if not candidates:
        return program  # find_data_plate explains
    say_once(
        program.key,
        f"ppl_vae: no plate is named 'data'; plate {candidates[0]!r} encloses every observed site, so it "
        f"is the data plate (pass data_plate={candidates[0]!r} to say so)",
        stacklevel=4,
    )
    return Program(program.model, program.guide, candidates[0], program.owner, program.key)


def _site_classes(
    model_sites: dict, guide_sites: dict
) -> tuple[list[str], list[str], list[str], list[str], list[str]]:
    """``(observed, latent, guide latent, guide auxiliary, enumerated)`` names."""
    observed = [n for n, s in model_sites.items() if s["is_observed"]]
    latent = [n for n, s in model_sites.items() if not s["is_observed"]]
    guide_latent = [n for n, s in guide_sites.items() if not s["is_observed"]]
    aux = [n for n in guide_latent if guide_sites[n]["infer"].get("is_auxiliary", False)]
    enumerated = sorted(
        {
            n
            for sites in (model_sites, guide_sites)
            for n, s in sites.items()
            if s["infer"].get("enumerate") in ("parallel", "sequential")
        }
    )
    return observed, latent, guide_latent, aux, enumerated


def _check_matching(
    latent: list[str], guide_latent: list[str], aux: list[str], enumerated: list[str]
) -> list[str]:
    """Model latents the guide lacks (enumerated ones allowed); refuses unmatched sites by name."""
    model_only = [n for n in latent if n not in guide_latent]
    guide_only = set(guide_latent) - set(latent) - set(aux)
    bad_model_only = [n for n in model_only if n not in enumerated]
    if bad_model_only or guide_only:
        raise ProgramError(
            "the model's and the guide's latent sites do not match: model-only "
            f"{_fmt(bad_model_only)}, guide-only {_fmt(guide_only)}. Every unobserved model site needs a "
            "guide site of the same name (or, for a discrete site summed out by the 'enum' objective, "
            "infer={'enumerate': 'parallel'} in the model)"
        )
    return model_only


def _max_plate_nesting(model_sites: dict, guide_sites: dict, dim: int) -> int:
    mpn = max(
        [
            -f.dim
            for sites in (model_sites, guide_sites)
            for s in sites.values()
            for f in vectorized_frames(s)
        ]
        + [-dim, 1]
    )
    for sites in (model_sites, guide_sites):
        for name, site in sites.items():
            if site["log_prob"].dim() > mpn:
                raise ProgramError(
                    f"site {name!r} has log_prob shape {tuple(site['log_prob'].shape)}: batch dims outside every "
                    f"plate (max plate nesting {mpn}); declare them with pyro.plate or move them into the event "
                    "with .to_event(...)"
                )
    return mpn


def _support(model_sites: dict, observed: list[str]) -> tuple[tuple[str, float], ...]:
    shares = support_shares(model_sites, observed)
    return tuple((n, out / total) for n, (out, total) in shares.items() if out and total)


def _refuse_unobserved(program: Program, given: int) -> None:
    """A model that observed nothing: when it takes more arguments than the data gave (``model(xs,
    ys=None)`` observes ``ys`` only when given), say how to give them."""
    try:
        params = list(inspect.signature(program.model).parameters.values())
    except (TypeError, ValueError):
        params = []
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    hint = ""
    if len(positional) > given:
        missing = ", ".join(positional[given:])
        hint = (
            f"; the model takes {missing} after the {given} tensor(s) it was given: pass them as row-aligned "
            "tensors of the data tuple, (x, "
            + missing
            + "), or, with a Dataset, return them from the "
            "program's dataset_inputs(dataset, split) hook"
        )
    raise ProgramError(
        "the model has no observed sample site (obs=...): nothing scores the data; observe it with "
        f"pyro.sample(name, dist, obs=x){hint}"
    )


def inspect_program(
    program: Program, rows: tuple[torch.Tensor, ...], *, particles: bool = False
) -> ProgramInfo:
    """Run guide and replayed model once on the first rows of ``rows`` (validation on) and classify sites.

    Raises :class:`~ppl_vae.errors.ProgramError` naming sites, plates and the fix when the pair breaks
    the contract; errors from inside the user's programs (Pyro's validation included) are raised as one
    ProgramError line naming the site where they were raised (chained), never swallowed. When no plate
    has the data plate's name, the one plate enclosing every observed site is the data plate
    (:func:`detect_data_plate`; ``info.data_plate`` is the name found).
    """
    batch = rows_slice(rows, slice(0, min(len(rows[0]), INSPECT_ROWS)))
    n0 = len(batch[0])
    guide_tr, model_tr, param_trace = _traces(program, batch)
    model_sites, guide_sites = sample_sites(model_tr), sample_sites(guide_tr)
    observed, latent, guide_latent, aux, enumerated = _site_classes(model_sites, guide_sites)
    model_only = _check_matching(latent, guide_latent, aux, enumerated)
    if not observed:
        _refuse_unobserved(program, len(batch))
    program = detect_data_plate(program, model_sites, observed)
    dim, full = find_data_plate(program, model_sites, observed, n0)
    local = frozenset(
        n
        for sites in (model_sites, guide_sites)
        for n, s in sites.items()
        if _data_frame(s, program.data_plate) is not None
    )
    non_reparam = tuple(
        n
        for n in guide_latent
        if n not in aux and not getattr(guide_sites[n]["fn"], "has_rsample", False)
    )
    params = tuple(
        n for n, s in param_trace.nodes.items() if s["type"] == "param" and _MODULE_DIVIDER not in n
    )
    scaled = user_scales(model_sites, program.data_plate) + tuple(
        item
        for item in user_scales({n: guide_sites[n] for n in guide_latent}, program.data_plate)
        if item[0] not in model_sites or item not in user_scales(model_sites, program.data_plate)
    )
    return ProgramInfo(
        data_plate=program.data_plate,
        data_dim=dim,
        full_size=full,
        observed=tuple(observed),
        latent=tuple(latent),
        guide_aux=tuple(aux),
        local=local,
        global_latent=tuple(n for n in latent if n not in local),
        non_reparam=non_reparam,
        enumerated=tuple(enumerated),
        model_only=tuple(model_only),
        max_plate_nesting=_max_plate_nesting(model_sites, guide_sites, dim),
        param_names=params,
        scaled=scaled,
        outside_support=_support(model_sites, observed),
        guide_factors=tuple(
            n
            for n, site in guide_sites.items()
            if site["is_observed"]
            and isinstance(site["fn"], Unit)
            and not getattr(site["fn"], "has_rsample", True)
        ),
    )


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

    def _process_message(self, msg: dict[str, Any]) -> None:
        if msg["type"] != "sample" or site_is_subsample(msg):
            return
        frame = _data_frame(msg, self.plate)
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


# ============================================================================ particles
def particle_context(info: ProgramInfo, k: int | None) -> Any:
    """The context a chunk's programs run in: a particle plate of size ``k`` left of every plate (none for
    ``k=None``: one particle, the programs unvectorised) and :class:`PerPointScale` (unscaled sites)."""
    stack = contextlib.ExitStack()
    if k is not None:
        stack.enter_context(pyro.plate(PARTICLE_PLATE, k, dim=-info.rank))
    stack.enter_context(PerPointScale())
    return stack


def run_with_particles(
    program: Program,
    info: ProgramInfo,
    batch: tuple[torch.Tensor, ...],
    k: int | None,
) -> tuple[poutine.Trace, poutine.Trace]:
    """Guide and replayed model on ``batch`` under a particle plate of size ``k`` left of every plate
    (``k=None``: no particle plate, one particle).

    Every site's scale is removed (:class:`PerPointScale`: the user's ``poutine.scale``, a subsampling
    plate's factor), so site log-densities are per point and unscaled. Returns ``(model_trace, guide_trace)``.
    """
    with particle_context(info, k):
        guide_tr = poutine.trace(program.guide).get_trace(*batch)
        model_tr = poutine.trace(poutine.replay(program.model, trace=guide_tr)).get_trace(*batch)
    return model_tr, guide_tr


def _names(trace: poutine.Trace) -> tuple[set[str], set[str]]:
    """Observed and latent sample-site names of a trace (plates' subsample sites and deterministic left out)."""
    observed, latent = set(), set()
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if site["infer"].get("_deterministic", False):
            continue
        (observed if site["is_observed"] else latent).add(name)
    return observed, latent


def site_sets(
    model_tr: poutine.Trace, guide_tr: poutine.Trace, info: ProgramInfo
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """``(observed, latent, guide auxiliary)`` site names of *this chunk's* traces.

    Programs whose sites depend on the batch (Pyro's DMM: one site per time step up to the batch's longest
    sequence) have other sites in other chunks than in the inspection; each chunk is read on its own, and a
    site the inspection did not see must satisfy the same contract (inside the data plate, matched by the
    guide), else it is refused by name: never a dropped term.
    """
    observed, latent = _names(model_tr)
    _, guide_latent = _names(guide_tr)
    if (
        observed == set(info.observed)
        and latent == set(info.latent)
        and guide_latent == set(info.latent) | set(info.guide_aux)
    ):
        return info.observed, info.latent, info.guide_aux
    aux = {n for n in guide_latent if guide_tr.nodes[n]["infer"].get("is_auxiliary", False)}
    new = (observed | latent | guide_latent) - set(info.observed + info.latent + info.guide_aux)
    unmatched = (latent - guide_latent) | (guide_latent - latent - aux)
    outside = {
        n
        for n in new
        if _data_frame((model_tr if n in model_tr.nodes else guide_tr).nodes[n], info.data_plate)
        is None
    }
    if unmatched or outside:
        bad = sorted(unmatched | outside)
        raise ProgramError(
            f"site(s) {bad} of this chunk "
            + ("have no match in the other program" if unmatched else "")
            + (" and " if unmatched and outside else "")
            + (f"lie outside the data plate {info.data_plate!r}" if outside else "")
            + f" (the inspection of the first rows saw {sorted(info.observed + info.latent)}): sites that "
            "depend on the batch must be inside the data plate, with a guide site for every latent"
        )
    order = [n for n in model_tr.nodes if n in observed or n in latent]
    return (
        tuple(n for n in order if n in observed),
        tuple(n for n in order if n in latent),
        tuple(n for n in guide_tr.nodes if n in aux),
    )


def per_point(t: torch.Tensor, info: ProgramInfo) -> torch.Tensor:
    """Sum a log-prob over every batch dim except particles and data: ``-> (K or 1, N or 1)``."""
    if t.dim() < info.rank:
        t = t.reshape((1,) * (info.rank - t.dim()) + tuple(t.shape))
    dims = [i for i in range(1, info.rank) if i != info.data_index]
    return t.sum(dims) if dims else t
