r"""Diagnostics for VAEs and other amortised Pyro programs: ELBO, importance-weighted log p(x), PSIS.

For one data point ``x`` and ``K`` draws ``z_k ~ q(z | x)`` the log importance weights are

.. math::

    \log w_k = \log p(x, z_k) - \log q(z_k \mid x), \qquad k = 1, \dots, K,

and the two estimators of :math:`\log p(x)` this module reports are

.. math::

    \mathrm{ELBO} = \frac{1}{K} \sum_k \log w_k
    \;\le\; \mathrm{IW}_K = \log \frac{1}{K} \sum_k w_k \;\le\; \log p(x) \quad\text{(in expectation)}.

``IW_K`` is the importance-weighted bound of Burda et al. (2015); it rises with ``K``
towards :math:`\log p(x)` and is computed with a log-sum-exp (running over chunks of
particles, so memory stays bounded). Per point, ``IW_K - ELBO >= 0`` exactly (Jensen) when
both come from the same draws, and it is a lower bound on the inference gap
:math:`\log p(x) - \mathrm{ELBO} = \mathrm{KL}(q(z \mid x) \,\|\, p(z \mid x))`; Cremer et al.
(2018) split that gap into approximation and amortisation parts.

The IW estimate is only as good as the tail of the weights. Pareto-smoothed importance
sampling (Vehtari et al., 2024) fits a generalised Pareto distribution to the largest
weights of each point; its shape :math:`\hat k` says how many moments the weights have:

* :math:`\hat k < 0.5`: finite variance; the IW estimate is reliable (**good**);
* :math:`0.5 \le \hat k < 0.7`: infinite variance but the estimate is still usable, with
  more noise and a slower approach to :math:`\log p(x)` (**usable**);
* :math:`\hat k \ge 0.7`: the IW estimate for that point is **unreliable**, however large
  ``K`` looks: q(z | x) is too narrow or misplaced for that point.

The effective sample size of the normalised weights :math:`\tilde w_k` is
:math:`1 / \sum_k \tilde w_k^2` (between 1 and K).

Generic programs: every estimator takes a Pyro ``model(x)`` and ``guide(x)`` whose local
latents sit in the data plate (any name, any site names). The observed and latent sites
are found from traces: observed = model sample sites with ``is_observed``; latent = the
other model sample sites, which must equal the guide's sample sites. The data plate is
the vectorised plate shared by the observed sites whose size is the number of rows of
``x`` (the right-most one if several). The guide is run under an extra particle plate to
the left of every plate of the program (as ``vectorize_particles`` does), the model is
replayed against it, and each site's ``log_prob`` (scale and mask applied) is summed over
every batch dimension except the particle and data dimensions. Pyro's own ``Importance``
and ``vectorized_importance_weights`` sum over all plates, so they give one weight per
particle for the whole batch rather than per point.

Speed: the hot loop runs the guide and the replayed model once per chunk of about
:data:`ROWS_PER_CALL` rows (particles x points), as Pyro traces, so any program works. The
log-densities of the sites are then evaluated by :func:`_fast_log_prob` where a site is a
``Bernoulli(logits)`` on binary values or a ``Normal`` (through any ``.to_event``): the same numbers as
``log_prob`` up to float rounding, at about the cost of hand-written torch (no particle-expanded copy
of ``x``, one cache-sized temporary, ``log scale`` on the un-broadcast scale); any other distribution
goes through its own ``log_prob``. On an MLP 784-400-50 Bernoulli VAE this runs at about 0.85-0.95x the
points per second of hand-written torch (``benchmarks/bench_iw.py``, ``benchmarks/IW_PERFORMANCE.md``),
and memory is bounded by the chunk, not by ``N * K``.

For large jobs (``fast="auto"`` from :data:`COMPILE_MIN_ROWS` particles x points, or ``fast="compile"``)
the chunk is traced once on fake tensors and compiled by ``torch.compile`` (:mod:`ppl_vae.compiled`):
no Pyro work per chunk, the element-wise work and the sums fused around the decoder's matrix products,
the same random draws, the first chunk of every call checked against the eager one. On the same
VAE that is level with hand-written eager torch (0.98-1.00x; 1.08-1.10x its BCE form) with 2 threads.

Exact references for testing the estimators: :meth:`ppl_vae.models.LinearGaussianVAE.exact_log_likelihood`
and :func:`quadrature_log_likelihood` (a dense grid over a 1-D or 2-D latent).

Posterior collapse: :func:`kl_per_dimension` (closed-form KL of q(z | x) from N(0, I) per
latent unit, averaged over data) and :func:`active_units` (unit j is active when
:math:`\mathrm{Var}_x(\mathbb{E}_q[z_j]) > 0.01`, Burda et al., 2015).

All values are in **nats per data point**. This module is the one home of the ArviZ calls.

References:
    Burda, Grosse & Salakhutdinov (2015), Importance Weighted Autoencoders, arXiv:1509.00519.
    Vehtari, Simpson, Gelman, Yao & Gabry (2024), Pareto Smoothed Importance Sampling, JMLR 25(72).
    Cremer, Li & Duvenaud (2018), Inference Suboptimality in Variational Autoencoders, ICML.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import site_is_subsample
from torch.nn import functional as F
from tqdm.auto import tqdm

from .compiled import ChunkRunner
from .models import standard_normal_kl

if TYPE_CHECKING:
    import arviz
    from matplotlib.figure import Figure

__all__ = [
    "PSISDiagnostics",
    "Report",
    "active_units",
    "elbo",
    "evaluate",
    "importance_ess",
    "iw_log_likelihood",
    "kl_per_dimension",
    "latent_activity",
    "log_weights",
    "plot_gap_hist",
    "plot_khat",
    "psis_diagnostics",
    "quadrature_log_likelihood",
    "reconstruction_error",
]

Program = Callable[..., Any]

#: Rows (particles x points) per model/guide call when the caller does not choose chunk sizes.
#: Measured on a busy 2-core AVX-512 CPU with an MLP 784-400-50 decoder (benchmarks/IW_PERFORMANCE.md):
#: with 2 intra-op threads 4096 rows is about 1.7x faster per row than 2048, for plain torch and for
#: us (fewer, larger ops: each is an OpenMP parallel region, and each region can stall when another
#: process holds a core); with 1 thread 2048-4096 are within noise of each other. 8192 and more cost
#: more per row (the decoder's (rows, 784) float32 temporaries, 25 MB each, outgrow the L3 cache).
ROWS_PER_CALL = 4096

#: Use the closed-form log-densities of :func:`_fast_log_prob` where they apply (see there).
#: ``False`` sends every site through ``site["fn"].log_prob``; the tests compare the two.
FAST_LOG_PROB = True

#: k-hat thresholds of Vehtari et al. (2024).
#: ``fast`` modes of the estimators: "auto" compiles the chunk (:mod:`ppl_vae.compiled`) for jobs of at
#: least :data:`COMPILE_MIN_ROWS` rows, "compile" always, "eager" never.
FAST_MODES = ("auto", "compile", "eager")

#: Rows (points x particles) from which ``fast="auto"`` compiles: compiling costs 3-5 s for the first
#: graph in a process on a 2-core CPU (0.2 s once Inductor's on-disk cache holds it) and saves about a
#: third of the eager time (about 5 us per row on an MLP 784-400-50), so it pays from about 2e6 rows,
#: e.g. 400 points at K=5000 or 2000 points at K=1000.
COMPILE_MIN_ROWS = 2_000_000

#: ``fast="auto"`` compiles only chunk shapes that occur at least this often in one call.
COMPILE_MIN_CHUNKS = 4

KHAT_GOOD = 0.5
KHAT_BAD = 0.7

_PARTICLE_PLATE = "_particles"
_GRID_PLATE = "_grid"


# =============================================================================== small helpers
def _check_int(arg: str, value: Any, minimum: int = 1, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{arg} must be an integer >= {minimum}; got {value!r}")


def _check_x(x: Any, arg: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{arg} must be a torch.Tensor of shape (N, ...); got {type(x).__name__}")
    if x.dim() == 0 or x.shape[0] == 0:
        raise ValueError(f"{arg} must have at least one row (shape (N, ...)); got shape {tuple(x.shape)}")
    return x


def _owner_check(program: Program, x: torch.Tensor) -> torch.Tensor:
    """If ``program`` is a bound method of an object with ``check_data`` (our VAE), validate ``x`` with it."""
    owner = getattr(program, "__self__", None)
    check = getattr(owner, "check_data", None)
    return check(x) if callable(check) else x


def _resolve_seed(seed: int | None, generator: torch.Generator | None) -> int:
    """One integer seed: ``seed`` if given, else a draw from ``generator`` (advancing it), else 0."""
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both")
    if generator is not None:
        return int(torch.randint(0, 2**62, (1,), generator=generator))
    if seed is None:
        return 0
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer; got {seed!r}")
    return seed


@contextlib.contextmanager
def _sandbox(seed: int, device: torch.device) -> Iterator[None]:
    """Seed Pyro's (global) RNG without touching the caller's, and keep the param store as it was.

    Inside, the param store holds the caller's parameters (so a user's trained ``pyro.param``
    values are seen) but anything a program registers (``pyro.module``) is dropped on exit.
    """
    store = pyro.get_param_store()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), store.scope(store.get_state()), torch.no_grad():
        torch.manual_seed(seed)
        yield


def _chunk_sizes(n: int, k: int, batch_size: int | None, particle_chunk: int | None) -> tuple[int, int]:
    """Points per call and particles per call, aiming at :data:`ROWS_PER_CALL` rows per call: K in equal
    chunks of at most ROWS_PER_CALL particles, then as many points as fit beside one chunk."""
    _check_int("batch_size", batch_size, allow_none=True)
    _check_int("particle_chunk", particle_chunk, allow_none=True)
    if particle_chunk is None:
        if batch_size is None:  # equal chunks: K=5000 -> 2 x 2500, not 4096 + 904
            particle_chunk = -(-k // -(-k // ROWS_PER_CALL))
        else:
            particle_chunk = max(1, ROWS_PER_CALL // batch_size)
    particle_chunk = min(particle_chunk, k)
    if batch_size is None:
        batch_size = max(1, ROWS_PER_CALL // particle_chunk)
    return min(batch_size, n), particle_chunk


def _fmt_sites(names: Any) -> str:
    return "{" + ", ".join(repr(n) for n in sorted(names)) + "}"


# =============================================================================== program inspection
@dataclass(frozen=True)
class _Program:
    """What one inspection of a model/guide pair found (see :func:`_inspect`)."""

    observed: tuple[str, ...]
    latent: tuple[str, ...]
    guide_extra: tuple[str, ...]
    data_plate: str
    data_dim: int
    max_plate_nesting: int

    @property
    def rank(self) -> int:
        """Batch rank under the particle plate."""
        return self.max_plate_nesting + 1

    @property
    def data_index(self) -> int:
        """Index of the data dimension in a log-prob padded to :attr:`rank` dims."""
        return self.rank + self.data_dim


def _sample_sites(trace: poutine.Trace) -> dict[str, dict]:
    return {
        name: site for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site)
        and not site["infer"].get("_deterministic", False)
    }


def _frames(site: dict) -> list:
    return [f for f in site["cond_indep_stack"] if f.vectorized]


def _plate_nesting(sites: dict[str, dict]) -> int:
    return max((-f.dim for s in sites.values() for f in _frames(s)), default=0)


def _find_data_plate(model_sites: dict[str, dict], observed: list[str], n: int) -> tuple[str, int]:
    """The vectorised plate of size ``n`` common to every observed site (right-most if several)."""
    if not observed:
        raise ValueError(
            "the model has no observed sample site (obs=...): cannot score the data; "
            "pass x to the model and observe it with pyro.sample(name, dist, obs=x)"
        )
    common = None
    for name in observed:
        frames = {(f.name, f.dim, f.size) for f in _frames(model_sites[name])}
        common = frames if common is None else common & frames
    candidates = sorted((f for f in common or () if f[2] == n), key=lambda f: f[1], reverse=True)
    if not candidates:
        plates = {name: [f.name for f in _frames(model_sites[name])] for name in observed}
        raise ValueError(
            f"no vectorised plate of size {n} (the number of rows of x) encloses every observed site; "
            f"observed sites and their plates: {plates}. Per-point estimates need the data in a plate, "
            f"e.g. `with pyro.plate('data', x.shape[0]):`"
        )
    name, dim, _ = candidates[0]
    for site_name in observed:
        for f in _frames(model_sites[site_name]):
            if f.name == name and f.full_size is not None and f.full_size != f.size:
                raise ValueError(
                    f"the data plate {name!r} subsamples ({f.size} of {f.full_size}): its scale would "
                    "multiply per-point log-probabilities; pass the points to evaluate as x and use a "
                    "plate without subsample_size"
                )
    return name, dim


def _in_plate(site: dict, dim: int, n: int) -> bool:
    return any(f.dim == dim and f.size == n for f in _frames(site))


def _inspect(model: Program, guide: Program, x: torch.Tensor) -> _Program:
    """Trace guide and replayed model once on a few rows of ``x`` (validation on) and classify sites."""
    x0 = x[: min(len(x), 16)]
    n0 = len(x0)
    try:
        with pyro.validation_enabled(True):
            guide_tr = poutine.trace(guide).get_trace(x0)
            model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x0)
            for tr in (guide_tr, model_tr):
                tr.compute_log_prob(lambda name, site: not site_is_subsample(site))
    except (RuntimeError, IndexError, ValueError) as err:  # shape errors from inside user code or Pyro
        raise ValueError(
            f"running the model and guide on x of shape {tuple(x.shape)} failed: {err}. "
            "Check that x has the shape the model expects (rows are data points)"
        ) from err
    model_sites, guide_sites = _sample_sites(model_tr), _sample_sites(guide_tr)
    observed = [n for n, s in model_sites.items() if s["is_observed"]]
    latent = [n for n, s in model_sites.items() if not s["is_observed"]]
    guide_latent = [n for n, s in guide_sites.items() if not s["is_observed"]]
    guide_aux = [n for n in guide_latent if guide_sites[n]["infer"].get("is_auxiliary", False)]
    if set(latent) != set(guide_latent) - set(guide_aux):
        raise ValueError(
            "the model's and the guide's latent sites do not match: model latents "
            f"{_fmt_sites(latent)}, guide sample sites {_fmt_sites(set(guide_latent) - set(guide_aux))} "
            f"(model-only: {_fmt_sites(set(latent) - set(guide_latent))}, guide-only: "
            f"{_fmt_sites(set(guide_latent) - set(latent) - set(guide_aux))}). Every unobserved model site "
            "needs a guide site of the same name"
        )
    plate, dim = _find_data_plate(model_sites, observed, n0)
    for role, sites, names in (("model", model_sites, list(model_sites)), ("guide", guide_sites, guide_latent)):
        outside = [s for s in names if not _in_plate(sites[s], dim, n0)]
        if outside:
            raise ValueError(
                f"{role} site(s) {_fmt_sites(outside)} lie outside the data plate {plate!r} (dim {dim}): "
                "per-point estimates need every latent local to a data point. A global latent must be "
                "observed instead: fix its value with pyro.poutine.condition(model, data={...}) and drop "
                "it from the guide"
            )
    mpn = max(_plate_nesting(model_sites), _plate_nesting(guide_sites), -dim)
    for sites in (model_sites, guide_sites):
        for name, site in sites.items():
            pyro.util.check_site_shape(site, mpn)
            if site["log_prob"].dim() > mpn:
                raise ValueError(
                    f"site {name!r} has log_prob shape {tuple(site['log_prob'].shape)} with batch dims outside "
                    f"every plate (max plate nesting {mpn}): declare them with pyro.plate or use .to_event(...)"
                )
    info = _Program(tuple(observed), tuple(latent), tuple(guide_aux), plate, dim, mpn)
    try:  # the hot loop vectorises over particles: check once that the programs allow it
        log_w = _log_w_chunk(model, guide, x0, 2, info)
    except (RuntimeError, IndexError, ValueError) as err:
        raise ValueError(
            f"the model and guide run on their own but fail when vectorised over particles (an extra "
            f"plate at dim {-info.rank}, left of all their plates): {err}. Index tensors from the right "
            "(z[..., j], z.shape[-1], x.new_zeros(x.shape[0], d)) so that a leading particle dimension "
            "broadcasts"
        ) from err
    if log_w.shape != (2, n0):
        raise ValueError(
            f"per-point log weights have shape {tuple(log_w.shape)} instead of (2, {n0}) under a particle "
            "plate: every latent and observed site must sit in the data plate"
        )
    return info


def _per_point(t: torch.Tensor, info: _Program) -> torch.Tensor:
    """Sum a log-prob over every batch dim except particles and data: ``-> (K or 1, N or 1)``."""
    if t.dim() < info.rank:
        t = t.reshape((1,) * (info.rank - t.dim()) + tuple(t.shape))
    dims = [i for i in range(1, info.rank) if i != info.data_index]
    if dims:
        t = t.sum(dims)
    return t


def _run(model: Program, guide: Program, xb: torch.Tensor, k: int, info: _Program,
         scratch: dict | None = None) -> tuple[poutine.Trace, poutine.Trace]:
    with pyro.plate(_PARTICLE_PLATE, k, dim=-info.rank):
        guide_tr = poutine.trace(guide).get_trace(xb)
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(xb)
    if scratch is not None:
        # Keep this chunk's tensors alive until the next chunk's exist, as the loop variables of a
        # plain-torch loop do: freeing a whole chunk at once leaves the top of the C heap free and
        # large, glibc hands it back to the OS, and the next chunk takes it again page by page
        # (measured: up to 25 MB of page faults per 4096-row call, 10-25% of the time).
        scratch["previous_traces"] = (model_tr, guide_tr)
    return model_tr, guide_tr


# ------------------------------------------------------------------------------- fast log-densities
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
    return t[tuple(slice(0, 1) if st == 0 and sz > 1 else slice(None) for st, sz in zip(t.stride(), t.shape, strict=True))]


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
    op: Callable[..., torch.Tensor], args: tuple[torch.Tensor, ...], full: tuple[int, ...], event_dims: int,
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
    dim = next((i for i in range(len(batch)) if math.prod(full[i + 1:]) <= _BLOCK_ELEMENTS), None)
    if event_dims == 0 or math.prod(full) <= 2 * _BLOCK_ELEMENTS or dim is None:  # 4096 x 784: one op
        return reduce(op(*args), full)
    step = max(1, _BLOCK_ELEMENTS // math.prod(full[dim + 1:]))
    args = tuple(a.reshape((1,) * (len(full) - a.dim()) + tuple(a.shape)) for a in args)
    out = torch.empty(batch, dtype=args[0].dtype, device=args[0].device)
    for start in range(0, full[dim], step):
        size = min(step, full[dim] - start)
        block = op(*(a if a.shape[dim] == 1 else a.narrow(dim, start, size) for a in args))
        out.narrow(dim, start, size).copy_(reduce(block, full[:dim] + (size,) + full[dim + 1:]))
    return out


def _scratch_tensor(scratch: dict | None, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
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


def _softplus_signed(logits: torch.Tensor, sign: torch.Tensor, scratch: dict | None = None) -> torch.Tensor:
    """``softplus(sign * logits)`` as ``logaddexp(sign * logits, 0)`` in place: one temporary (out of
    place when autograd records, which the estimators never ask for: they run under ``no_grad``)."""
    if torch.is_grad_enabled() and logits.requires_grad:
        return F.softplus(logits * sign)
    t = torch.mul(logits, sign, out=_scratch_tensor(scratch, _broadcast(logits.shape, sign.shape), logits))
    return torch.logaddexp(t, t.new_zeros(()), out=t)


def _standardise(value: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``(value - loc) / scale``, in place on the one temporary ``value - loc``."""
    t = value - loc
    return t.div_(scale) if _broadcast(t.shape, scale.shape) == tuple(t.shape) else t / scale


