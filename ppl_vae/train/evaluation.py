"""The per-epoch test ELBO of a program: the number ``fit`` records as ``test_elbo``.

Pyro's own ELBO (closed-form KL where one is registered, ``Trace_ELBO`` for discrete guide sites,
``TraceEnum_ELBO`` where the model enumerates) with ``max_plate_nesting`` read from the program, one draw of z
per point from a fixed seed, batches of the split scaled like training batches so a global latent's KL
counts once for the whole split.
"""

from __future__ import annotations

from typing import Any

import pyro
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO

from ..params import param_scope
from ..program_inspection import inspect_program
from ..programs import DataPlateScale, Program, ProgramInfo, as_program, rows_slice
from .data import Rows
from .distributed import DistContext

__all__ = ["TEST_BATCH", "mean_elbo", "test_elbo"]

#: Rows per call of the per-epoch test ELBO.
TEST_BATCH = 1024


def _eval_elbo(info: ProgramInfo) -> Any:
    mpn = info.max_plate_nesting
    if info.model_only:
        return TraceEnum_ELBO(max_plate_nesting=mpn)
    if info.non_reparam or info.enumerated:
        return Trace_ELBO(max_plate_nesting=mpn)
    return TraceMeanField_ELBO(max_plate_nesting=mpn)


@torch.no_grad()
def test_elbo(
    program: Program,
    info: ProgramInfo,
    rows: Rows,
    seed: int = 0,
    batch_size: int = TEST_BATCH,
    ctx: DistContext | None = None,
) -> float:
    """Mean ELBO per data point of ``rows`` (closed-form KL where one is registered, one draw of z).

    Batches of the data are scored with the data plate scaled by M/|b| and weighted by |b|/M, so a
    global latent's KL counts once for the whole split (for programs whose latents are all local this
    is the sum of the per-point ELBOs). The fixed ``seed`` makes epochs and methods comparable.
    """
    elbo = _eval_elbo(info)
    m = len(rows[0])
    index = torch.arange(m, device=rows[0].device)
    if ctx is not None and ctx.active:
        index = ctx.shard(index)
    total = 0.0
    with (
        torch.random.fork_rng(devices=[rows[0].device] if rows[0].is_cuda else []),
        pyro.validation_enabled(False),
    ):
        torch.manual_seed(seed)
        for start in range(0, len(index), batch_size):
            part = index[start : start + batch_size]
            with DataPlateScale(info.data_plate, m / len(part)):
                total += (
                    elbo.loss(program.model, program.guide, *rows_slice(rows, part)) * len(part) / m
                )
    if ctx is not None and ctx.active:
        total = float(
            ctx.all_reduce_sum(
                torch.tensor([total], dtype=torch.float64, device=ctx._comm_device())
            )[0]
        )
    return -total / m


def mean_elbo(program: Any, x: Any, batch_size: int = TEST_BATCH, seed: int = 0) -> float:
    """Mean ELBO in nats per data point of ``x`` (see :func:`test_elbo`), for any program."""
    program = as_program(program)
    rows = program.rows(x, "x")
    with param_scope(program), torch.random.fork_rng():
        info = inspect_program(program, rows)
        return test_elbo(program, info, rows, seed, batch_size)
