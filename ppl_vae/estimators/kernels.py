"""Closed-form log-densities for the families that dominate VAE evaluation, at hand-written-torch cost.

The importance-sampling estimators score every site of a chunk of particles x points. Through
Pyro's own ``log_prob`` a ``Bernoulli(logits)`` likelihood broadcasts ``x`` to ``(K, N, D)`` and makes
four temporaries of that size; :func:`fast_log_prob` computes the same numbers (up to float rounding)
in one temporary reused by every chunk of a scan, and a guide's ``Normal`` takes ``log scale`` on its
un-broadcast ``(1, N, d)`` scale. Anything else goes through the distribution's own ``log_prob``; a
chunk traced for compilation (:func:`traceable`) always does, since the checks here look at values.
``tests/test_diagnostics.py`` compares both paths on several programs.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.nn import functional as F

__all__ = ["FAST_LOG_PROB", "fast_log_prob", "site_log_prob", "traceable"]

#: Use the closed-form log-densities of :func:`fast_log_prob` where they apply.
#: ``False`` sends every site through ``site["fn"].log_prob``; the tests compare the two.
FAST_LOG_PROB = True

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

#: Block size, in elements, of :func:`_blocked_event_sum` (8 MiB of float32) for inputs of more than
#: twice that; smaller ones (a default chunk, 4096 x 784) take one op: fewer, larger ops keep the
#: number of OpenMP parallel regions (each a possible stall on a busy machine) low.
_BLOCK_ELEMENTS = 2**21


def _compact(t: torch.Tensor) -> torch.Tensor:
    """A view of ``t`` with every broadcast (stride-0) dimension cut to size 1: same values, broadcastable
    back to ``t.shape``. A guide's ``Normal(loc, scale)`` under the particle plate holds ``loc`` expanded
    to ``(K, N, d)`` with stride 0 along K; elementwise work on the compact ``(1, N, d)`` is K times less."""
    if all(st != 0 or sz == 1 for st, sz in zip(t.stride(), t.shape, strict=True)):
        return t
    return t[
        tuple(
            slice(0, 1) if st == 0 and sz > 1 else slice(None)
            for st, sz in zip(t.stride(), t.shape, strict=True)
        )
    ]


def _broadcast(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """``torch.broadcast_shapes`` for well-formed shapes, without its per-call overhead (~50 us)."""
    rank = max(len(s) for s in shapes)
    out = [1] * rank
    for shape in shapes:
        for i, size in enumerate(shape, rank - len(shape)):
            if size != 1:
                if out[i] not in (1, size):
                    raise ValueError(f"shapes {shapes} do not broadcast")
                out[i] = size
    return tuple(out)


def _sum_right(t: torch.Tensor, dims: int) -> torch.Tensor:
    return t.sum(tuple(range(-dims, 0))) if dims else t


def _blocked_event_sum(
    op: Callable[..., torch.Tensor],
    args: tuple[torch.Tensor, ...],
    full: tuple[int, ...],
    event_dims: int,
    squares: bool = False,
) -> torch.Tensor:
    """``op(*args)`` (or its square, ``squares=True``) broadcast to ``full`` and summed over the
    ``event_dims`` right-most dims, evaluated in blocks of :data:`_BLOCK_ELEMENTS` when the whole is
    larger than twice that, so that no temporary is larger than a block.

    ``op`` is elementwise; it may return a view of an argument only with ``squares=True`` (the sum of
    squares is one ``vector_norm`` pass that writes nothing of ``(K, N, D)`` size). Blocks bound the
    temporaries of callers who choose very large chunks; at the default chunk size this is one op.
    """

    def reduce(t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        t = t.expand(shape) if tuple(t.shape) != shape else t
        if not event_dims:
            return t.square() if squares else t
        dims = tuple(range(-event_dims, 0))
        return torch.linalg.vector_norm(t, dim=dims).square_() if squares else t.sum(dims)

    batch = full[: len(full) - event_dims]
    dim = next((i for i in range(len(batch)) if math.prod(full[i + 1 :]) <= _BLOCK_ELEMENTS), None)
    if (
        event_dims == 0 or math.prod(full) <= 2 * _BLOCK_ELEMENTS or dim is None
    ):  # 4096 x 784: one op
        return reduce(op(*args), full)
    step = max(1, _BLOCK_ELEMENTS // math.prod(full[dim + 1 :]))
    args = tuple(a.reshape((1,) * (len(full) - a.dim()) + tuple(a.shape)) for a in args)
    out = torch.empty(batch, dtype=args[0].dtype, device=args[0].device)
    for start in range(0, full[dim], step):
        size = min(step, full[dim] - start)
        block = op(*(a if a.shape[dim] == 1 else a.narrow(dim, start, size) for a in args))
        out.narrow(dim, start, size).copy_(reduce(block, full[:dim] + (size,) + full[dim + 1 :]))
    return out


def _scratch_tensor(
    scratch: dict | None, shape: tuple[int, ...], like: torch.Tensor
) -> torch.Tensor:
    """An uninitialised tensor of ``shape``: a view of a buffer kept in ``scratch`` and reused by every
    chunk of one scan, or a new one. A fresh ``(K, N, D)`` temporary per chunk (12 MB at 4096 x 784) is
    memory glibc may hand back to the OS when freed and take again, page by page, on the next chunk:
    measured at up to a quarter of the time on this CPU."""
    if scratch is None:
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    key = (like.dtype, like.device)
    size = math.prod(shape)
    buf = scratch.get(key)
    if buf is None or buf.numel() < size:
        buf = scratch[key] = torch.empty(size, dtype=like.dtype, device=like.device)
    return buf[:size].view(shape)


def _softplus_signed(
    logits: torch.Tensor, sign: torch.Tensor, scratch: dict | None = None
) -> torch.Tensor:
    """``softplus(sign * logits)`` as ``logaddexp(sign * logits, 0)`` in place: one temporary (out of
    place when autograd records, which the estimators never ask for: they run under ``no_grad``)."""
    if torch.is_grad_enabled() and logits.requires_grad:
        return F.softplus(logits * sign)
    t = torch.mul(
        logits, sign, out=_scratch_tensor(scratch, _broadcast(logits.shape, sign.shape), logits)
    )
    return torch.logaddexp(t, t.new_zeros(()), out=t)


def _standardise(value: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``(value - loc) / scale``, in place on the one temporary ``value - loc``."""
    t = value - loc
    return t.div_(scale) if _broadcast(t.shape, scale.shape) == tuple(t.shape) else t / scale