def _is_standard(loc: torch.Tensor, scale: torch.Tensor, limit: int = 1 << 16) -> bool:
    """Whether (compact) ``loc`` is all 0 and ``scale`` all 1 (a prior N(0, I)); only small ones are looked at."""
    return (loc.numel() <= limit and scale.numel() <= limit and not bool(loc.any())
            and bool((scale == 1).all()))


def _fast_log_prob(fn: Any, value: torch.Tensor, scratch: dict | None = None) -> torch.Tensor | None:
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
        logits = fn.__dict__.get("logits")
        if logits is None or fn._param is not logits or logits.dtype != value.dtype:
            return None
        x = _compact(value)
        if not bool(((x == 0) | (x == 1)).all()):
            return None
        full = _broadcast(logits.shape, value.shape)
        if len(full) < event_dims:
            return None
        op = functools.partial(_softplus_signed, scratch=scratch)
        return torch.neg(_blocked_event_sum(op, (logits, 1 - 2 * x), full, event_dims))
    if method is torch.distributions.Normal.log_prob:
        loc, scale = fn.loc, fn.scale
        full = _broadcast(loc.shape, value.shape)
        if (loc.dtype != value.dtype or scale.dtype != value.dtype or len(full) < event_dims
                or value.dim() < event_dims or tuple(value.shape[value.dim() - event_dims:]) != full[len(full) - event_dims:]):
            return None
        event_shape = full[len(full) - event_dims:]
        loc, scale = _compact(loc), _compact(scale)
        if _is_standard(loc, scale):  # N(0, I) prior: sum of z^2, one pass, no temporary
            quad = _blocked_event_sum(lambda v: v, (value,), full, event_dims, squares=True)
        else:
            quad = _blocked_event_sum(_standardise, (value, loc, scale), full, event_dims, squares=True)
        log_scale = scale.log()  # on the compact scale: (1, N, d) for a guide under the particle plate
        log_norm = _sum_right(log_scale.expand(tuple(log_scale.shape[: log_scale.dim() - event_dims]) + event_shape),
                              event_dims) + math.prod(event_shape) * _HALF_LOG_2PI
        lp = -0.5 * quad - log_norm
        batch = full[: len(full) - event_dims]
        return lp.expand(batch) if lp.shape != batch else lp
    return None


