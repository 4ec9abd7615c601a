"""Is a program fit for missing cells? The observed site that holds the rows, and masks that hold.

Imputation and scores need (a) the one observed site whose value is the rows ``x`` (found by value, or
named), (b) a product over cells given the latents, so that ``p(x_mis | z, x_obs) = p(x_mis | z)``:
event dims are accepted for a ``OneHotCategorical`` block and for a distribution that exposes per-cell
log-densities (``column_log_prob``, as ppl_vae's table likelihoods do), refused otherwise (a
``MultivariateNormal``), and (c) a model that scores observed cells only (:func:`check_masked`: the
filled values of missing cells must not change its log-density). The checks run on the first rows.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any, cast

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from torch.distributions import Independent

from ..errors import DataError, ProgramError
from ..programs import Program, ProgramInfo

__all__ = [
    "cells_of",
    "check_mask",
    "check_masked",
    "observed_site",
    "row_mask",
    "training_off",
]

Batch = tuple[torch.Tensor, ...]


def row_mask(rows: Batch) -> torch.Tensor | None:
    """The mask of missing cells a program is given by convention, ``model(x, mask, ...)``: the second
    row-aligned tensor when it is bool and of the shape of ``x`` (True = observed); else None."""
    if len(rows) > 1 and rows[1].dtype == torch.bool and rows[1].shape == rows[0].shape:
        return rows[1]
    return None


@contextlib.contextmanager
def training_off(program: Program) -> Iterator[None]:
    """The program's module in eval mode (Dropout/BatchNorm off: one value per row, not per chunk),
    restored afterwards."""
    module = program.module
    modes = None if module is None else [(m, m.training) for m in module.modules()]
    if module is not None:
        module.eval()
    try:
        yield
    finally:
        for m, mode in modes or ():
            m.training = mode


def cells_of(fn: Any) -> tuple[Any, int]:
    """The innermost distribution under ``Independent`` and ``.mask`` wrappers, and its event rank."""
    while True:
        if isinstance(fn, Independent):
            fn = fn.base_dist
        elif isinstance(fn, dist.MaskedDistribution):
            fn = fn.base_dist
        else:
            return fn, len(fn.event_shape)


def observed_site(
    info: ProgramInfo, trace: poutine.Trace, x: torch.Tensor, site: str | None
) -> str:
    """The observed site that holds the rows ``x`` (by value), or ``site``; refused in one line otherwise."""
    if site is not None:
        if site not in info.observed:
            raise ProgramError(
                f"site={site!r} is not an observed site of the model; its observed sites are "
                f"{list(info.observed)}"
            )
        found = site
    else:
        holding = [n for n in info.observed if trace.nodes[n]["value"] is x]
        holding = holding or [
            n
            for n in info.observed
            if tuple(getattr(trace.nodes[n]["value"], "shape", ())) == tuple(x.shape)
        ]
        if len(holding) != 1:
            raise ProgramError(
                f"imputation needs the observed site that holds the rows x {tuple(x.shape)}; the model's "
                f"observed sites {list(info.observed)} hold {len(holding)} such: observe the whole row in "
                "one site (pyro.sample('x', ..., obs=x)) or pass site='name'"
            )
        found = holding[0]
    fn = trace.nodes[found]["fn"]
    inner, rank = cells_of(fn)
    if rank and not isinstance(inner, dist.OneHotCategorical | dist.Delta):
        if not callable(
            getattr(inner, "column_log_prob", None)
        ):  # a product over cells exposes them
            raise ProgramError(
                f"the observed site {found!r} is a {type(inner).__name__} over {rank} event dim(s): its cells "
                "are dependent given the latents, so E[x_mis | z] from the site is not E[x_mis | z, x_obs]; "
                "write p(x | z) as a product over cells (e.g. dist.Normal(loc, scale).to_event(1))"
            )
    return found


def check_masked(program: Program, info: ProgramInfo, batch: Batch, site: str) -> None:
    """Refuse a model whose observed site scores the missing cells.

    The model is replayed at the same latent draws with each missing cell's fill replaced by the largest
    observed value of its column (a value in the support); the site's log-density per row must not move.
    """
    x, mask = batch[0], batch[1]
    observed = torch.where(mask, x, torch.full_like(x, -math.inf))
    col_max = observed.amax(0, keepdim=True)
    other = torch.where(mask | ~torch.isfinite(col_max), x, col_max.expand_as(x))
    if torch.equal(other, x):
        return
    guide_tr = poutine.trace(program.guide).get_trace(*batch)

    def site_lp(rows: torch.Tensor) -> torch.Tensor:
        tr = poutine.trace(poutine.replay(program.model, trace=guide_tr)).get_trace(
            rows, *batch[1:]
        )
        node = cast("dict[str, Any]", tr.nodes[site])
        return node["fn"].log_prob(node["value"])

    with pyro.validation_enabled(False):
        a, b = site_lp(x), site_lp(other)
    if not torch.allclose(a, b, rtol=1e-5, atol=1e-4, equal_nan=True):
        raise ProgramError(
            f"the model's observed site {site!r} scores the missing cells (its log-density changed when only "
            "their fill values changed): mask them, pyro.sample('x', dist.Normal(loc, scale).mask(mask)"
            ".to_event(1), obs=x), with the mask (True = observed) passed as model(x, mask)"
        )


def check_mask(x: torch.Tensor, mask: Any) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != x.shape:
        raise DataError(
            f"mask must be a bool tensor of the shape of x {tuple(x.shape)} (True = observed); got "
            f"{type(mask).__name__} {getattr(mask, 'dtype', '')} {tuple(getattr(mask, 'shape', ()))}"
        )
    empty = (~mask.reshape(len(mask), -1).any(1)).nonzero().flatten()
    if len(empty):
        raise DataError(
            f"{len(empty)} row(s) have no observed cell, first row {int(empty[0])}: there is nothing to "
            "condition on; drop those rows"
        )
    return mask.to(x.device)
