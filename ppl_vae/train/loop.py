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
from collections.abc import Callable, Iterator
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

__all__ = ["Strategy", "run_epochs"]


class Strategy(Protocol):
    """The part of training that depends on what is trained (see :mod:`.svi`, :mod:`ppl_vae.autoencoders`)."""

    label: str  # shown on the progress bar and recorded as the epoch's "objective"
    module: torch.nn.Module | None  # saved in checkpoints (its state_dict)

    def scope(self) -> contextlib.AbstractContextManager: ...

    def begin_epoch(self, seed: int, device: torch.device) -> None: ...

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


def run_epochs(
    strategy: Any,
    data: TrainData,
    state: TrainState,
    params: list[torch.Tensor],
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
    dev = ctx.device
    world, rank = ctx.world_size, ctx.rank
    optimizer = state.optimizer
    n = data.n
    scale = float(n)
    # the compiled whole step (train/fused.py) applies its update with the loss: its losses are read in blocks
    fused_epoch = getattr(strategy, "fused_epoch", None) if not ctx.active else None
    lazy = (
        dev.type == "cuda" or bool(getattr(strategy, "defers_updates", False))
    ) and not ctx.active
    guard = Guard(params, strategy.module, optimizer, lazy, checkpoint_dir)
    guard.saved_epoch = resumed_epoch
    good_step = state.step
    started = time.perf_counter()
    devices = [dev] if dev.type == "cuda" else []
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
            torch.random.fork_rng(devices=devices),
            _counters_on_divergence(state, lambda: good_step),
        ):
            for _ in range(epochs):
                epoch = state.epoch + 1
                e_seed = epoch_seed(seed, epoch)
                # rank 0 draws z from the single-process stream; other ranks from their own
                torch.manual_seed(e_seed if rank == 0 else epoch_seed(e_seed, rank))
                gen = torch.Generator().manual_seed(e_seed + 1)
                rows = data.epoch_rows(gen)  # the same draw on every rank
                perm = torch.randperm(n, generator=gen).to(dev)
                strategy.begin_epoch(e_seed, dev)
                first_step = state.step
                t0 = time.perf_counter()
                fused = (
                    fused_epoch(rows, first_step, epoch, batch_size)
                    if fused_epoch is not None
                    else None
                )
                total = 0.0
                for batch_start in range(0, n, batch_size):
                    idx = perm[batch_start : batch_start + batch_size]
                    size = len(idx)
                    if ctx.active and size < world:
                        continue  # a last batch too small to give every rank a row (at most world-1 rows)
                    weight = strategy.kl_weight(state.step, epoch)
                    loss = fused(idx, weight) if fused is not None else None
                    if (
                        loss is not None
                    ):  # gathered, differentiated and applied in one compiled call
                        value = guard.step(
                            loss, size, batch_start, epoch, state.step + 1, state.epoch
                        )
                    else:
                        batch = rows_slice(rows, ctx.shard(idx) if ctx.active else idx)
                        optimizer.zero_grad(set_to_none=True)
                        loss = strategy.loss(
                            batch, (world if ctx.active else 1) * scale / size, weight, state.step
                        )
                        if ctx.active:
                            loss = ctx.all_reduce_sum(loss.detach().reshape(1))[0] / world
                        value = guard.step(
                            loss, size, batch_start, epoch, state.step + 1, state.epoch
                        )
                        optimizer.step()
                    state.step += 1
                    if value is not None:
                        total += value * size
                if lazy:
                    total = guard.flush(epoch, first_step + 1, state.epoch)
                    if dev.type == "cuda":
                        torch.cuda.synchronize(dev)
                seconds = time.perf_counter() - t0
                record = {
                    "epoch": epoch,
                    "step": state.step,
                    **strategy.epoch_record(total, n, scale),
                }
                test = strategy.test_record(data.test, seed, ctx)
                for key, value in test.items():
                    if key.startswith("test_") and isinstance(value, float):
                        guard.check_epoch(
                            key.replace("_", " "), value, epoch, state.step, state.epoch
                        )
                record.update(test)
                record["seconds"] = seconds
                record["kl_weight"] = strategy.kl_weight(
                    max(state.step - 1, 0), epoch
                )  # the epoch's last step
                record["objective"] = strategy.label
                if ctx.active:
                    record["world_size"] = world
                    if strategy.module is not None and not parameters_in_sync(strategy.module, ctx):
                        raise RuntimeError(
                            f"data-parallel replicas hold different parameters after epoch {epoch}"
                        )
                state.epoch = epoch
                state.history.append(record)
                guard.snapshot()
                good_step = state.step
                if save is not None and ctx.is_main:
                    save(state)
                    guard.saved_epoch = epoch
                if callback is not None:
                    callback(record)
                bar.update(1)
                shown = {
                    k: f"{v:.3f}"
                    for k, v in record.items()
                    if k in ("train_elbo", "test_elbo", "train_loss", "test_loss")
                    and isinstance(v, float)
                    and math.isfinite(v)
                }
                bar.set_postfix(shown)
                if time_budget is not None and ctx.any(
                    time.perf_counter() - started >= time_budget
                ):
                    break
    finally:
        bar.close()
