"""A comparison's cells spread over the ranks of a ``torch.distributed`` group, and gathered back.

Under ``torchrun`` (or in any process whose default group is initialised),
:func:`~ppl_vae.analysis.compare.run_comparison` (and ``ppl-vae compare``) gives every rank whole cells
(method x seed): cell ``(seed i, method j)`` is rank ``(i + j) % world``'s, so each rank gets the methods
in turn (a costly method is not all one rank's) and about as many cells as the others::

    torchrun --nproc_per_node 2 -m ppl_vae.cli compare --methods trace analytic --seeds 0 1 --out runs/cmp

**Same numbers as one process.** Every rank still loads every seed's data and *builds* every model in
order (cheap next to training), so each cell starts from the weights it has in one process; it is trained
and evaluated alone on its rank (:func:`ppl_vae.train.distributed.single_process`, and
:func:`~ppl_vae.estimators.sharding.unsharded` so the estimators do not split its points), with the
cell's own seeds. The finished cells are gathered to every rank (``all_gather_object``) and assembled
in the single-process order, so every rank returns the same :class:`~.comparison.Comparison` as one
process, timings aside. Models trained on another rank are not in ``.models``; ``callback`` is called on
the rank that ran the cell.

A rank that fails tells the others at the gather: they stop there with a one-line error naming it
(after their own cells) instead of waiting for it. With a cell store (``cells=``, the CLI's
``OUT/cells``) rank 0 checks it first and each rank commits its own cells (one machine, or a shared
file system).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..errors import UserError
from ..estimators.sharding import unsharded
from ..train.distributed import env_world_size, in_single_process, setup, single_process
from .resume import Cell, CellStore

__all__ = ["CellRanks"]

Key = tuple[str, int]  # (method label, seed)


@dataclass(frozen=True)
class CellRanks:
    """Rank ``rank`` of ``world`` runs the cells :meth:`owns` says are its own.

    Examples:
        >>> ranks = CellRanks(rank=1, world=2)
        >>> [(i, j) for i in range(2) for j in range(2) if ranks.owns(i, j)]
        [(0, 1), (1, 0)]
    """

    rank: int = 0
    world: int = 1

    @classmethod
    def of(cls, device: torch.device) -> CellRanks:
        """This process's place: the default group's (started from ``torchrun``'s environment), else 0 of 1
        (also inside :func:`~ppl_vae.train.distributed.single_process`: every cell in this process)."""
        if not dist.is_available() or in_single_process():
            return cls()
        if not dist.is_initialized():
            if env_world_size() <= 1 or "MASTER_ADDR" not in os.environ:
                return cls()
            setup(device)  # the group lives as long as the process (gloo on the CPU, NCCL on CUDA)
        return cls(dist.get_rank(), dist.get_world_size())

    @property
    def active(self) -> bool:
        return self.world > 1

    def owns(self, seed_index: int, method_index: int) -> bool:
        """Whether cell (``seed_index``, ``method_index``) is this rank's."""
        return (seed_index + method_index) % self.world == self.rank

    @contextlib.contextmanager
    def alone(self) -> Iterator[None]:
        """Around one cell: ``fit`` and the estimators work in this process only."""
        with single_process(), unsharded():
            yield

    @contextlib.contextmanager
    def computing(self) -> Iterator[None]:
        """Around this rank's cells: an exception here is told to the other ranks (their :meth:`gather`
        raises instead of waiting for this rank), then raised here."""
        try:
            yield
        except Exception:
            if self.active:
                self._failed(True)
            raise

    def start(self, store: CellStore, settings: dict[str, Any]) -> None:
        """``store.start(settings)`` on rank 0 first (which may refuse, or remove cells of other settings),
        then on the others, which stop with rank 0's error if it refused."""
        if not self.active:
            store.start(settings)
            return
        error = None
        if self.rank == 0:
            try:
                store.start(settings)
            except UserError as err:
                error = str(err)
        said: list[str | None] = [error]
        dist.broadcast_object_list(said, src=0)
        if said[0] is not None:
            if self.rank == 0:
                raise UserError(said[0])
            raise UserError(f"rank 0 refused the cells: {said[0]}")
        if self.rank != 0:
            store.start(
                settings
            )  # rank 0 has removed what differed: this only records the settings

    def gather(
        self, mine: dict[Key, Cell], order: Sequence[Key], store: CellStore | None
    ) -> list[Cell]:
        """Every rank's cells, on every rank, in ``order``; ``store``'s reused/trained lists in that order."""
        if not self.active:
            return [mine[key] for key in order]
        failed = self._failed(False)
        if failed:
            raise UserError(
                f"rank(s) {failed} of {self.world} failed running their cells (their own error says "
                f"why); rank {self.rank} stops too"
            )
        done = (set(store.reused), set(store.trained)) if store is not None else (set(), set())
        parts: list[Any] = [None] * self.world
        dist.all_gather_object(parts, (mine, done))
        cells: dict[Key, Cell] = {}
        reused: set[str] = set()
        trained: set[str] = set()
        for part, (r, t) in parts:
            cells.update(part)
            reused |= r
            trained |= t
        missing = [key for key in order if key not in cells]
        if missing:
            raise RuntimeError(f"no rank ran the cells {missing}")
        if store is not None:
            _in_order(store, order, reused, trained)
        return [cells[key] for key in order]

    def _failed(self, mine: bool) -> list[int]:
        """Every rank says whether it failed; the ranks that did."""
        comm = (
            torch.device("cuda", torch.cuda.current_device())
            if dist.get_backend() == "nccl"
            else torch.device("cpu")
        )
        flags = torch.zeros(self.world, device=comm)
        flags[self.rank] = float(mine)
        dist.all_reduce(flags)
        return [r for r in range(self.world) if flags[r] > 0]


def _in_order(store: CellStore, order: Sequence[Key], reused: set[str], trained: set[str]) -> None:
    """The store's reused/trained lists, gathered from every rank, in the single-process order."""
    names = [f"{label} (seed {seed})" for label, seed in order]
    store.reused[:] = [n for n in names if n in reused]
    store.trained[:] = [n for n in names if n in trained]