_TRACING = False  # True while a chunk is traced for compilation: no data-dependent Python then


@contextlib.contextmanager
def _traceable() -> Iterator[None]:
    """Score sites with their own ``log_prob``: :func:`_fast_log_prob` looks at values (is ``x`` binary?
    is the prior N(0, I)?), which a trace on fake tensors cannot; Inductor fuses ``log_prob`` anyway."""
    global _TRACING
    saved, _TRACING = _TRACING, True
    try:
        yield
    finally:
        _TRACING = saved


def _site_log_prob(site: dict, scratch: dict | None = None) -> torch.Tensor:
    """``site["fn"].log_prob(site["value"])``, through :func:`_fast_log_prob` where it applies."""
    lp = _fast_log_prob(site["fn"], site["value"], scratch) if FAST_LOG_PROB and not _TRACING else None
    return site["fn"].log_prob(site["value"]) if lp is None else lp


def _sum_sites(
    trace: poutine.Trace, names: tuple[str, ...], info: _Program, shape: tuple[int, int], like: torch.Tensor,
    scratch: dict | None = None,
) -> torch.Tensor:
    """Sum of the named sites' log-probs (scale and mask applied), per particle and point: ``shape``."""
    total = None
    for name in names:
        site = trace.nodes[name]
        lp = scale_and_mask(_site_log_prob(site, scratch), site["scale"], site["mask"])
        lp = _per_point(lp, info)
        total = lp if total is None else total + lp
    if total is None:
        return like.new_zeros(shape)
    return total.expand(shape)