def _is_standard(loc: torch.Tensor, scale: torch.Tensor, limit: int = 1 << 16) -> bool:
    """Whether (compact) ``loc`` is all 0 and ``scale`` all 1 (a prior N(0, I)); only small ones are looked at."""
    return (
        loc.numel() <= limit
        and scale.numel() <= limit
        and not bool(loc.any())
        and bool((scale == 1).all())
    )


def fast_log_prob(fn: Any, value: torch.Tensor, scratch: dict | None = None) -> torch.Tensor | None:
    """``fn.log_prob(value)`` for the families that dominate VAE evaluation, or None (use ``fn.log_prob``).

    Handled, through any number of ``Independent`` (``.to_event``) wrappers, where the class uses
    torch's own ``log_prob`` (a subclass that overrides it is left to the generic path):

    * ``Bernoulli(logits=l)`` on a float value in {0, 1} (checked on the value itself, e.g. ``x: (N, D)``,
      not on its particle-broadcast copy): ``-softplus((1 - 2 x) l)``, the same number as torch's
      ``-binary_cross_entropy_with_logits(l, x)`` up to rounding, in one ``(K, N, D)`` temporary (a
      ``scratch`` buffer reused by every chunk of a scan, see :func:`_scratch_tensor`) where torch's
      ``Bernoulli.log_prob`` makes four (``x`` broadcast by ``broadcast_all``, BCE's log-sigmoid and
      its buffer, ``1 - x``) and negates the full result. Other values (grey levels, which validation
      refuses) go to the generic path.
    * ``Normal(loc, scale)``: ``-((v - loc) / scale)^2 / 2 - log scale - log sqrt(2 pi)`` summed over
      the event dims, with ``log scale`` taken on the compact (un-broadcast) ``scale`` (:func:`_compact`)
      rather than on its ``(K, N, d)`` expansion.

    Very large inputs are evaluated in blocks (:func:`_blocked_event_sum`). The result has exactly the shape of ``fn.log_prob(value)`` (broadcast views where values repeat) and
    equals it up to float rounding (the tests compare both paths on several programs).
    """
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        return None
    event_dims = 0
    while type(fn).log_prob is torch.distributions.Independent.log_prob:
        event_dims += fn.reinterpreted_batch_ndims
        fn = fn.base_dist
    method = type(fn).log_prob
    if method is torch.distributions.Bernoulli.log_prob:
        return _bernoulli_log_prob(fn, value, event_dims, scratch)
    if method is torch.distributions.Normal.log_prob:
        return _normal_log_prob(fn, value, event_dims)
    return None


