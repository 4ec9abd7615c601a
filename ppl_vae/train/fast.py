"""Fast training steps: the same ELBO, with less of Pyro's machinery per step.

The Pyro ``model``/``guide`` stay the single definition; ``fit(..., fast=...)`` chooses how much of
Pyro runs per step:

* ``"off"``: the objective's own Pyro loss (``Trace_ELBO``/``TraceMeanField_ELBO``/...
  ``differentiable_loss``: full traces, replay, ``compute_log_prob`` of every site, score parts).
* ``"eager"``: :func:`fast_elbo_loss`: the two programs run under one light messenger
  (:class:`SiteRecorder`) that scales the data plate's sites, replays the guide's latents into the
  model and records the sample sites; the surrogate is summed in Pyro's own order from the same
  ``log_prob``/``kl_divergence`` calls: the same number and gradients, checked against Pyro's ELBO
  on the first batch before training starts.
* ``"graph"``: the eager step (loss and ``autograd.grad``) captured once per batch shape with
  ``make_fx`` into an ATen graph and replayed with no Python or Pyro work; same random draws.
* ``"compile"``: the whole step compiled as one unit (:mod:`.fused`: the batch gather, the noise, loss,
  gradients and the Adam update in one Inductor call; CUDA graphs on GPU) for the epoch's full batches,
  the captured graph for the short last batch. Costs seconds to tens of seconds per batch shape (once
  per process; Inductor's on-disk cache shortens later ones). Where the whole step does not apply, the
  captured loss graph compiled by ``torch.compile`` (random numbers from PyTorch's generator).
* ``"auto"`` (default): ``"graph"`` for batch shapes run often enough to repay the capture
  (:data:`CAPTURE_MIN_STEPS`, counted across ``fit`` calls of the same training state) when the
  programs are ppl_vae's own (no Python side effects between calls); ``"eager"`` otherwise; and the
  compiled whole step from the first epoch that starts after the run has taken
  :data:`FUSE_AFTER_STEPS` optimiser steps (the run's step counter, restored on resume: an interrupted
  and resumed run switches at the same epoch as an uninterrupted one, so their numbers agree). A graph
  replays tensor operations only: a user's program with side effects (counters, prints, state on
  ``self``) would not see them, so user programs get graphs and the compiled step only when they ask.

The fast ELBO applies to ``trace`` and ``analytic`` with one particle, a guide whose latent sites are
reparameterised, not enumerated and all in the model, and no model-only sites; the importance-weighted
objectives get graphs of their own Pyro loss. Every graph is replayed once against the eager step on
the same random numbers (loss and gradients to 1e-6 relative; 1e-3 compiled) before it is used. When
a path does not apply, training runs on the objective's Pyro loss and the reason is reported once (a
warning, and ``history.meta["fast_path"]``); a validation error of the user's program is raised, never
swallowed.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from typing import Any, Literal, cast, get_args

import pyro
import torch
from torch import nn

from .._torch_compat import capture, compile_graph
from ..models import PURE_PROGRAMS
from ..objectives import Objective
from ..programs import DataPlateScale, Program, ProgramInfo
from .fast_elbo import (
    ELBOLoss,
    close,
    fast_elbo_loss,
    fast_path_supports,
    grads,
    same_loss_and_grads,
    structure_problem,
)

__all__ = [
    "CAPTURE_MIN_STEPS",
    "ELBOLoss",
    "FAST_MODES",
    "FastMode",
    "FUSE_AFTER_STEPS",
    "FastEngine",
    "fast_elbo_loss",
]

#: How much of Pyro runs per training step (see the module docstring).
FastMode = Literal["auto", "graph", "eager", "compile", "off"]
FAST_MODES: tuple[FastMode, ...] = get_args(FastMode)
#: ``fast="auto"`` captures a graph for a batch shape once this many steps of it have run or are planned.
CAPTURE_MIN_STEPS = 300
#: ``fast="auto"`` switches to the compiled whole step (:mod:`.fused`) at the first epoch that starts after
#: the run (this training state, across calls and resumes) has taken this many optimiser steps.
FUSE_AFTER_STEPS = 3000


def rng_devices(dev: torch.device) -> list[torch.device]:
    return [dev] if dev.type == "cuda" else []


def _attribute_of(owner: nn.Module, fn: Any) -> str | None:
    """The name under which ``owner`` holds ``fn``: a bound method of it (``vae.model``) or a submodule
    (``pyro.contrib.cevae.CEVAE.model``); None for anything else (free functions given ``owner=``)."""
    if getattr(fn, "__self__", None) is owner:
        return getattr(fn, "__name__", None)
    return next((name for name, m in owner.named_children() if m is fn), None)


def _probe(program: Program, info: ProgramInfo) -> tuple[Program, nn.Module | None]:
    """The program on a deep copy of its owner module, so that the fast ELBO's check does not run the real
    one (a program with side effects never sees the extra calls); the program itself (and None) when model
    and guide are not the owner's own methods or submodules, or the owner cannot be copied."""
    owner = program.owner
    if not isinstance(owner, nn.Module):
        return program, None
    names = [_attribute_of(owner, fn) for fn in (program.model, program.guide)]
    if None in names:
        return program, None
    try:
        copied = copy.deepcopy(owner)
    except Exception:  # noqa: BLE001 - an uncopyable module: check on the real one
        return program, None
    model, guide = (getattr(copied, cast(str, name)) for name in names)  # None checked above
    return Program(model, guide, info.data_plate, copied), copied


