"""Which path trains a program, and why not a faster one: the engines of one ``fit`` call.

:func:`choose_engines` keeps (or builds) the :class:`~.fast.FastEngine` on the training state, tells it the
steps this call plans per batch shape, and wraps the loss in ``DistributedDataParallel`` under ``torchrun``;
:func:`fast_meta` records the path in ``history.meta["fast_path"]`` and warns once (:class:`FastPathWarning`)
when a program cannot take the fast ELBO.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from ..errors import ProgramError
from ..objectives import Objective
from ..programs import Program, ProgramInfo
from .data import Rows
from .distributed import DistContext
from .fast import FastEngine, FastMode
from .fast_elbo import ELBOLoss, graph_path_supports
from .state import TrainState

__all__ = ["FastPathWarning", "choose_engines", "fast_meta", "warn_once", "whole_step_meta"]


class FastPathWarning(UserWarning):
    """A fast path of ``fit`` does not apply to this program; training runs on Pyro's ELBO (the reason is given)."""


def warn_once(state: TrainState, message: str) -> None:
    if message not in state.reported:
        state.reported.add(message)
        warnings.warn(f"ppl_vae.fit: {message}", FastPathWarning, stacklevel=4)


def whole_step_meta(engine: FastEngine) -> dict[str, Any]:
    """Which epochs of the call ran the compiled whole step, why the others did not, its compile time."""
    meta: dict[str, Any] = {"epochs": list(engine.fused_epochs), "reason": engine.fused_reason}
    if engine.fused is not None and engine.fused.compile_seconds:
        meta["compile_seconds"] = round(sum(engine.fused.compile_seconds.values()), 3)
    return meta


def choose_engines(
    program: Program,
    obj: Objective,
    fast: FastMode,
    info: ProgramInfo,
    pure: list[torch.Tensor],
    state: TrainState,
    ctx: DistContext,
    first: Rows,
    n: int,
    batch_size: int,
    epochs: int,
) -> tuple[FastEngine | None, Any]:
    """The fast engine (kept on ``state`` across calls) and, under ``torchrun``, the DDP-wrapped loss."""
    engine: FastEngine | None = None
    if fast != "off" and graph_path_supports(obj):
        engine = _engine(program, obj, fast, info, pure, state)
        full, last = divmod(n, batch_size)
        tail = tuple(tuple(t.shape[1:]) for t in first)
        planned = {tuple((batch_size,) + s for s in tail): full * epochs}
        if last:
            planned[tuple((last,) + s for s in tail)] = epochs
        engine.begin_call(planned)
    ddp = _data_parallel(program, obj, engine, ctx, first, n) if ctx.active else None
    return engine, ddp


def _engine(
    program: Program,
    obj: Objective,
    fast: FastMode,
    info: ProgramInfo,
    pure: list[torch.Tensor],
    state: TrainState,
) -> FastEngine:
    """The training state's engine when it serves this program, mode, objective and inspection, else a new one."""
    engine = state.engine
    if not (
        isinstance(engine, FastEngine)
        and engine.program.key is program.key
        and engine.mode == fast
        and engine.objective.spec == obj.spec
        and engine.info == info
    ):
        engine = FastEngine(program, obj, fast, info, pure)
    state.engine = engine
    return engine


def _data_parallel(
    program: Program,
    obj: Objective,
    engine: FastEngine | None,
    ctx: DistContext,
    first: Rows,
    n: int,
) -> Any:
    """The loss wrapped in ``DistributedDataParallel`` (the fast ELBO where it was checked to apply)."""
    from torch.nn.parallel import DistributedDataParallel

    if program.module is None:
        raise ProgramError("data-parallel training needs the programs to belong to an nn.Module")
    use_fast = False
    if engine is not None and engine.module.fast:
        engine.check(first, n / len(first[0]))
        use_fast = engine.module.fast
    module = ELBOLoss(program, obj, fast=use_fast)
    dev = ctx.device
    return DistributedDataParallel(module, device_ids=[dev] if dev.type == "cuda" else None)


def fast_meta(
    fast: FastMode, engine: FastEngine | None, obj: Objective, state: TrainState
) -> dict[str, Any]:
    """What path trains this program, and why not a faster one.

    A program the fast ELBO cannot take (a discrete guide site, ...) is warned about once per training
    state, whatever ``fast`` says; an objective that has no fast path (``enum``, ``jit_*``, several
    particles) is only warned about when a fast mode was asked for by name.
    """
    if fast == "off":
        return {"fast_path": {"path": "pyro", "reason": "fast='off'"}}
    if engine is None:
        reason, warn = f"objective {obj.spec!r} has no fast path", fast != "auto"
    elif engine.problem is not None:
        reason, warn = engine.problem, True
    else:
        return {
            "fast_path": {
                "path": fast
                if fast != "auto"
                else "auto (eager; graphs, then the compiled whole step, for long runs)",
                "reason": engine.graph_problem,
            }
        }
    name = type(obj.elbo).__name__
    if warn and reason not in state.reported:
        state.reported.add(reason)
        warnings.warn(
            f"ppl_vae.fit: the fast path does not apply ({reason}); training with Pyro's {name}",
            FastPathWarning,
            stacklevel=3,
        )
    return {"fast_path": {"path": "pyro", "reason": reason}}
