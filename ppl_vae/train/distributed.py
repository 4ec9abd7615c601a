"""Data-parallel training on ``torch.distributed``: the process group, and what ranks share.

Launch with ``torchrun`` (one process per CPU socket share or per GPU)::

    torchrun --nproc_per_node 2 -m ppl_vae.cli train --dataset mnist --device cpu --out runs/ddp

:func:`ppl_vae.train.fit` notices an initialised process group, or the environment
variables ``torchrun`` sets (``WORLD_SIZE > 1``, ``RANK``, ``MASTER_ADDR``...), and then
trains with :class:`torch.nn.parallel.DistributedDataParallel` (gloo on CPU, NCCL on CUDA).
The semantics are those of one process with the same ``batch_size``:

* ``batch_size`` is the *global* mini-batch. Every rank draws the same epoch
  permutation (and the same dynamic binarisation) from the epoch seed and takes a
  disjoint shard of each global batch, so the union of the shards is exactly the
  batch one process would see.
* Each rank's loss is scaled by ``world_size * N / B`` (``B`` the global batch); DDP
  averages gradients over ranks, so the update is the single-process ``N / B``-scaled
  gradient of the global batch.
* The noise of ``z`` comes from a rank-specific seed (rank 0 uses the single-process
  seed, so a group of one reproduces :func:`~ppl_vae.train.fit` exactly).
* Losses are summed over ranks every step (which also stops every rank together when
  one of them sees a NaN); the test ELBO is computed on per-rank shards of the test
  split and summed; rank 0 alone writes checkpoints and ``metrics.json``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    """Where this process stands in the group: ``rank`` of ``world_size``, and its device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    #: this process trains alone even in a group (:func:`single_process`): no collective at all
    alone: bool = False

    @property
    def active(self) -> bool:
        if self.alone:
            return False
        return self.world_size > 1 or (dist.is_available() and dist.is_initialized())

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        """Sum a tensor over ranks (in place; returns it). A no-op outside a group."""
        if self.active:
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank (for stopping together)."""
        if not self.active:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's disjoint share of ``rows`` (contiguous pieces, sizes differ by at most 1)."""
        if self.world_size == 1:
            return rows
        return rows.tensor_split(self.world_size)[self.rank]

    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


def env_world_size() -> int:
    """``WORLD_SIZE`` as ``torchrun`` sets it (1 when not launched by it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


_ALONE: ContextVar[bool] = ContextVar("ppl_vae_single_process", default=False)


@contextlib.contextmanager
def single_process() -> Iterator[None]:
    """:func:`~ppl_vae.train.fit` inside trains in this process alone, even in a process group (each rank
    its own model: ``compare`` under ``torchrun`` gives every rank whole cells). On CUDA under ``torchrun``
    a ``"cuda"`` device still means this rank's ``cuda:LOCAL_RANK``.

    Examples:
        >>> from ppl_vae.train.distributed import setup, single_process
        >>> with single_process():
        ...     ctx = setup(torch.device("cpu"))
        >>> ctx.active, ctx.rank
        (False, 0)
    """
    token = _ALONE.set(True)
    try:
        yield
    finally:
        _ALONE.reset(token)


def in_single_process() -> bool:
    """Whether this code runs inside :func:`single_process`."""
    return _ALONE.get()


def _own_device(device: torch.device) -> torch.device:
    """``device``, with ``cuda`` made this rank's ``cuda:LOCAL_RANK`` under a ``torchrun`` launch."""
    if device.type == "cuda" and device.index is None and env_world_size() > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def is_main_process() -> bool:
    """Rank 0 of the group, or of the ``torchrun`` launch; True in a plain process.

    Use it to keep file writes (checkpoints, ``metrics.json``, printing) to one process.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    try:
        return int(os.environ.get("RANK", "0")) == 0
    except ValueError:
        return True


def setup(device: torch.device) -> DistContext:
    """Join (or start, from ``torchrun``'s environment) the process group for training on ``device``.

    Returns a context of size 1 when there is nothing to join, or inside :func:`single_process`
    (one that never joins). Under ``torchrun`` on CUDA,
    each process takes ``cuda:LOCAL_RANK``; the backend is NCCL for CUDA and gloo for CPU.
    """
    if _ALONE.get():
        return DistContext(device=_own_device(device), alone=True)
    if not dist.is_available():
        return DistContext(device=device)
    if not dist.is_initialized():
        if env_world_size() <= 1 or "MASTER_ADDR" not in os.environ:
            return DistContext(device=device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
            dist.init_process_group(backend, device_id=device)
        else:
            dist.init_process_group(backend)
        # the group lives as long as the process: a second ``fit`` in the same torchrun script
        # reuses it (re-initialising from torchrun's store after a destroy hangs)
        atexit.register(_destroy_group)
    elif device.type == "cuda" and device.index is None:
        device = torch.device(
            "cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device()))
        )
    backend = dist.get_backend()
    if device.type == "cuda" and backend != "nccl":
        raise ValueError(
            f"training on {device} needs the NCCL backend; the process group uses {backend!r}"
        )
    if device.type == "cpu" and backend == "nccl":
        raise ValueError(
            "the process group uses NCCL, which cannot train on the CPU: use device='cuda' or gloo"
        )
    return DistContext(dist.get_rank(), dist.get_world_size(), device)


def _destroy_group() -> None:
    """At exit: wait for every rank, then destroy the group while the interpreter is fully alive (a
    rank that tears its gloo group down while a peer still uses it, or leaves it to the interpreter's
    finalisation, can abort with SIGABRT)."""
    if dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def parameters_in_sync(module: torch.nn.Module, ctx: DistContext) -> bool:
    """Whether every rank holds bit-identical parameters (compares a checksum over ranks)."""
    if not ctx.active:
        return True
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1).double() for p in module.parameters()])
        weights = torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=flat.device)
        mine = torch.stack([flat.sum(), (flat * weights.remainder(9973)).sum()]).to(
            ctx._comm_device()
        )
        lo, hi = mine.clone(), mine.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    return bool(torch.equal(lo, hi))
