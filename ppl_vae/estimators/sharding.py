"""The estimators' points spread over the ranks of a ``torch.distributed`` group, and gathered back.

Under ``torchrun`` (or in any process whose default group is initialised), :func:`~ppl_vae.log_weights`,
:func:`~ppl_vae.iw_log_likelihood`, :func:`~ppl_vae.elbo`, :func:`~ppl_vae.ais_log_likelihood` and
:func:`~ppl_vae.evaluate` split the points into contiguous blocks of whole chunks, one block per rank,
and ``all_gather`` the per-point results, so every rank returns the full result::

    torchrun --nproc_per_node 2 -m ppl_vae.cli evaluate runs/mnist -k 1000

**Same numbers as one process.** Each chunk of points draws from its own seed,
:func:`chunk_seed` ``(seed, first row)``, so a point's value depends on the seed and the chunk sizes
only, not on which rank computed it or how many ranks there are: the gathered result equals the
single-process one up to float rounding (the chunk sizes are those of the single-process call).

A group is used when one is initialised; else, when ``torchrun``'s environment says ``WORLD_SIZE > 1``,
one is started (gloo for CPU data, NCCL for CUDA data; :func:`ppl_vae.train.distributed.setup`). Every
rank must then call the estimator with the same data and arguments. :func:`unsharded` turns this off
(code that evaluates on one rank only, or on per-rank data).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import UserError

__all__ = ["Shard", "chunk_seed", "point_shard", "unsharded"]

_ENABLED: ContextVar[bool] = ContextVar("ppl_vae_sharding", default=True)


@contextlib.contextmanager
def unsharded() -> Iterator[None]:
    """Estimators inside compute every point in this process, even in a process group.

    Examples:
        >>> import torch
        >>> import ppl_vae as pv
        >>> from ppl_vae.estimators.sharding import unsharded
        >>> vae = pv.VAE(input_dim=6, latent_dim=2, hidden_dims=(8,))
        >>> with unsharded():  # e.g. under torchrun, inside ``if rank == 0:``
        ...     iw = pv.iw_log_likelihood(vae, torch.zeros(3, 6), num_samples=4)
        >>> iw.shape
        torch.Size([3])
    """
    token = _ENABLED.set(False)
    try:
        yield
    finally:
        _ENABLED.reset(token)


def chunk_seed(seed: int, start: int) -> int:
    """The seed of the chunk of points that starts at row ``start`` (``seed`` itself for the first chunk).

    Examples:
        >>> chunk_seed(7, 0), chunk_seed(7, 40) == chunk_seed(7, 40), chunk_seed(7, 40) == chunk_seed(8, 40)
        (7, True, False)
    """
    if start == 0:
        return seed
    digest = hashlib.blake2b(f"ppl_vae:{seed}:{start}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _group(device: torch.device) -> tuple[int, int]:
    """``(rank, world_size)`` of the group the estimators use: ``(0, 1)`` outside one or when unsharded."""
    if not _ENABLED.get() or not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        from ..train.distributed import env_world_size, setup

        if env_world_size() <= 1 or "MASTER_ADDR" not in os.environ:
            return 0, 1
        setup(device)  # torchrun's environment: start the group (it lives as long as the process)
    return dist.get_rank(), dist.get_world_size()


@dataclass(frozen=True)
class Shard:
    """Rank ``rank`` of ``world`` computes rows ``[lo, hi)`` of ``n``: whole chunks of ``chunk`` points.

    Examples:
        >>> s = Shard(n=10, chunk=3, rank=1, world=2)  # chunks 0-2, 3-5 | 6-8, 9
        >>> (s.lo, s.hi), list(s.starts)
        ((6, 10), [6, 9])
    """

    n: int
    chunk: int
    rank: int = 0
    world: int = 1

    def span(self, rank: int) -> tuple[int, int]:
        chunks = -(-self.n // self.chunk)
        lo = chunks * rank // self.world * self.chunk
        hi = chunks * (rank + 1) // self.world * self.chunk
        return min(lo, self.n), min(hi, self.n)

    @property
    def lo(self) -> int:
        return self.span(self.rank)[0]

    @property
    def hi(self) -> int:
        return self.span(self.rank)[1]

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def starts(self) -> range:
        """The first row of each of this rank's chunks."""
        return range(self.lo, self.hi, self.chunk)

    @contextlib.contextmanager
    def computing(self) -> Iterator[None]:
        """Around this rank's work: an exception here is told to the other ranks (their next
        :meth:`gather` raises instead of waiting for this rank), then raised here."""
        try:
            yield
        except Exception:
            if self.active:
                self._failed(True)
            raise

    def _failed(self, mine: bool) -> list[int]:
        """Every rank says whether it failed; the ranks that did."""
        flags = torch.zeros(self.world, device=_comm_device())
        flags[self.rank] = float(mine)
        dist.all_reduce(flags)
        return [r for r in range(self.world) if flags[r] > 0]

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """This rank's rows ``(hi - lo, ...)`` -> every rank's, ``(n, ...)``, on every rank (same device)."""
        if not self.active:
            return local
        failed = self._failed(False)
        if failed:
            raise UserError(
                f"rank(s) {failed} of {self.world} failed computing their points (their own error "
                f"says why); rank {self.rank} stops too"
            )
        sizes = [hi - lo for lo, hi in map(self.span, range(self.world))]
        if local.shape[0] != sizes[self.rank]:
            raise ValueError(
                f"rank {self.rank} holds {local.shape[0]} rows, not {sizes[self.rank]}"
            )
        comm = _comm_device()
        padded = local.new_zeros((max(sizes),) + tuple(local.shape[1:]), device=comm)
        padded[: len(local)] = local.to(comm)
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        return torch.cat([p[:m] for p, m in zip(parts, sizes, strict=True)]).to(local.device)


def _comm_device() -> torch.device:
    """Where the group's collectives take tensors: the current CUDA device for NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def point_shard(n: int, chunk: int, device: torch.device) -> Shard:
    """This process's share of ``n`` points in chunks of ``chunk`` (all of them outside a group)."""
    rank, world = _group(device)
    return Shard(n, max(1, chunk), rank, world)
