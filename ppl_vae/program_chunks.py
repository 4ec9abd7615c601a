"""A chunk of a program's evaluation: guide and replayed model under a particle plate, unscaled, and the
sites that chunk has.

The estimators run the programs on chunks of points and particles: :func:`run_with_particles` (a particle
plate of size ``k`` left of every plate of the program, or none for programs that do not broadcast; every
scale removed by :class:`~ppl_vae.program_sites.PerPointScale`), :func:`site_sets` (this chunk's own sites:
they may depend on the batch) and :func:`per_point` (a log-prob summed to one value per particle and point).
"""

from __future__ import annotations

import contextlib
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample

from .errors import ProgramError
from .program_sites import PerPointScale
from .programs import PARTICLE_PLATE, Program, ProgramInfo, data_frame

__all__ = ["particle_context", "per_point", "run_with_particles", "site_sets"]


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
    observed: set[str] = set()
    latent: set[str] = set()
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if (site["infer"] or {}).get("_deterministic", False):
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
    aux = {n for n in guide_latent if (guide_tr.nodes[n]["infer"] or {}).get("is_auxiliary", False)}
    _refuse_unmatched(model_tr, guide_tr, info, (observed, latent, guide_latent, aux))
    return _in_trace_order(model_tr, guide_tr, observed, latent, aux)


def _in_trace_order(
    model_tr: poutine.Trace,
    guide_tr: poutine.Trace,
    observed: set[str],
    latent: set[str],
    aux: set[str],
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """The three name sets as tuples in the order their sites ran."""
    order = [n for n in model_tr.nodes if n in observed or n in latent]
    return (
        tuple(n for n in order if n in observed),
        tuple(n for n in order if n in latent),
        tuple(n for n in guide_tr.nodes if n in aux),
    )


def _refuse_unmatched(
    model_tr: poutine.Trace,
    guide_tr: poutine.Trace,
    info: ProgramInfo,
    names: tuple[set[str], set[str], set[str], set[str]],
) -> None:
    """One :class:`ProgramError` line naming this chunk's sites that the inspection did not see and that
    break the contract: a latent without its guide site (or the reverse), or a site outside the data plate."""
    observed, latent, guide_latent, aux = names
    new = (observed | latent | guide_latent) - set(info.observed + info.latent + info.guide_aux)
    unmatched = (latent - guide_latent) | (guide_latent - latent - aux)
    outside = {
        n
        for n in new
        if data_frame((model_tr if n in model_tr.nodes else guide_tr).nodes[n], info.data_plate)
        is None
    }
    if not (unmatched or outside):
        return
    bad = sorted(unmatched | outside)
    where = [
        "have no match in the other program" if unmatched else "",
        f"lie outside the data plate {info.data_plate!r}" if outside else "",
    ]
    raise ProgramError(
        f"site(s) {bad} of this chunk "
        + " and ".join(w for w in where if w)
        + f" (the inspection of the first rows saw {sorted(info.observed + info.latent)}): sites that "
        "depend on the batch must be inside the data plate, with a guide site for every latent"
    )


def per_point(t: torch.Tensor, info: ProgramInfo) -> torch.Tensor:
    """Sum a log-prob over every batch dim except particles and data: ``-> (K or 1, N or 1)``."""
    if t.dim() < info.rank:
        t = t.reshape((1,) * (info.rank - t.dim()) + tuple(t.shape))
    dims = [i for i in range(1, info.rank) if i != info.data_index]
    return t.sum(dims) if dims else t
