"""Exact log p(x) for models with a 1-D or 2-D latent, by a dense grid: the truth the estimators are tested against.

``log p(x_n) = log int p(x_n, z) dz ~ logsumexp_g log p(x_n, z_g) + d log(dz)`` on an equally spaced grid:
the equal-weight (trapezoid) rule, very accurate when ``p(x_n, z)`` is smooth and negligible at the bounds.
"""

from __future__ import annotations

import math
from typing import Any

import pyro
import pyro.poutine as poutine
import torch

from ..errors import ProgramError, UserError
from ..program_inspection import find_data_plate
from ..programs import (
    PerPointScale,
    Program,
    ProgramInfo,
    as_program,
    rows_slice,
    sample_sites,
    vectorized_frames,
)
from .importance import ROWS_PER_CALL, check_count, sandbox, sum_sites

__all__ = ["quadrature_log_likelihood"]

_GRID_PLATE = "_grid"


def quadrature_log_likelihood(
    model: Any,
    x: Any,
    grid: int | torch.Tensor | None = None,
    *,
    bounds: tuple[float, float] = (-8.0, 8.0),
    batch_size: int | None = None,
    data_plate: str = "data",
) -> torch.Tensor:
    """``log p(x_n)`` by a dense grid over a 1-D or 2-D latent, nats: ``(N,)``.

    The model must have exactly one latent sample site, in the data plate, with one or two numbers
    per data point (event shape ``()``, ``(1,)`` or ``(2,)``). The site is conditioned on every grid
    point ``z_g`` (``poutine.condition``) under a grid plate left of the program's plates.

    Args:
        model: a Pyro ``model(*batch)``, or an object with ``.model`` (its ``check_data`` is used).
        x: data ``(N, ...)`` or a tuple of row-aligned tensors.
        grid: points per axis (default 2001 for d=1, 401 for d=2) spanning ``bounds``, or a 1-D tensor of
            equally spaced values used on every axis.
        bounds: ``(low, high)`` of the grid on every axis when ``grid`` is an int.
        batch_size: points per call (default: about ``ROWS_PER_CALL`` rows per call).
        data_plate: the name of the data plate.

    Examples:
        >>> import torch
        >>> import ppl_vae as pv
        >>> _ = torch.manual_seed(0)
        >>> lg = pv.LinearGaussianVAE(input_dim=3, latent_dim=1)
        >>> x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
        >>> q = pv.quadrature_log_likelihood(lg.model, x, grid=2001)  # a 1-D latent on a grid
        >>> bool(torch.allclose(q, lg.exact_log_likelihood(x), atol=1e-3))
        True
    """
    owner = model if callable(getattr(model, "model", None)) else None
    program = as_program(
        owner.model if owner is not None else model, lambda *a: None, data_plate=data_plate
    )
    program.owner = owner
    rows = program.rows(x, "x")
    x = rows[0]
    info, event_shape = _one_latent(program, rows, data_plate)
    points, log_volume = _grid_points(grid, bounds, event_shape, x)
    n = len(x)
    check_count("batch_size", batch_size, allow_none=True)
    n_b = min(n, batch_size or max(1, ROWS_PER_CALL // min(len(points), ROWS_PER_CALL)))
    g_c = max(1, ROWS_PER_CALL // n_b)
    out = torch.empty(n, dtype=x.dtype, device=x.device)
    with sandbox(program, 0, x.device), pyro.validation_enabled(False):
        for start in range(0, n, n_b):
            batch = rows_slice(rows, slice(start, start + n_b))
            lse = _grid_logsumexp(program, info, batch, points, g_c, event_shape)
            out[start : start + len(lse)] = (lse + log_volume).to(out.dtype)
    return out


def _one_latent(
    program: Program, rows: tuple[torch.Tensor, ...], data_plate: str
) -> tuple[ProgramInfo, tuple[int, ...]]:
    """The model's sites from one trace on the first 16 rows: its one latent site (1 or 2 numbers per
    point, in the data plate only, else a :class:`ProgramError` line) and its event shape."""
    x = rows[0]
    first = rows_slice(rows, slice(0, 16))
    with sandbox(program, 0, x.device):
        with pyro.validation_enabled(True):
            try:
                trace = poutine.trace(program.model).get_trace(*first)
            except (RuntimeError, IndexError, ValueError) as err:
                raise ProgramError(
                    f"running the model on x of shape {tuple(x.shape)} failed: {err}"
                ) from err
        sites = sample_sites(trace)
        observed = tuple(n for n, s in sites.items() if s["is_observed"])
        latent = [n for n, s in sites.items() if not s["is_observed"]]
        if len(latent) != 1:
            raise ProgramError(
                f"quadrature_log_likelihood needs exactly one latent sample site; the model has "
                f"{sorted(latent)}"
            )
        name = latent[0]
        site = sites[name]
        event_shape = tuple(site["fn"].event_shape)
        dim, _ = find_data_plate(program, sites, list(observed), len(first[0]))
        plates = [f.name for f in vectorized_frames(site)]
        if event_shape not in ((), (1,), (2,)) or plates != [data_plate]:
            raise ProgramError(
                f"quadrature_log_likelihood supports one latent site with 1 or 2 numbers per data point, in the "
                f"data plate {data_plate!r} only; site {name!r} has event shape {event_shape} and plates {plates}"
            )
        mpn = max([-f.dim for s in sites.values() for f in vectorized_frames(s)] + [-dim, 1])
    info = ProgramInfo(
        data_plate, dim, None, observed, (name,), (), frozenset(sites), (), (), (), (), mpn, ()
    )
    return info, event_shape


def _grid_points(
    grid: int | torch.Tensor | None,
    bounds: tuple[float, float],
    event_shape: tuple[int, ...],
    x: torch.Tensor,
) -> tuple[torch.Tensor, float]:
    """The grid's points ``(G, d)`` (``(G,)`` for event shape ``()``) and ``d log(dz)``; a grid that is not
    an int >= 3 or an ascending, equally spaced 1-D tensor is one :class:`UserError` line."""
    d = math.prod(event_shape)
    if grid is None:
        grid = 2001 if d == 1 else 401
    if isinstance(grid, int) and not isinstance(grid, bool):
        check_count("grid", grid, minimum=3)
        lo, hi = bounds
        if not hi > lo:
            raise UserError(f"bounds must be (low, high) with high > low; got {bounds!r}")
        axis = torch.linspace(lo, hi, grid, dtype=x.dtype, device=x.device)
    elif isinstance(grid, torch.Tensor) and grid.dim() == 1 and len(grid) >= 3:
        axis = grid.to(dtype=x.dtype, device=x.device)
    else:
        raise UserError(f"grid must be an int >= 3 or a 1-D tensor of >= 3 values; got {grid!r}")
    steps = axis.diff()
    if not (steps > 0).all() or not torch.allclose(steps, steps.mean(), rtol=1e-3, atol=0.0):
        raise UserError("grid must be ascending and equally spaced")
    log_volume = d * math.log(float(steps.mean()))
    points = axis[:, None] if d == 1 else torch.cartesian_prod(axis, axis)  # (G, d)
    if event_shape == ():
        points = points[:, 0]
    return points, log_volume


def _grid_logsumexp(
    program: Program,
    info: ProgramInfo,
    batch: tuple[torch.Tensor, ...],
    points: torch.Tensor,
    g_c: int,
    event_shape: tuple[int, ...],
) -> torch.Tensor:
    """``logsumexp_g log p(x_n, z_g)`` for the rows of ``batch``, ``g_c`` grid points per call: ``(m,)``
    in float64."""
    x, m, name = batch[0], len(batch[0]), info.latent[0]
    lse = torch.full((m,), -math.inf, dtype=torch.float64, device=x.device)
    for g0 in range(0, len(points), g_c):
        zg = points[g0 : g0 + g_c]
        g = len(zg)
        shape = [1] * info.rank
        shape[0], shape[info.data_index] = g, m
        value = zg.reshape((g,) + (1,) * info.max_plate_nesting + event_shape).expand(
            tuple(shape) + event_shape
        )
        with pyro.plate(_GRID_PLATE, g, dim=-info.rank), PerPointScale():
            tr = poutine.trace(poutine.condition(program.model, data={name: value})).get_trace(
                *batch
            )
        lp = sum_sites(tr, info.observed + info.latent, info, (g, m), x)
        lse = torch.logaddexp(lse, lp.logsumexp(0))
    return lse