def _bernoulli_log_prob(
    fn: Any, value: torch.Tensor, event_dims: int, scratch: dict | None
) -> torch.Tensor | None:
    """``-softplus((1 - 2 x) l)`` summed over the event dims, for a Bernoulli built from logits."""
    # built from logits: they are in the instance's dict and probs are not (torch computes the one
    # not given lazily, on first use); a Bernoulli built from probs is left to its own log_prob
    logits = vars(fn).get("logits")
    if logits is None or "probs" in vars(fn) or logits.dtype != value.dtype:
        return None
    x = _compact(value)
    if not bool(((x == 0) | (x == 1)).all()):
        return None
    full = _broadcast(logits.shape, value.shape)
    if len(full) < event_dims:
        return None
    op = functools.partial(_softplus_signed, scratch=scratch)
    return torch.neg(_blocked_event_sum(op, (logits, 1 - 2 * x), full, event_dims))


def _normal_log_prob(fn: Any, value: torch.Tensor, event_dims: int) -> torch.Tensor | None:
    """The Normal log-density summed over the event dims, ``log scale`` on the compact scale."""
    loc, scale = fn.loc, fn.scale
    full = _broadcast(loc.shape, value.shape)
    if (
        loc.dtype != value.dtype
        or scale.dtype != value.dtype
        or len(full) < event_dims
        or value.dim() < event_dims
        or tuple(value.shape[value.dim() - event_dims :]) != full[len(full) - event_dims :]
    ):
        return None
    event_shape = full[len(full) - event_dims :]
    loc, scale = _compact(loc), _compact(scale)
    if _is_standard(loc, scale):  # N(0, I) prior: sum of z^2, one pass, no temporary
        quad = _blocked_event_sum(lambda v: v, (value,), full, event_dims, squares=True)
    else:
        quad = _blocked_event_sum(_standardise, (value, loc, scale), full, event_dims, squares=True)
    log_scale = scale.log()  # on the compact scale: (1, N, d) for a guide under the particle plate
    log_norm = (
        _sum_right(
            log_scale.expand(tuple(log_scale.shape[: log_scale.dim() - event_dims]) + event_shape),
            event_dims,
        )
        + math.prod(event_shape) * _HALF_LOG_2PI
    )
    lp = -0.5 * quad - log_norm
    batch = full[: len(full) - event_dims]
    return lp.expand(batch) if lp.shape != batch else lp


_TRACING = False  # True while a chunk is traced for compilation: no data-dependent Python then


@contextlib.contextmanager
def traceable() -> Iterator[None]:
    """Score sites with their own ``log_prob``: :func:`fast_log_prob` looks at values (is ``x`` binary?
    is the prior N(0, I)?), which a trace on fake tensors cannot; Inductor fuses ``log_prob`` anyway."""
    global _TRACING
    saved, _TRACING = _TRACING, True
    try:
        yield
    finally:
        _TRACING = saved


def site_log_prob(site: dict, scratch: dict | None = None) -> torch.Tensor:
    """``site["fn"].log_prob(site["value"])``, through :func:`fast_log_prob` where it applies."""
    lp = (
        fast_log_prob(site["fn"], site["value"], scratch)
        if FAST_LOG_PROB and not _TRACING
        else None
    )
    return site["fn"].log_prob(site["value"]) if lp is None else lp
