"""The inspection of a program: one run of guide and replayed model that classifies its sites.

:func:`inspect_program` runs the guide and the model replayed on it once on the first rows of the data
(validation on) and returns a :class:`~ppl_vae.programs.ProgramInfo`: the data plate (by name, or the one
plate that encloses every observed site, :func:`detect_data_plate`), observed, latent, auxiliary, local and
global sites, discrete and enumerated ones, ``max_plate_nesting``, plain ``pyro.param`` names, the scales the
program applies itself and the share of observed values outside their supports. Errors name the sites,
plates and the fix; an exception from the program is one line naming the site (:mod:`.program_errors`).
"""

from __future__ import annotations

import inspect
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions import Unit
from pyro.poutine.util import site_is_subsample

from .errors import ProgramError
from .program_errors import program_failure
from .program_sites import enclosing_plates, say_once, support_shares, user_scales
from .programs import (
    INSPECT_ROWS,
    MODULE_DIVIDER,
    Program,
    ProgramInfo,
    data_frame,
    rows_slice,
    sample_sites,
    vectorized_frames,
)

__all__ = ["detect_data_plate", "find_data_plate", "inspect_program"]


def _fmt(names: Any) -> str:
    return "{" + ", ".join(repr(n) for n in sorted(names)) + "}"


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
    _refuse_outside(model_sites, observed, name)
    frame = data_frame(model_sites[observed[0]], name)
    if frame.dim is None:
        raise ProgramError(
            f"the data plate {name!r} is sequential (`for i in pyro.plate(...)`); ppl_vae needs a vectorised "
            f"plate: `with pyro.plate({name!r}, len(x)):` with the data on its batch dim"
        )
    for s in observed:
        other = data_frame(model_sites[s], name)
        if other.dim != frame.dim:
            raise ProgramError(
                f"observed sites use the plate {name!r} at different dims ({frame.dim} and "
                f"{other.dim}); use one data plate"
            )
    size, full = frame.size, frame.full_size
    _check_plate_size(name, size, full, n0)
    return frame.dim, (full if full is not None and full not in (-1, size) else None)


def _refuse_outside(model_sites: dict, observed: list[str], name: str) -> None:
    """One :class:`ProgramError` line naming the observed sites outside the data plate ``name``."""
    outside = [s for s in observed if data_frame(model_sites[s], name) is None]
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


def _check_plate_size(name: str, size: int, full: int | None, n0: int) -> None:
    """The data plate must be sized by the batch (or declare the full size with ``subsample_size``)."""
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
    if any(data_frame(model_sites[s], name) is not None for s in observed):
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
        if data_frame(s, program.data_plate) is not None
    )
    non_reparam = tuple(
        n
        for n in guide_latent
        if n not in aux and not getattr(guide_sites[n]["fn"], "has_rsample", False)
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
        param_names=_param_names(param_trace),
        scaled=_scaled_sites(model_sites, guide_sites, guide_latent, program.data_plate),
        outside_support=_support(model_sites, observed),
        guide_factors=_guide_factors(guide_sites),
    )


def _param_names(param_trace: poutine.Trace) -> tuple[str, ...]:
    """The ``pyro.param`` sites the programs registered (a module's parameters left out)."""
    return tuple(
        n for n, s in param_trace.nodes.items() if s["type"] == "param" and MODULE_DIVIDER not in n
    )


def _scaled_sites(
    model_sites: dict[str, Any], guide_sites: dict[str, Any], guide_latent: list[str], plate: str
) -> tuple[tuple[str, float | str], ...]:
    """The user's own scales (:func:`user_scales`) on model sites, then on guide latents that the model's
    list does not already hold."""
    in_model = user_scales(model_sites, plate)
    return in_model + tuple(
        item
        for item in user_scales({n: guide_sites[n] for n in guide_latent}, plate)
        if item[0] not in model_sites or item not in in_model
    )


def _guide_factors(guide_sites: dict[str, Any]) -> tuple[str, ...]:
    """Observed ``Unit`` sites of the guide without a reparameterised sampler (``pyro.factor`` terms)."""
    return tuple(
        n
        for n, site in guide_sites.items()
        if site["is_observed"]
        and isinstance(site["fn"], Unit)
        and not getattr(site["fn"], "has_rsample", True)
    )