def _log_w_chunk(model: Program, guide: Program, xb: torch.Tensor, k: int, info: _Program,
                 scratch: dict | None = None) -> torch.Tensor:
    """``(k, n)`` log weights ``log p(x, z) - log q(z | x)`` for one chunk (``scratch``: see :func:`_scan`)."""
    model_tr, guide_tr = _run(model, guide, xb, k, info, scratch)
    shape = (k, len(xb))
    log_p = _sum_sites(model_tr, info.observed + info.latent, info, shape, xb, scratch)
    log_q = _sum_sites(guide_tr, info.latent + info.guide_extra, info, shape, xb, scratch)
    return log_p - log_q


def _check_analytic(info: _Program, guide_tr: poutine.Trace, model_tr: poutine.Trace) -> None:
    if info.guide_extra:
        raise ValueError(
            f"analytic_kl=True needs a guide without auxiliary sites; got {_fmt_sites(info.guide_extra)}: "
            "use analytic_kl=False"
        )
    for name in info.latent:
        q, p = guide_tr.nodes[name]["fn"], model_tr.nodes[name]["fn"]
        if not q.has_rsample:
            raise ValueError(
                f"analytic_kl=True needs reparameterised guide sites; site {name!r} samples from "
                f"{type(q).__name__}, which has no rsample: use analytic_kl=False (sampled KL)"
            )
        try:
            torch.distributions.kl_divergence(q, p)
        except NotImplementedError:
            raise ValueError(
                f"analytic_kl=True: no closed-form KL is registered for ({type(q).__name__}, "
                f"{type(p).__name__}) at site {name!r}; use analytic_kl=False (sampled KL), or make both "
                "sides the same family (e.g. Normal(...).to_event(1) in model and guide)"
            ) from None


def _analytic_chunk(model: Program, guide: Program, xb: torch.Tensor, k: int, info: _Program,
                    scratch: dict | None = None) -> torch.Tensor:
    """``(k, n)`` values of ``log p(x | z) - sum_sites KL(q || p)``, the KL in closed form."""
    model_tr, guide_tr = _run(model, guide, xb, k, info, scratch)
    shape = (k, len(xb))
    total = _sum_sites(model_tr, info.observed, info, shape, xb, scratch)
    for name in info.latent:
        q_site, p_site = guide_tr.nodes[name], model_tr.nodes[name]
        kl = torch.distributions.kl_divergence(q_site["fn"], p_site["fn"])
        kl = scale_and_mask(kl, q_site["scale"], q_site["mask"])
        total = total - _per_point(kl, info).expand(shape)
    return total


def _prepare(model: Program, guide: Program, x: Any, num_samples: int, seed: int | None,
             generator: torch.Generator | None) -> tuple[torch.Tensor, int, _Program]:
    x = _check_x(x)
    _check_int("num_samples", num_samples)
    x = _owner_check(guide, _owner_check(model, x))
    seed = _resolve_seed(seed, generator)
    with _sandbox(seed, x.device):
        info = _inspect(model, guide, x)
    return x, seed, info


def _check_fast(fast: Any) -> None:
    if fast not in FAST_MODES:
        raise ValueError(f"fast must be one of {', '.join(map(repr, FAST_MODES))}; got {fast!r}")


