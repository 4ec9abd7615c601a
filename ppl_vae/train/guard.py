"""The NaN guard: a non-finite loss stops training and puts everything back to the last good epoch.

On the CPU every step's loss is read before the update (one float per step). On CUDA reading a
loss forces a host sync, so the losses stay on the device and are read back in blocks of
:data:`CUDA_CHECK_EVERY` steps (and at the end of the epoch); a bad one found late also puts the
optimizer back to the end of the last good epoch. Either way the message names the exact epoch,
step and batch, the epoch the model was restored to, and the checkpoint on disk, if one was written.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import TrainingDiverged

__all__ = ["CUDA_CHECK_EVERY", "Guard"]

#: On CUDA the guard reads the losses back once per this many steps.
CUDA_CHECK_EVERY = 32


class Guard:
    """Watches the losses of one ``fit`` call and restores the last good state on a bad one.

    Args:
        params: every tensor the optimiser trains (module parameters and plain ``pyro.param`` s).
        module: the program's module (its buffers are restored too), or None.
        optimizer: restored on the lazy (CUDA) path, where bad steps were already applied.
        lazy: read losses in blocks (CUDA) instead of every step.
        checkpoint_dir: where checkpoints go (named in the message when one exists).
    """

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        module: torch.nn.Module | None,
        optimizer: torch.optim.Optimizer,
        lazy: bool,
        checkpoint_dir: str | Path | None,
    ) -> None:
        self.params = params
        self.module = module
        self.optimizer = optimizer
        self.lazy = lazy
        self.checkpoint_dir = checkpoint_dir
        self.pending: list[
            tuple[torch.Tensor, int, int]
        ] = []  # (loss, rows, batch start), lazy path
        self.saved_epoch: int | None = (
            None  # the last epoch committed to checkpoint_dir by this call
        )
        self.snapshot()

    def snapshot(self) -> None:
        """Remember the current state as the last good one (end of an epoch)."""
        with torch.no_grad():
            self.good = [p.detach().clone() for p in self.params]
            self.good_buffers = (
                {k: v.detach().clone() for k, v in self.module.named_buffers()}
                if self.module is not None
                else {}
            )
        self.good_optimizer = copy.deepcopy(self.optimizer.state_dict()) if self.lazy else None

    def restore(self) -> None:
        with torch.no_grad():
            for p, g in zip(self.params, self.good, strict=True):
                p.copy_(g)
            if self.module is not None:
                buffers = dict(self.module.named_buffers())
                for k, v in self.good_buffers.items():
                    buffers[k].copy_(v)
        if self.good_optimizer is not None:
            self.optimizer.load_state_dict(self.good_optimizer)

    # ------------------------------------------------------------------ per step
    def step(
        self,
        loss: torch.Tensor,
        rows: int,
        batch_start: int,
        epoch: int,
        step: int,
        good_epoch: int,
    ) -> float | None:
        """Check one step's loss (before the optimiser applies it). Returns its value on the eager
        path; on the lazy path keeps it and checks a block every :data:`CUDA_CHECK_EVERY` steps."""
        if self.lazy:
            self.pending.append((loss.detach(), rows, batch_start))
            if len(self.pending) % CUDA_CHECK_EVERY == 0:
                self.flush(epoch, step - len(self.pending) + 1, good_epoch, keep=True)
            return None
        value = float(loss)
        if not math.isfinite(value):
            self.restore()
            raise TrainingDiverged(
                self.message(f"loss became {value}", epoch, step, batch_start, good_epoch)
            )
        return value

    def flush(self, epoch: int, first_step: int, good_epoch: int, keep: bool = False) -> float:
        """Lazy path: read the pending losses; on a bad one restore and raise. Returns sum(loss x rows)."""
        if not self.pending:
            return 0.0
        losses = torch.stack([loss.reshape(()) for loss, _, _ in self.pending]).double()
        rows = torch.tensor(
            [r for _, r, _ in self.pending], dtype=torch.float64, device=losses.device
        )
        finite = torch.isfinite(losses)
        if not bool(finite.all()):
            j = int((~finite).nonzero()[0])
            self.restore()
            raise TrainingDiverged(
                self.message(
                    f"loss became {float(losses[j])}",
                    epoch,
                    first_step + j,
                    self.pending[j][2],
                    good_epoch,
                )
            )
        if keep:
            return 0.0
        total = float((losses * rows).sum())
        self.pending.clear()
        return total

    def check_epoch(
        self, what: str, value: float | None, epoch: int, step: int, good_epoch: int
    ) -> None:
        """A non-finite end-of-epoch value (the test ELBO) is a divergence too: the epoch is not kept."""
        if value is not None and not math.isfinite(value):
            self.restore()
            raise TrainingDiverged(
                self.message(f"{what} became {value}", epoch, step, None, good_epoch)
            )

    def message(
        self, what: str, epoch: int, step: int, batch_start: int | None, good_epoch: int
    ) -> str:
        where = (
            f" (batch starting at row {batch_start} of the shuffled epoch)"
            if batch_start is not None
            else " (at the end of the epoch)"
        )
        if good_epoch == 0:
            restored = (
                "the model was restored to its state before training; no epoch completed, so no "
                "checkpoint was written"
            )
        else:
            restored = f"the model was restored to the end of epoch {good_epoch}"
            if self.checkpoint_dir is not None and self.saved_epoch == good_epoch:
                restored += f" (its checkpoint is in {str(self.checkpoint_dir)!r})"
        return (
            f"{what} at epoch {epoch}, step {step}{where}; training stopped and {restored}. "
            "Try a smaller lr or check the data"
        )
