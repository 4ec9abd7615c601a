"""The one training loop, for VAEs (SVI on a Pyro program) and the classic autoencoders alike.

What differs between the two is a :class:`Strategy` (the loss of a batch, what an epoch records, how
the test split is scored); everything else is here, once:

* **Seeds.** Every epoch re-seeds its shuffling, dynamic binarisation and samples from
  ``(seed, epoch)`` inside :func:`torch.random.fork_rng`, so the same seed gives the same history, a
  resumed run the same numbers as an uninterrupted one, and the caller's global RNG is left alone.
* **Mini-batches.** ``N / |B|`` is passed to the strategy as the data scale of each batch (the SVI
  strategy puts it on the data plate's sites only).
* **The NaN guard** (:mod:`.guard`): a non-finite loss or test value stops training and restores the
  last good epoch, naming the epoch and step.
* **Checkpoints** after every epoch (main process only), then the user's ``callback``.
* **Data-parallel** training under ``torchrun`` (:mod:`.distributed`): each rank takes a shard of every
  global batch and the loss is scaled so DDP's gradient average is the single-process gradient.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm import tqdm

from ..errors import TrainingDiverged
from ..programs import rows_slice
from .data import Rows, TrainData
from .distributed import DistContext, parameters_in_sync
from .guard import Guard
from .state import TrainState, epoch_seed

__all__ = ["FusedStepFn", "Strategy", "run_epochs"]


#: ``step(idx, weight) -> loss`` of a compiled whole step (gather, loss, gradients and update in one
#: call), or None for a batch it does not take; see :mod:`.fused`.
FusedStepFn = Callable[[torch.Tensor, float], torch.Tensor | None]


class Strategy(Protocol):
    """The part of training that depends on what is trained (see :mod:`.svi`, :mod:`ppl_vae.autoencoders`)."""

    @property
    def label(self) -> str:
        """Shown on the progress bar and recorded as the epoch's ``"objective"``."""

    @property
    def module(self) -> torch.nn.Module | None:
        """Saved in checkpoints (its ``state_dict``)."""

    @property
    def defers_updates(self) -> bool:
        """The compiled whole step may run: the guard reads the losses in blocks."""

    def scope(self) -> contextlib.AbstractContextManager[Any]: ...

    def begin_epoch(self, seed: int, device: torch.device) -> None: ...

    def fused_epoch(
        self, rows: Rows, first_step: int, epoch: int, batch_size: int
    ) -> FusedStepFn | None: ...

    def loss(self, batch: Rows, scale: float, weight: float, step: int) -> torch.Tensor: ...

    def kl_weight(self, step: int, epoch: int) -> float: ...

    def epoch_record(self, total: float, n: int, scale: float) -> dict[str, Any]: ...

    def test_record(self, test: Rows | None, seed: int, ctx: DistContext) -> dict[str, Any]: ...

    def checkpoint_params(self) -> dict[str, torch.Tensor]: ...


@contextlib.contextmanager
def _counters_on_divergence(state: TrainState, good_step: Callable[[], int]) -> Iterator[None]:
    """On a divergence the parameters go back to the last good epoch: so does the step counter."""
    try:
        yield
    except TrainingDiverged:
        state.step = good_step()
        raise