def _compile_shapes(n: int, k: int, n_b: int, k_c: int, fast: str) -> set[tuple[int, int]]:
    """The ``(points, particles)`` chunk shapes of a scan worth compiling under ``fast``."""
    if fast == "eager" or (fast == "auto" and n * k < COMPILE_MIN_ROWS):
        return set()
    counts: dict[tuple[int, int], int] = {}
    for rows in (n_b,) * (n // n_b) + ((n % n_b,) if n % n_b else ()):
        for parts in (k_c,) * (k // k_c) + ((k % k_c,) if k % k_c else ()):
            counts[(rows, parts)] = counts.get((rows, parts), 0) + 1
    least = 1 if fast == "compile" else COMPILE_MIN_CHUNKS
    return {shape for shape, count in counts.items() if count >= least}


def _scan(
    model: Program, guide: Program, x: torch.Tensor, info: _Program, num_samples: int, seed: int,
    batch_size: int | None, particle_chunk: int | None, keep: bool, chunk_fn: Callable = _log_w_chunk,
    fast: str = "auto", progress: bool = False,
) -> Iterator[tuple[slice, torch.Tensor | None, torch.Tensor, torch.Tensor]]:
    """Walk ``x`` in chunks of points and particles, on one seeded random stream.

    Yields ``(rows, log_w, lse, total)`` per chunk of points: ``log_w: (n_b, K)`` if ``keep``,
    ``lse: (n_b,)`` the log-sum-exp over all K particles, ``total: (n_b,)`` their sum. ``fast``: see
    :data:`FAST_MODES`; compiled chunks draw the same numbers as eager ones (:mod:`ppl_vae.compiled`).
    ``progress``: a tqdm bar over points (for long jobs).
    """
    n = len(x)
    n_b, k_c = _chunk_sizes(n, num_samples, batch_size, particle_chunk)
    scratch: dict = {}  # buffers reused across chunks (see _scratch_tensor) and the last chunk's traces

    def traceable(xb: torch.Tensor, k: int) -> torch.Tensor:
        with _traceable():
            return chunk_fn(model, guide, xb, k, info, None)

    run = ChunkRunner(lambda xb, k: chunk_fn(model, guide, xb, k, info, scratch), traceable,
                      _compile_shapes(n, num_samples, n_b, k_c, fast), explicit=fast == "compile")
    bar = tqdm(total=n, desc=f"log weights, K={num_samples}", unit="pt", disable=not progress, leave=False)
    with _sandbox(seed, x.device), pyro.validation_enabled(False), bar:
        for start in range(0, n, n_b):
            xb = x[start : start + n_b]
            lse = torch.full((len(xb),), -math.inf, dtype=x.dtype, device=x.device)
            total = torch.zeros(len(xb), dtype=x.dtype, device=x.device)
            kept = []
            for k_start in range(0, num_samples, k_c):
                k = min(k_c, num_samples - k_start)
                lw = run(xb, k)
                if torch.isnan(lw).any():
                    bad = torch.isnan(lw).any(0).nonzero().flatten() + start
                    raise ValueError(
                        f"log weights are NaN for {len(bad)} point(s), first at row {int(bad[0])}: "
                        "check the data (NaN/inf) and that the model's parameters are finite"
                    )
                lse = torch.logaddexp(lse, lw.logsumexp(0))
                total = total + lw.sum(0)
                if keep:
                    kept.append(lw.T)
            bar.update(len(xb))
            yield slice(start, start + len(xb)), (torch.cat(kept, 1) if keep else None), lse, total


# =============================================================================== estimators
def log_weights(
    model: Program,
    guide: Program,
    x: torch.Tensor,
    num_samples: int = 1000,
    *,
    batch_size: int | None = None,
    particle_chunk: int | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    fast: str = "auto",
    progress: bool = False,
) -> torch.Tensor:
    """Log importance weights ``log p(x_n, z_nk) - log q(z_nk | x_n)``, ``z_nk ~ q(. | x_n)``.

    Args:
        model, guide: Pyro programs called as ``model(x)``, ``guide(x)``; local latents in the data plate.
        x: data ``(N, ...)``, rows are data points.
        num_samples: K draws per point.
        batch_size: points per call (default: about :data:`ROWS_PER_CALL` / particle_chunk).
        particle_chunk: particles per call (default: K cut into equal chunks of at most
            :data:`ROWS_PER_CALL`, e.g. 1000 -> 1000, 5000 -> 2 x 2500).
        seed, generator: the random stream: an int seed (None: 0) or a ``torch.Generator`` to draw
            one from; same seed and chunk sizes, same numbers on CPU (the draws are laid out by chunk,
            so other chunk sizes give other, equally valid, draws). The caller's global RNG is
            left as it was.
        fast: ``"auto"`` (compile the chunk with ``torch.compile`` for jobs of at least
            :data:`COMPILE_MIN_ROWS` particles x points), ``"compile"`` (always) or ``"eager"``
            (never). Compiled chunks draw the same numbers and agree with eager ones to float
            rounding (checked on the first chunk of every call; anything that cannot be compiled
            runs eagerly, with a warning); see :mod:`ppl_vae.compiled`.
        progress: show a progress bar over the points (tqdm).

    Returns:
        ``(N, K)`` tensor of log weights (nats), samples on the last axis (as ArviZ's ``psislw`` wants).
        Memory is ``N * K`` floats; use :func:`iw_log_likelihood` when only log p(x) is needed.
    """
    _check_fast(fast)
    x, seed, info = _prepare(model, guide, x, num_samples, seed, generator)
    parts = [lw for _, lw, _, _ in _scan(model, guide, x, info, num_samples, seed, batch_size, particle_chunk, True,
                                         fast=fast, progress=progress)]
    return torch.cat(parts, 0)


def iw_log_likelihood(
    model: Program,
    guide: Program,
    x: torch.Tensor,
    num_samples: int = 1000,
    *,
    batch_size: int | None = None,
    particle_chunk: int | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    fast: str = "auto",
    progress: bool = False,
) -> torch.Tensor:
    """Importance-weighted estimate of ``log p(x_n)`` per point (Burda et al., 2015), nats.

    ``IW_K(x_n) = log (1/K) sum_k p(x_n, z_k) / q(z_k | x_n)``, ``z_k ~ q(. | x_n)``: a lower bound
    on ``log p(x_n)`` in expectation that rises with ``K`` and is consistent as ``K -> inf``.
    Computed with a running log-sum-exp over chunks of particles, so memory is bounded by
    the chunk sizes, not by ``N * K``. Arguments as in :func:`log_weights`.

    Returns:
        ``(N,)`` tensor, nats per data point.
    """
    _check_fast(fast)
    x, seed, info = _prepare(model, guide, x, num_samples, seed, generator)
    out = torch.empty(len(x), dtype=x.dtype, device=x.device)
    for rows, _, lse, _ in _scan(model, guide, x, info, num_samples, seed, batch_size, particle_chunk, False,
                                 fast=fast, progress=progress):
        out[rows] = lse - math.log(num_samples)
    return out


def elbo(
    model: Program,
    guide: Program,
    x: torch.Tensor,
    num_samples: int = 1,
    *,
    analytic_kl: bool = False,
    batch_size: int | None = None,
    particle_chunk: int | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    fast: str = "auto",
    progress: bool = False,
) -> torch.Tensor:
    """The evidence lower bound per point, averaged over ``num_samples`` draws of ``z``, nats.

    ``analytic_kl=False``: ``mean_k [log p(x_n, z_k) - log q(z_k | x_n)]`` (as ``Trace_ELBO``).
    ``analytic_kl=True``: ``mean_k log p(x_n | z_k) - sum_sites KL(q(z | x_n) || p(z))`` with the KL
    in closed form (as ``TraceMeanField_ELBO``); needs reparameterised guide sites and a KL
    registered for each (guide, prior) pair, else ``ValueError``. Both estimate the same bound.
    Other arguments as in :func:`log_weights`.

    Returns:
        ``(N,)`` tensor, nats per data point.
    """
    _check_fast(fast)
    x, seed, info = _prepare(model, guide, x, num_samples, seed, generator)
    chunk_fn = _log_w_chunk
    if analytic_kl:
        with _sandbox(seed, x.device):
            model_tr, guide_tr = _run(model, guide, x[: min(len(x), 16)], 1, info)
        _check_analytic(info, guide_tr, model_tr)
        chunk_fn = _analytic_chunk
    out = torch.empty(len(x), dtype=x.dtype, device=x.device)
    for rows, _, _, total in _scan(model, guide, x, info, num_samples, seed, batch_size, particle_chunk,
                                   False, chunk_fn, fast, progress):
        out[rows] = total / num_samples
    return out


def quadrature_log_likelihood(
    model: Program,
    x: torch.Tensor,
    grid: int | torch.Tensor | None = None,
    *,
    bounds: tuple[float, float] = (-8.0, 8.0),
    batch_size: int | None = None,
) -> torch.Tensor:
    """``log p(x_n) = log int p(x_n, z) dz`` by a dense grid over a 1-D or 2-D latent, nats.

    The model must have exactly one latent sample site, in the data plate, with one or two
    numbers per data point (event shape ``()``, ``(1,)`` or ``(2,)``). The site is conditioned on
    every grid point ``z_g`` (``poutine.condition``) and
    ``log p(x_n) ~ logsumexp_g log p(x_n, z_g) + d log(dz)``: the equal-weight (trapezoid) rule,
    very accurate when ``p(x_n, z)`` is smooth and negligible at the bounds.

    Args:
        model: a Pyro ``model(x)``.
        x: data ``(N, ...)``.
        grid: points per axis (default 2001 for d=1, 401 for d=2) spanning ``bounds``, or a 1-D
            tensor of equally spaced values used on every axis.
        bounds: ``(low, high)`` of the grid on every axis when ``grid`` is an int.
        batch_size: points per call (default: about :data:`ROWS_PER_CALL` rows per call).

    Returns:
        ``(N,)`` tensor, nats per data point.
    """
    x = _owner_check(model, _check_x(x))
    with _sandbox(0, x.device):
        with pyro.validation_enabled(True):
            try:
                trace = poutine.trace(model).get_trace(x[: min(len(x), 16)])
            except (RuntimeError, IndexError) as err:
                raise ValueError(f"running the model on x of shape {tuple(x.shape)} failed: {err}") from err
        sites = _sample_sites(trace)
        observed = [n for n, s in sites.items() if s["is_observed"]]
        latent = [n for n, s in sites.items() if not s["is_observed"]]
        if len(latent) != 1:
            raise ValueError(
                f"quadrature_log_likelihood needs exactly one latent sample site; the model has "
                f"{_fmt_sites(latent)}"
            )
        name = latent[0]
        site = sites[name]
        event_shape = tuple(site["fn"].event_shape)
        d = math.prod(event_shape)
        n0 = len(x[: min(len(x), 16)])
        plate, dim = _find_data_plate(sites, observed, n0)
        if event_shape not in ((), (1,), (2,)) or [f.name for f in _frames(site)] != [plate]:
            raise ValueError(
                f"quadrature_log_likelihood supports one latent site with 1 or 2 numbers per data point, "
                f"in the data plate {plate!r} only; site {name!r} has event shape {event_shape} and plates "
                f"{[f.name for f in _frames(site)]}"
            )
        mpn = max(_plate_nesting(sites), -dim)
    info = _Program(tuple(observed), (name,), (), plate, dim, mpn)

    if grid is None:
        grid = 2001 if d == 1 else 401
    if isinstance(grid, int):
        _check_int("grid", grid, minimum=3)
        lo, hi = bounds
        if not hi > lo:
            raise ValueError(f"bounds must be (low, high) with high > low; got {bounds!r}")
        axis = torch.linspace(lo, hi, grid, dtype=x.dtype, device=x.device)
    elif isinstance(grid, torch.Tensor) and grid.dim() == 1 and len(grid) >= 3:
        axis = grid.to(dtype=x.dtype, device=x.device)
    else:
        raise ValueError(f"grid must be an int >= 3 or a 1-D tensor of >= 3 values; got {grid!r}")
    steps = axis.diff()
    if not (steps > 0).all() or not torch.allclose(steps, steps.mean(), rtol=1e-3, atol=0.0):
        raise ValueError("grid must be ascending and equally spaced")
    log_volume = d * math.log(float(steps.mean()))
    points = axis[:, None] if d == 1 else torch.cartesian_prod(axis, axis)  # (G, d)
    if event_shape == ():
        points = points[:, 0]
    g_total = len(points)

    n = len(x)
    _check_int("batch_size", batch_size, allow_none=True)
    n_b = min(n, batch_size or max(1, ROWS_PER_CALL // min(g_total, ROWS_PER_CALL)))
    g_c = max(1, ROWS_PER_CALL // n_b)
    out = torch.empty(n, dtype=x.dtype, device=x.device)
    with _sandbox(0, x.device), pyro.validation_enabled(False):
        for start in range(0, n, n_b):
            xb = x[start : start + n_b]
            lse = torch.full((len(xb),), -math.inf, dtype=x.dtype, device=x.device)
            for g0 in range(0, g_total, g_c):
                zg = points[g0 : g0 + g_c]
                g = len(zg)
                shape = [1] * info.rank
                shape[0], shape[info.data_index] = g, len(xb)
                value = zg.reshape((g,) + (1,) * info.max_plate_nesting + event_shape).expand(tuple(shape) + event_shape)
                with pyro.plate(_GRID_PLATE, g, dim=-info.rank):
                    tr = poutine.trace(poutine.condition(model, data={name: value})).get_trace(xb)
                lp = _sum_sites(tr, info.observed + info.latent, info, (g, len(xb)), xb)
                lse = torch.logaddexp(lse, lp.logsumexp(0))
            out[start : start + len(xb)] = lse + log_volume
    return out


# =============================================================================== PSIS (ArviZ)
def _arviz() -> Any:
    """Import ArviZ, silencing only its import-time refactor FutureWarning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ArviZ is undergoing a major refactor.*", category=FutureWarning)
        import arviz

    return arviz


def importance_ess(log_w: torch.Tensor | np.ndarray) -> np.ndarray:
    """Effective sample size of the normalised weights per point: ``1 / sum_k w~_k^2``, in [1, K].

    ``log_w: (N, K)`` -> ``(N,)`` numpy array.
    """
    lw = torch.as_tensor(np.asarray(log_w) if not isinstance(log_w, torch.Tensor) else log_w).double()
    if lw.dim() != 2:
        raise ValueError(f"log weights must have shape (N, K); got {tuple(lw.shape)}")
    norm = lw - lw.logsumexp(-1, keepdim=True)
    return (-(2 * norm).logsumexp(-1)).exp().cpu().numpy()


@dataclass
class PSISDiagnostics:
    """Pareto-smoothed importance sampling diagnostics per data point.

    Attributes:
        khat: ``(N,)`` Pareto shape estimates: < 0.5 good, 0.5-0.7 usable, > 0.7 the IW estimate
            for that point is unreliable (``inf`` when too few tail draws to fit).
        ess: ``(N,)`` effective sample size of the raw normalised weights, in [1, K].
        num_samples: K.
    """

    khat: np.ndarray
    ess: np.ndarray
    num_samples: int

    def share_above(self, threshold: float) -> float:
        """Share of points with ``khat > threshold``."""
        return float(np.mean(self.khat > threshold))

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"khat": self.khat, "ess": self.ess})


def psis_diagnostics(log_w: torch.Tensor | np.ndarray, reff: float = 1.0, rows_per_call: int = 2048) -> PSISDiagnostics:
    """PSIS k-hat (``arviz.psislw``) and ESS of ``(N, K)`` log weights, samples on the last axis.

    ``arviz.psislw`` (0.23) treats the last axis as samples and returns ``(smoothed, khat)``; it
    is called on blocks of ``rows_per_call`` points so memory stays bounded.

    Raises:
        ValueError: ``K < 2``: a Pareto tail cannot be fitted to fewer than 2 draws per point
            (ArviZ fits the largest ``min(K/5, 3 sqrt(K))`` draws and needs at least 5 of them;
            in practice use ``K >= 100``).
    """
    lw = log_w.detach().cpu().double().numpy() if isinstance(log_w, torch.Tensor) else np.asarray(log_w, float)
    if lw.ndim != 2:
        raise ValueError(f"log weights must have shape (N, K), samples last; got shape {lw.shape}")
    k = lw.shape[1]
    if k < 2:
        raise ValueError(
            f"PSIS k-hat needs at least 2 importance samples per point (num_samples >= 2); got K={k}: "
            "the Pareto tail is fitted to the largest weights of each point (ArviZ uses the largest "
            "min(K/5, 3*sqrt(K)) and needs 5 of them, so in practice K >= 100)"
        )
    if k < 100:
        warnings.warn(
            f"k-hat from K={k} samples per point is unreliable (inf when K <= 20: too few tail draws "
            "for the Pareto fit); use num_samples >= 100", UserWarning, stacklevel=2,
        )
    az = _arviz()
    khat = np.empty(lw.shape[0])
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        for start in range(0, lw.shape[0], rows_per_call):
            _, kh = az.psislw(lw[start : start + rows_per_call], reff=reff)
            khat[start : start + rows_per_call] = kh
    return PSISDiagnostics(khat=khat, ess=importance_ess(lw), num_samples=k)


# =============================================================================== posterior collapse
def _encode_all(vae: Any, x: torch.Tensor, batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    if not callable(getattr(vae, "encode", None)):
        raise TypeError(
            f"{type(vae).__name__} has no encode(x) -> (loc, scale): the collapse measures need an "
            "amortised Gaussian encoder such as ppl_vae.VAE"
        )
    with torch.no_grad():
        parts = [vae.encode(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def kl_per_dimension(vae: Any, x: torch.Tensor) -> torch.Tensor:
    """``KL(q(z_j | x) || N(0, 1))`` per latent unit, closed form, averaged over the rows of x: ``(d,)`` nats.

    Units with KL near 0 carry no information about x (posterior collapse).
    """
    loc, scale = _encode_all(vae, _check_x(x))
    return standard_normal_kl(loc, scale).mean(0)


def latent_activity(vae: Any, x: torch.Tensor) -> torch.Tensor:
    """``Var_x(E_q[z_j | x])`` per latent unit, ``(d,)`` (Burda et al., 2015)."""
    loc, _ = _encode_all(vae, _check_x(x))
    return loc.var(0, unbiased=True) if len(loc) > 1 else torch.zeros(loc.shape[1])


def active_units(vae: Any, x: torch.Tensor, threshold: float = 0.01) -> int:
    """Number of units with ``Var_x(E_q[z_j | x]) > threshold`` (0.01, as in Burda et al., 2015)."""
    return int((latent_activity(vae, x) > threshold).sum())


def reconstruction_error(vae: Any, x: torch.Tensor, batch_size: int = 4096) -> dict[str, torch.Tensor]:
    """Per-point error of decoding the posterior mean: ``{"mse": (N,)}`` mean squared error per
    coordinate, plus ``"bce": (N,)`` (nats, summed over coordinates) for a Bernoulli likelihood."""
    x = _check_x(x)
    loc, _ = _encode_all(vae, x, batch_size)
    with torch.no_grad():
        out = torch.cat([vae.decoder(loc[i : i + batch_size]) for i in range(0, len(x), batch_size)])
        mean = vae.likelihood.mean(out)
        xf = x.reshape(len(x), -1)
        result = {"mse": (mean.reshape(len(x), -1) - xf).pow(2).mean(-1)}
        if getattr(vae.likelihood, "name", None) == "bernoulli":
            result["bce"] = F.binary_cross_entropy_with_logits(
                out.reshape(len(x), -1), xf, reduction="none").sum(-1)
    return result


# =============================================================================== evaluate -> Report
def _mean_se(values: np.ndarray) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else float("nan")
    return float(values.mean()), se


@dataclass
class Report:
    """What :func:`evaluate` found: a per-point table, a JSON-able summary, and the log weights.

    Attributes:
        points: one row per data point: ``elbo``, ``iw_log_likelihood``, ``gap`` (IW - ELBO),
            ``khat``, ``ess`` and, for a VAE, ``kl`` (closed form) and ``recon_mse``; nats per point.
        summary: means with standard errors, k-hat shares, ESS, active units, KL per dimension,
            reconstruction error, settings (see :func:`evaluate`).
        log_weights: ``(N, K)`` numpy array, or None when not kept.
    """

    points: pd.DataFrame
    summary: dict[str, Any]
    log_weights: np.ndarray | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return str(self.summary.get("name") or "evaluation")

    def summary_frame(self) -> pd.DataFrame:
        """The summary as a printable table: quantity, value, standard error, note."""
        s = self.summary
        k = s["num_samples"]
        rows = [
            ("ELBO", s["elbo_mean"], s["elbo_se"], f"nats/point, mean of log w over the same {k} draws"),
            (f"IW log p(x), K={k}", s["iw_mean"], s["iw_se"], "nats/point (Burda et al. 2015)"),
            ("gap IW - ELBO", s["gap_mean"], s["gap_se"], "nats/point, lower bound on KL(q || posterior)"),
            ("share k-hat > 0.5", s["khat_share_above_0.5"], None, "0.5-0.7: usable"),
            ("share k-hat > 0.7", s["khat_share_above_0.7"], None, "> 0.7: IW unreliable there"),
            ("median k-hat", s["khat_median"], None, ""),
            ("mean ESS", s["ess_mean"], None, f"of K={k} (1/sum w~^2)"),
        ]
        if s.get("active_units") is not None:
            rows.append(("active units", s["active_units"], None, f"of d={s['latent_dim']} (Var_x E[z_j] > 0.01)"))
            rows.append(("KL(q || p(z))", s["kl_mean"], s["kl_se"], "nats/point; per dim: "
                         + " ".join(f"{v:.2f}" for v in s["kl_per_dim"])))
        if s.get("reconstruction_mse") is not None:
            rows.append(("reconstruction MSE", s["reconstruction_mse"], None, "per coordinate, posterior mean"))
        if s.get("reconstruction_bce") is not None:
            rows.append(("reconstruction BCE", s["reconstruction_bce"], None, "nats/point, posterior mean"))
        frame = pd.DataFrame(rows, columns=["quantity", "value", "se", "note"], dtype=object)
        return frame.set_index("quantity")

    def format_table(self) -> str:
        """:meth:`summary_frame` as aligned text (integers as integers, 4 decimals otherwise)."""

        def fmt(v: Any) -> str:
            if v is None or (isinstance(v, float) and math.isnan(v)):
                return ""
            return str(v) if isinstance(v, (int, np.integer)) else f"{v:.4f}"

        frame = self.summary_frame()
        width = max(len(q) for q in frame.index)
        lines = [f"{'quantity':<{width}}  {'value':>10}  {'se':>8}  note"]
        for q, row in frame.iterrows():
            lines.append(f"{q:<{width}}  {fmt(row['value']):>10}  {fmt(row['se']):>8}  {row['note']}")
        return "\n".join(lines)

    def to_inference_data(self) -> arviz.InferenceData:
        """An ArviZ ``InferenceData``: group ``points`` (per-point values on dim ``point``), group
        ``importance`` (``log_weight`` on dims ``point, sample``, when kept), summary as attributes.
        Save with ``.to_netcdf(path)``."""
        az = _arviz()
        import xarray as xr

        point = np.arange(len(self.points))
        points = xr.Dataset(
            {c: ("point", self.points[c].to_numpy()) for c in self.points.columns},
            coords={"point": point},
        )
        attrs = {k: (json.dumps(v) if isinstance(v, (list, dict)) else ("none" if v is None else v))
                 for k, v in self.summary.items()}
        groups = {"points": points}
        if self.log_weights is not None:
            groups["importance"] = xr.Dataset(
                {"log_weight": (("point", "sample"), self.log_weights)},
                coords={"point": point, "sample": np.arange(self.log_weights.shape[1])},
            )
        return az.InferenceData(attrs=attrs, **groups)

    def save(self, directory: str | Path) -> dict[str, Path]:
        """Write ``evaluation.json`` (summary), ``evaluation.csv`` (per point), ``evaluation.nc``
        (InferenceData), ``khat.png`` and ``gap_hist.png`` into ``directory``; returns the paths."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "json": out / "evaluation.json",
            "csv": out / "evaluation.csv",
            "netcdf": out / "evaluation.nc",
            "khat": out / "khat.png",
            "gap_hist": out / "gap_hist.png",
        }
        paths["json"].write_text(json.dumps(_jsonable(self.summary), indent=2) + "\n")
        self.points.to_csv(paths["csv"], index_label="point")
        self.to_inference_data().to_netcdf(str(paths["netcdf"]))
        for key, plot in (("khat", plot_khat), ("gap_hist", plot_gap_hist)):
            plot(self).savefig(paths[key], dpi=110)
        return paths


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def evaluate(
    vae: Any,
    x: torch.Tensor,
    num_samples: int = 1000,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    particle_chunk: int | None = None,
    keep_log_weights: bool = True,
    name: str | None = None,
    fast: str = "auto",
    progress: bool = False,
) -> Report:
    """ELBO, IW log p(x), their gap, PSIS k-hat and ESS per point, plus collapse measures.

    Args:
        vae: an object with Pyro programs ``.model(x)`` and ``.guide(x)`` (e.g. :class:`ppl_vae.VAE`);
            with ``.encode`` (and ``.decoder``/``.likelihood``) the KL per dimension, active units
            and reconstruction error are added.
        x: data ``(N, D)``.
        num_samples: K importance samples per point (>= 2; >= 100 for a trustworthy k-hat).
        seed, generator, batch_size, particle_chunk, fast, progress: as in :func:`log_weights`.
        keep_log_weights: keep the ``(N, K)`` log weights on the report (for ``to_inference_data``).
        name: a label for tables and plot titles (e.g. the run folder).

    The per-point ``elbo`` is the mean of the same K log weights whose log-mean-exp is
    ``iw_log_likelihood``, so ``gap >= 0`` for every point. Interpretation of k-hat:
    < 0.5 good, 0.5-0.7 usable, > 0.7 the point's IW estimate is unreliable.
    """
    if not (callable(getattr(vae, "model", None)) and callable(getattr(vae, "guide", None))):
        raise TypeError(f"evaluate needs an object with .model(x) and .guide(x) Pyro programs; got {type(vae).__name__}")
    _check_int("num_samples", num_samples)
    _check_fast(fast)
    if num_samples < 2:
        raise ValueError(
            f"evaluate needs num_samples >= 2 for PSIS k-hat; got {num_samples}: the Pareto tail is fitted "
            "to the largest weights of each point (in practice use num_samples >= 100)"
        )
    if num_samples < 100:
        warnings.warn(
            f"k-hat from num_samples={num_samples} per point is unreliable (inf when <= 20: too few tail "
            "draws for the Pareto fit); use num_samples >= 100", UserWarning, stacklevel=2,
        )
    t0 = time.perf_counter()
    x, seed, info = _prepare(vae.model, vae.guide, x, num_samples, seed, generator)
    n = len(x)
    elbo_v = np.empty(n)
    iw_v = np.empty(n)
    khat = np.empty(n)
    ess = np.empty(n)
    kept: list[np.ndarray] = []
    buffer: list[tuple[slice, torch.Tensor]] = []

    def flush() -> None:
        if not buffer:
            return
        lw = torch.cat([b[1] for b in buffer])
        rows = slice(buffer[0][0].start, buffer[-1][0].stop)
        diag = psis_diagnostics(lw) if num_samples >= 100 else _quiet_psis(lw)
        khat[rows], ess[rows] = diag.khat, diag.ess
        if keep_log_weights:
            kept.append(lw.float().cpu().numpy())
        buffer.clear()

    block = max(1, 2**22 // num_samples)  # about 16 MB of float32 log weights per PSIS call
    for rows, lw, lse, total in _scan(vae.model, vae.guide, x, info, num_samples, seed, batch_size,
                                      particle_chunk, True, fast=fast, progress=progress):
        iw_v[rows] = (lse - math.log(num_samples)).cpu().numpy()
        elbo_v[rows] = (total / num_samples).cpu().numpy()
        buffer.append((rows, lw))
        if sum(len(b[1]) for b in buffer) >= block:
            flush()
    flush()
    seconds = time.perf_counter() - t0

    points = pd.DataFrame({"elbo": elbo_v, "iw_log_likelihood": iw_v, "gap": iw_v - elbo_v, "khat": khat, "ess": ess})
    summary: dict[str, Any] = {"name": name, "n": n, "num_samples": num_samples, "seed": seed,
                               "units": "nats per data point"}
    for key, col in (("elbo", "elbo"), ("iw", "iw_log_likelihood"), ("gap", "gap")):
        summary[f"{key}_mean"], summary[f"{key}_se"] = _mean_se(points[col].to_numpy())
    dims = int(np.prod(x.shape[1:])) if x.dim() > 1 else 1
    summary["iw_bits_per_dim"] = -summary["iw_mean"] / (dims * math.log(2))
    summary["khat_share_above_0.5"] = float(np.mean(khat > KHAT_GOOD))
    summary["khat_share_above_0.7"] = float(np.mean(khat > KHAT_BAD))
    summary["khat_median"] = float(np.median(khat))
    summary["khat_max"] = float(np.max(khat))
    summary["ess_mean"] = float(np.mean(ess))
    summary["ess_fraction_mean"] = float(np.mean(ess) / num_samples)
    summary.update(active_units=None, latent_dim=None, kl_per_dim=None, kl_mean=None, kl_se=None,
                   reconstruction_mse=None, reconstruction_bce=None)
    if callable(getattr(vae, "encode", None)):
        loc, scale = _encode_all(vae, x)
        kl = standard_normal_kl(loc, scale)
        points["kl"] = kl.sum(-1).double().cpu().numpy()
        activity = loc.var(0) if n > 1 else torch.zeros(loc.shape[1])
        summary["active_units"] = int((activity > 0.01).sum())
        summary["latent_dim"] = int(loc.shape[1])
        summary["kl_per_dim"] = [float(v) for v in kl.mean(0)]
        summary["kl_mean"], summary["kl_se"] = _mean_se(points["kl"].to_numpy())
        if hasattr(vae, "decoder") and hasattr(vae, "likelihood"):
            rec = reconstruction_error(vae, x)
            points["recon_mse"] = rec["mse"].double().cpu().numpy()
            summary["reconstruction_mse"] = float(rec["mse"].mean())
            if "bce" in rec:
                points["recon_bce"] = rec["bce"].double().cpu().numpy()
                summary["reconstruction_bce"] = float(rec["bce"].mean())
    summary["seconds"] = seconds
    summary["points_per_second"] = n / seconds if seconds > 0 else None
    log_w = np.concatenate(kept) if keep_log_weights else None
    return Report(points=points, summary=summary, log_weights=log_w)


def _quiet_psis(lw: torch.Tensor) -> PSISDiagnostics:
    """PSIS for small K without repeating the small-K warning on every block (evaluate warns once)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return psis_diagnostics(lw)


# =============================================================================== plots
def plot_khat(report: Report) -> Figure:
    """PSIS k-hat per data point with the 0.5 and 0.7 thresholds; returns a matplotlib Figure."""
    from matplotlib.figure import Figure

    khat = report.points["khat"].to_numpy()
    idx = np.arange(len(khat))
    fig = Figure(figsize=(7, 3.6), layout="constrained")
    ax = fig.add_subplot()
    finite = np.isfinite(khat)
    colour = np.where(khat > KHAT_BAD, "tab:red", np.where(khat > KHAT_GOOD, "tab:orange", "tab:blue"))
    ax.scatter(idx[finite], khat[finite], s=6, c=colour[finite], alpha=0.7, linewidths=0)
    for level, style, label in ((KHAT_GOOD, ":", "0.5 (good below)"), (KHAT_BAD, "--", "0.7 (unreliable above)")):
        ax.axhline(level, color="grey", linestyle=style, linewidth=1, label=label)
    s = report.summary
    ax.set_xlabel("data point")
    ax.set_ylabel("PSIS k-hat (Pareto shape)")
    ax.set_title(f"Importance-weight tails per point: {report.name}, K={s['num_samples']}\n"
                 f"{100 * s['khat_share_above_0.5']:.1f}% above 0.5, {100 * s['khat_share_above_0.7']:.1f}% above 0.7",
                 fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    return fig


def plot_gap_hist(report: Report) -> Figure:
    """Histogram of the per-point gap IW log p(x) - ELBO (nats); returns a matplotlib Figure."""
    from matplotlib.figure import Figure

    gap = report.points["gap"].to_numpy()
    gap = gap[np.isfinite(gap)]
    fig = Figure(figsize=(6, 3.6), layout="constrained")
    ax = fig.add_subplot()
    ax.hist(gap, bins=min(60, max(10, len(gap) // 10)), color="tab:blue", alpha=0.8)
    s = report.summary
    ax.axvline(s["gap_mean"], color="black", linestyle="--", linewidth=1,
               label=f"mean {s['gap_mean']:.3f} ± {s['gap_se']:.3f} (s.e.)")
    ax.set_xlabel("IW log p(x) - ELBO (nats per data point)")
    ax.set_ylabel("number of points")
    ax.set_title(f"Gap between IW (K={s['num_samples']}) and ELBO: {report.name}", fontsize=10)
    ax.legend(fontsize=8)
    return fig