class FastEngine:
    """The fast step for one program and objective: checked once, then eager or captured per batch shape.

    Kept on the training state, so a later ``fit`` call of the same state reuses its check and graphs.
    ``problem`` is the reason the fast ELBO does not apply (None when it does); ``steps`` counts the
    steps run per batch shape across calls (for ``"auto"``).
    """

    def __init__(
        self,
        program: Program,
        objective: Objective,
        mode: FastMode,
        info: ProgramInfo,
        pure_params: list[torch.Tensor],
    ) -> None:
        self.program = program
        self.objective = objective
        self.mode = mode
        self.info = info
        self.pure_params = pure_params
        self.problem: str | None = (
            structure_problem(info) if fast_path_supports(objective) else None
        )
        self.module = ELBOLoss(
            program, objective, fast=fast_path_supports(objective) and self.problem is None
        )
        self.checked = not self.module.fast
        self.graphs: dict[tuple, Callable | None] = {}
        self.planned: dict[tuple, int] = {}  # steps this fit call will run, per batch shape
        self.steps: dict[tuple, int] = {}  # steps run so far, all calls
        self.before: dict[tuple, int] = {}  # steps run before this call
        self.graph_problem: str | None = None
        if pure_params:
            self.graph_problem = "the programs have plain pyro.param sites (graphs capture nn.Module parameters only)"
        elif program.module is None:
            self.graph_problem = "the programs belong to no nn.Module"
        self.fused: Any = (
            None  # the compiled whole step (.fused.FusedStep), made with the optimiser
        )
        self.fused_epochs: list[int] = []  # epochs of the current call run by it
        self.fused_reason: str | None = None  # why it did not run (the current call)
        self.fused_failed = False  # it was attempted and fell back
        self.refresh()

    def check(self, batch: tuple[torch.Tensor, ...], scale: float) -> None:
        """Decide once whether the fast ELBO reproduces Pyro's loss and gradients on this program, on a
        copy of its module (a program with side effects does not see the extra calls)."""
        if self.checked:
            return
        self.checked = True
        probe, probe_owner = _probe(self.program, self.info)
        module = probe_owner if probe_owner is not None else self.program.module
        params: list[torch.Tensor] = (
            [p for p in module.parameters() if p.requires_grad] if module is not None else []
        )
        params += self.pure_params
        plate = self.info.data_plate
        with (
            torch.random.fork_rng(devices=rng_devices(batch[0].device)),
            pyro.validation_enabled(False),
        ):
            torch.manual_seed(7)
            with DataPlateScale(plate, scale):
                ref = self.objective.loss(probe.model, probe.guide, *batch)
            torch.manual_seed(7)
            fast = fast_elbo_loss(
                probe.model,
                probe.guide,
                *batch,
                analytic=self.module.analytic,
                scale=scale,
                data_plate=plate,
            )
        if not same_loss_and_grads(ref, fast, params, rtol=1e-5):
            self.problem = (
                "the fast ELBO does not reproduce Pyro's loss and gradients on the first batch"
            )
            self.module.fast = False

    # -------------------------------------------------------------- graphs
    def refresh(self) -> None:
        """Re-read the module's parameters and buffers (the tensors a graph takes, in this order)."""
        params = [(n, p) for n, p in self.module.named_parameters() if p.requires_grad]
        buffers = list(self.module.named_buffers())
        names = [n for n, _ in params + buffers]
        if names != getattr(self, "names", names):
            self.graphs.clear()
        self.names = names
        self.tensors = [t for _, t in params + buffers]
        self.n_params = len(params)

    def graph_safe(self) -> bool:
        """ppl_vae's own programs (registered functions, every submodule from torch or ppl_vae)."""
        p = self.program
        funcs = (getattr(p.model, "__func__", p.model), getattr(p.guide, "__func__", p.guide))
        if not all(f in PURE_PROGRAMS for f in funcs) or p.module is None:
            return False
        return all(
            type(m).__module__.startswith(("torch.", "ppl_vae.")) for m in p.module.modules()
        )

    def graph_for(self, batch: tuple[torch.Tensor, ...], scale: float) -> Callable | None:
        """The captured (or compiled) step for this batch shape, or None where it does not pay or apply."""
        if self.mode not in ("auto", "graph", "compile") or self.graph_problem is not None:
            return None
        shape = tuple(tuple(t.shape) for t in batch)
        key = (shape, tuple(t.dtype for t in batch), str(batch[0].device), float(scale))
        if key in self.graphs:
            return self.graphs[key]
        if self.mode == "auto" and (
            self.before.get(shape, 0) + self.planned.get(shape, 0) < CAPTURE_MIN_STEPS
            or not self.graph_safe()
        ):
            return None
        self.graphs[key] = self._capture(batch, scale)
        return self.graphs[key]

    def _capture(self, batch: tuple[torch.Tensor, ...], scale: float) -> Callable | None:
        from torch.func import functional_call

        self.refresh()
        module, names, k = self.module, self.names, self.n_params

        def step(
            tensors: list[torch.Tensor], *rows: torch.Tensor
        ) -> tuple[torch.Tensor, list[torch.Tensor]]:
            loss = functional_call(
                module, dict(zip(names, tensors, strict=True)), rows, {"scale": scale}
            )
            found = torch.autograd.grad(loss, tensors[:k], allow_unused=True)
            gs = [
                torch.zeros_like(t) if g is None else g
                for t, g in zip(tensors, found, strict=False)
            ]
            return loss.detach(), gs

        example = [t.detach().requires_grad_(i < k) for i, t in enumerate(self.tensors)]
        try:
            with warnings.catch_warnings(), pyro.validation_enabled(False):
                warnings.simplefilter("ignore")
                graph = capture(step, example, *batch)
        except Exception as err:  # noqa: BLE001 - data-dependent Python, unsupported ops: stay eager, say so
            warnings.warn(
                f"ppl_vae.fit: could not capture the training step as a graph ({type(err).__name__}: "
                f"{err}); running it eagerly",
                RuntimeWarning,
                stacklevel=4,
            )
            return None
        run: Callable = graph
        if self.compile_loss_graphs():
            run = compile_graph(graph)
        if not self._verify(run, batch, scale):
            warnings.warn(
                "ppl_vae.fit: the captured training step does not reproduce the eager step; "
                "running it eagerly",
                RuntimeWarning,
                stacklevel=4,
            )
            return None
        return run

    def _verify(self, run: Callable, batch: tuple[torch.Tensor, ...], scale: float) -> bool:
        """Replay the graph and the eager step on the same random numbers; compare loss and gradients."""
        params = self.tensors[: self.n_params]
        with (
            torch.random.fork_rng(devices=rng_devices(batch[0].device)),
            pyro.validation_enabled(False),
        ):
            torch.manual_seed(11)
            eager = self.module(*batch, scale=scale)
            eager_grads = grads(eager, params)
            torch.manual_seed(11)
            try:
                with torch.no_grad():
                    loss, gs = run(self.tensors, *batch)
            except Exception:  # noqa: BLE001 - a graph that fails to run is not used (warned by the caller)
                return False
        rtol = 1e-6 if self.mode != "compile" else 1e-3
        if not math.isclose(float(loss), float(eager.detach()), rel_tol=rtol, abs_tol=rtol):
            return False
        return all(close(a, b, rtol) for a, b in zip(gs, eager_grads, strict=True))

    def run_graph(self, run: Callable, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """One step's loss, with the gradients written into ``.grad`` of the parameters."""
        with torch.no_grad():
            loss, gs = run(self.tensors, *batch)
        for p, g in zip(self.tensors, gs, strict=False):
            p.grad = g
        return loss

    def compile_loss_graphs(self) -> bool:
        """``fast="compile"`` compiles the loss graphs only where the whole step is not compiled."""
        return self.mode == "compile" and (
            self.fused is None
            or self.fused.problem is not None
            or self.problem is not None
            or self.fused_failed
        )

    # -------------------------------------------------------------- the compiled whole step
    def fuse_wanted(self, step: int) -> bool:
        """Whether the mode asks for the compiled whole step in an epoch that starts after ``step`` steps:
        always under ``"compile"``; under ``"auto"`` for ppl_vae's own programs once the run has taken
        :data:`FUSE_AFTER_STEPS` steps (a rule on the run's step counter, so a resumed run switches at the
        same epoch as an uninterrupted one)."""
        if self.mode == "compile":
            return True
        return self.mode == "auto" and step >= FUSE_AFTER_STEPS and self.graph_safe()

    def fused_step(self, optimizer: torch.optim.Optimizer) -> Any:
        """The :class:`~.fused.FusedStep` for this optimiser (None, with :attr:`fused_reason`, where none applies)."""
        from .fused import FusedStep

        if self.problem is not None:
            self.fused_reason = self.problem
            return None
        if self.fused is None or self.fused.optimizer is not optimizer:
            self.fused = FusedStep(self, optimizer, tensor_weight=self.module.fast)
        if self.fused.problem is not None:
            self.fused_reason = self.fused.problem
            return None
        return self.fused

    def may_fuse(
        self, optimizer: torch.optim.Optimizer, step: int, epochs: int, steps_per_epoch: int
    ) -> bool:
        """Whether some epoch of a call (``epochs`` epochs from optimiser step ``step``) may run fused."""
        if not any(self.fuse_wanted(step + e * steps_per_epoch) for e in range(epochs)):
            if self.mode == "auto":
                self.fused_reason = (
                    f"fast='auto' compiles the whole step from step {FUSE_AFTER_STEPS} of a run "
                    "on; this one ends before"
                    if self.graph_safe()
                    else "fast='auto' compiles the whole step for ppl_vae's own programs only; pass "
                    "fast='compile' for this one"
                )
            else:
                self.fused_reason = f"fast={self.mode!r}"
            return False
        return self.fused_step(optimizer) is not None

    def fused_epoch(
        self,
        rows: tuple[torch.Tensor, ...],
        optimizer: torch.optim.Optimizer,
        batch_size: int,
        first_step: int,
        weights: list[float],
    ) -> Callable | None:
        """The compiled whole step for this epoch's full batches (``step(idx, weight) -> loss``), or None."""
        if not self.fuse_wanted(first_step):
            return None
        n = len(rows[0])
        size = min(batch_size, n)
        scale = n / size
        self.check(tuple(t[:size] for t in rows), scale)
        fused = self.fused_step(optimizer)
        if fused is None:
            return None
        step = fused.epoch(rows, size, scale, first_step, weights)
        if step is None:
            key = fused.key(
                rows, size, scale, weights[0] if weights and not fused.tensor_weight else 1.0
            )
            failure = fused.failures.get(key)
            self.fused_failed = failure is not None
            if failure is None:
                failure = (
                    "Adam's step counts differ between parameters"
                    if fused.tensor_weight
                    else "the KL weight changes within the epoch and this objective's loss takes it as a constant"
                )
            self.fused_reason = failure
            return None
        self.fused_reason = None
        return step

    # -------------------------------------------------------------- one step
    def begin_call(self, planned: dict[tuple, int]) -> None:
        """A new ``fit`` call: the steps it plans per batch shape (for ``"auto"``'s capture decision)."""
        self.planned = dict(planned)
        self.before = dict(self.steps)
        self.fused_epochs = []
        self.refresh()

    def loss(
        self, batch: tuple[torch.Tensor, ...], scale: float, weight: float
    ) -> tuple[torch.Tensor, bool]:
        """One step's loss; ``True`` when the gradients are already in ``.grad`` (a graph ran)."""
        shape = tuple(tuple(t.shape) for t in batch)
        self.steps[shape] = self.steps.get(shape, 0) + 1
        self.check(batch, scale)
        run = self.graph_for(batch, scale) if weight == 1.0 else None
        if run is not None:
            return self.run_graph(run, batch), True
        return self.module(*batch, scale=scale, latent_weight=weight), False