@dataclass
class _Run:
    """One call of :func:`run_epochs`: what every epoch reads (the loop's explicit state)."""

    strategy: Strategy
    data: TrainData
    state: TrainState
    optimizer: torch.optim.Optimizer
    guard: Guard
    ctx: DistContext
    batch_size: int
    seed: int
    lazy: bool
    fused: bool  # the strategy may run the compiled whole step (never under data parallelism)

    def epoch(self) -> dict[str, Any]:
        """Train one epoch and return its record (the NaN guard raises on a non-finite value)."""
        epoch, ctx, state = self.state.epoch + 1, self.ctx, self.state
        e_seed = epoch_seed(self.seed, epoch)
        # rank 0 draws z from the single-process stream; other ranks from their own
        torch.manual_seed(e_seed if ctx.rank == 0 else epoch_seed(e_seed, ctx.rank))
        gen = torch.Generator().manual_seed(e_seed + 1)
        rows = self.data.epoch_rows(gen)  # the same draw on every rank
        perm = torch.randperm(self.data.n, generator=gen).to(ctx.device)
        self.strategy.begin_epoch(e_seed, ctx.device)
        first_step = state.step
        t0 = time.perf_counter()
        fused = (
            self.strategy.fused_epoch(rows, first_step, epoch, self.batch_size)
            if self.fused
            else None
        )
        total = self._batches(rows, perm, epoch, fused)
        if self.lazy:
            total = self.guard.flush(epoch, first_step + 1, state.epoch)
            if ctx.device.type == "cuda":
                torch.cuda.synchronize(ctx.device)
        seconds = time.perf_counter() - t0
        return self._record(epoch, total, seconds)

    def _batches(
        self, rows: Rows, perm: torch.Tensor, epoch: int, fused: FusedStepFn | None
    ) -> float:
        """The epoch's steps; the sum of the per-batch losses times their sizes (read lazily or not)."""
        n, ctx, state = self.data.n, self.ctx, self.state
        world = ctx.world_size
        scale = float(n)
        total = 0.0
        for batch_start in range(0, n, self.batch_size):
            idx = perm[batch_start : batch_start + self.batch_size]
            size = len(idx)
            if ctx.active and size < world:
                continue  # a last batch too small to give every rank a row (at most world-1 rows)
            weight = self.strategy.kl_weight(state.step, epoch)
            loss = fused(idx, weight) if fused is not None else None
            eager = loss is None  # else gathered, differentiated and applied in one compiled call
            if loss is None:
                batch = rows_slice(rows, ctx.shard(idx) if ctx.active else idx)
                self.optimizer.zero_grad(set_to_none=True)
                loss = self.strategy.loss(
                    batch, (world if ctx.active else 1) * scale / size, weight, state.step
                )
                if ctx.active:
                    loss = ctx.all_reduce_sum(loss.detach().reshape(1))[0] / world
            value = self.guard.step(loss, size, batch_start, epoch, state.step + 1, state.epoch)
            if eager:
                self.optimizer.step()
            state.step += 1
            if value is not None:
                total += value * size
        return total

    def _record(self, epoch: int, total: float, seconds: float) -> dict[str, Any]:
        """The epoch's history record: the strategy's training and test values, timing and weights."""
        strategy, state, ctx = self.strategy, self.state, self.ctx
        record = {
            "epoch": epoch,
            "step": state.step,
            **strategy.epoch_record(total, self.data.n, float(self.data.n)),
        }
        test = strategy.test_record(self.data.test, self.seed, ctx)
        for key, value in test.items():
            if key.startswith("test_") and isinstance(value, float):
                self.guard.check_epoch(key.replace("_", " "), value, epoch, state.step, state.epoch)
        record.update(test)
        record["seconds"] = seconds
        record["kl_weight"] = strategy.kl_weight(max(state.step - 1, 0), epoch)  # the last step's
        record["objective"] = strategy.label
        if ctx.active:
            record["world_size"] = ctx.world_size
            if strategy.module is not None and not parameters_in_sync(strategy.module, ctx):
                raise RuntimeError(
                    f"data-parallel replicas hold different parameters after epoch {epoch}"
                )
        return record


def _shown(record: dict[str, Any]) -> dict[str, str]:
    """The finite training and test values of a record, for the progress bar."""
    return {
        k: f"{v:.3f}"
        for k, v in record.items()
        if k in ("train_elbo", "test_elbo", "train_loss", "test_loss")
        and isinstance(v, float)
        and math.isfinite(v)
    }


def run_epochs(
    strategy: Strategy,
    data: TrainData,
    state: TrainState,
    params: Sequence[torch.Tensor],
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    ctx: DistContext,
    checkpoint_dir: str | Path | None,
    save: Callable[[TrainState], None] | None,
    progress: bool,
    time_budget: float | None,
    callback: Callable[[dict[str, Any]], None] | None,
    resumed_epoch: int | None = None,
) -> None:
    """Run ``epochs`` epochs of ``strategy`` on ``data``, appending to ``state.history``.

    ``params`` are the tensors the optimiser (``state.optimizer``) trains; ``save(state)`` commits a
    checkpoint after each epoch (main process only); ``resumed_epoch``: the epoch already on disk.
    """
    if state.optimizer is None:
        raise RuntimeError("run_epochs needs the training state's optimiser (set by fit)")
    dev = ctx.device
    # the compiled whole step (train/fused.py) applies its update with the loss: its losses are read in blocks
    lazy = (dev.type == "cuda" or strategy.defers_updates) and not ctx.active
    guard = Guard(params, strategy.module, state.optimizer, lazy, checkpoint_dir)
    guard.saved_epoch = resumed_epoch
    run = _Run(
        strategy, data, state, state.optimizer, guard, ctx, batch_size, seed, lazy, not ctx.active
    )
    good_step = state.step
    started = time.perf_counter()
    bar = tqdm(
        total=epochs,
        desc=f"fit {strategy.label}",
        unit="epoch",
        disable=not (progress and ctx.is_main),
        leave=False,
    )
    try:
        with (
            strategy.scope(),
            torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []),
            _counters_on_divergence(state, lambda: good_step),
        ):
            for _ in range(epochs):
                record = run.epoch()
                state.epoch = record["epoch"]
                state.history.append(record)
                guard.snapshot()
                good_step = state.step
                if save is not None and ctx.is_main:
                    save(state)
                    guard.saved_epoch = state.epoch
                if callback is not None:
                    callback(record)
                bar.update(1)
                bar.set_postfix(_shown(record))
                if time_budget is not None and ctx.any(
                    time.perf_counter() - started >= time_budget
                ):
                    break
    finally:
        bar.close()
