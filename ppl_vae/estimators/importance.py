r"""Per-point log importance weights, the importance-weighted log p(x) and the ELBO, for any program.

For one data point ``x`` and ``K`` draws ``z_k ~ q(z | x)`` the log importance weights are

.. math::

    \log w_k = \log p(x, z_k) - \log q(z_k \mid x), \qquad k = 1, \dots, K,

and the two estimators of :math:`\log p(x)` are

.. math::

    \mathrm{ELBO} = \frac{1}{K} \sum_k \log w_k
    \;\le\; \mathrm{IW}_K = \log \frac{1}{K} \sum_k w_k \;\le\; \log p(x) \quad\text{(in expectation)}

(Burda et al., 2015): ``IW_K`` rises with K towards log p(x); per point ``IW_K - ELBO >= 0`` when both
come from the same draws.

**Any program** (:mod:`ppl_vae.programs`): ``(model, guide, x)`` or ``(program, x)``, data a tensor,
a tuple of row-aligned tensors (``model(*batch)``) or a Dataset. The data plate is found by name;
per-point values need every latent inside it (a global latent is refused, with
:func:`~ppl_vae.programs.fix_globals` as the remedy: evaluate conditionally on plug-in values).
Discrete latents the guide samples are sampled here too (q is the proposal; the report says so);
a discrete site only the model has (summed out by the ``enum`` objective) is refused.

**How.** Pyro's ``Importance`` and ``vectorized_importance_weights`` sum over every plate (one weight
per particle for the whole batch), so they are not used: the guide runs under a particle plate left
of every plate of the program, the model is replayed against it, and each site's ``log_prob`` is
summed over every batch dim except particles and data (:func:`~ppl_vae.programs.per_point`).
Chunks of about :data:`ROWS_PER_CALL` rows (particles x points) keep memory bounded and are combined
with a running log-sum-exp; site log-densities go through :mod:`.kernels` (closed forms at
hand-written-torch cost); large jobs compile the chunk (:mod:`.compiled`; same draws, checked).

All values are **nats per data point**.

References:
    Burda, Grosse & Salakhutdinov (2015), Importance Weighted Autoencoders, arXiv:1509.00519.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import pyro
import torch
from tqdm.auto import tqdm

from .._checks import check_int, check_memory
from ..errors import ArgumentTypeError, ProgramError, UserError
from ..params import param_scope
from ..program_chunks import particle_context, run_with_particles
from ..program_errors import from_program, program_failure
from ..program_inspection import inspect_program
from ..programs import Program, ProgramInfo, as_program, evaluating, rows_slice
from .chunks import (
    analytic_chunk,
    check_analytic,
    log_w_chunk,
    sum_sites,
    unvectorised,
    warn_support,
)
from .compiled import ChunkRunner
from .kernels import traceable
from .sharding import Shard, chunk_seed, point_shard

__all__ = [
    "COMPILE_MIN_ROWS",
    "analytic_chunk",
    "log_w_chunk",
    "sum_sites",
    "FAST_MODES",
    "ROWS_PER_CALL",
    "check_count",
    "elbo",
    "iw_log_likelihood",
    "log_weights",
    "prepare",
    "points_shard",
    "resolve",
    "resolve_seed",
    "sandbox",
    "scan",
]

Batch = tuple[torch.Tensor, ...]

#: Rows (particles x points) per model/guide call when the caller does not choose chunk sizes: on a
#: 2-core AVX-512 CPU with an MLP 784-400-50 decoder 4096 rows is about 1.7x faster per row than 2048
#: with 2 threads; 8192 and more cost more (the decoder's temporaries outgrow the L3 cache).
ROWS_PER_CALL = 4096
#: ``fast`` modes: "auto" compiles the chunk for jobs of at least :data:`COMPILE_MIN_ROWS` rows,
#: "compile" always, "eager" never.
FAST_MODES = ("auto", "compile", "eager")
#: Compiling costs seconds for the first graph in a process and saves about a third of the eager time,
#: so it pays from about 2e6 rows (400 points at K=5000).
COMPILE_MIN_ROWS = 2_000_000
#: ``fast="auto"`` compiles only chunk shapes that occur at least this often in one call.
COMPILE_MIN_CHUNKS = 4


# =============================================================================== arguments
def check_count(arg: str, value: Any, minimum: int = 1, allow_none: bool = False) -> None:
    """An integer argument (``num_samples``, ``batch_size``, ...) at least ``minimum`` (None allowed if asked)."""
    if value is None and allow_none:
        return
    check_int(value, arg, minimum=minimum)


def resolve(
    model: Any,
    guide: Any,
    x: Any,
    num_samples: Any,
    data_plate: str | None,
) -> tuple[Program, Any, Any]:
    """``(model, guide, x, K)`` or ``(program, x, K)`` -> ``(Program, data, K)``."""
    if guide is None or not callable(guide) or isinstance(guide, torch.Tensor):
        if guide is None and x is None:
            raise ArgumentTypeError(
                "pass the data: estimator(program, x) or estimator(model, guide, x)"
            )
        data = guide if guide is not None else x
        if guide is not None and x is not None:
            if isinstance(x, int) and not isinstance(x, bool):
                num_samples = x
            else:
                raise ArgumentTypeError(
                    "with a program object, pass (program, x, num_samples); the third "
                    f"argument is {type(x).__name__}"
                )
        return as_program(model, data_plate=data_plate), data, num_samples
    if x is None:
        raise ArgumentTypeError("pass the data: estimator(model, guide, x)")
    return as_program(model, guide, data_plate=data_plate), x, num_samples


def resolve_seed(seed: int | None, generator: torch.Generator | None) -> int:
    """One integer seed: ``seed`` if given, else a draw from ``generator`` (advancing it), else 0."""
    if seed is not None and generator is not None:
        raise UserError("pass either seed or generator, not both")
    if generator is not None:
        return int(torch.randint(0, 2**62, (1,), generator=generator))
    if seed is None:
        return 0
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise UserError(f"seed must be an integer; got {seed!r}")
    return seed


@contextlib.contextmanager
def sandbox(program: Program, seed: int, device: torch.device) -> Iterator[None]:
    """Seed Pyro's (global) RNG without touching the caller's; run in the program's parameter store
    (its trained ``pyro.param`` values, else the caller's store), dropping what the programs register;
    the program's modules in eval mode (BatchNorm, Dropout), each submodule's mode restored after."""
    devices = [device] if device.type == "cuda" else []
    with (
        torch.random.fork_rng(devices=devices),
        param_scope(program),
        torch.no_grad(),
        evaluating(program),
    ):
        torch.manual_seed(seed)
        yield


def check_fast(fast: Any) -> None:
    if fast not in FAST_MODES:
        raise UserError(f"fast must be one of {', '.join(map(repr, FAST_MODES))}; got {fast!r}")


def require_per_point(info: ProgramInfo) -> None:
    """Refuse what per-point estimates cannot do, with a remedy that works."""
    if info.global_latent:
        raise ProgramError(
            f"latent site(s) {sorted(info.global_latent)} lie outside the data plate {info.data_plate!r}: "
            "log p(x) does not split into one value per data point with a global latent. Evaluate "
            "conditionally on plug-in values of the globals: pv.fix_globals(program, x) fixes them at the "
            "guide's means (or pass values={name: tensor}) and hides them from the guide"
        )
    if info.model_only:
        raise ProgramError(
            f"model site(s) {sorted(info.model_only)} are enumerated in the model and have no guide site: "
            "importance sampling needs a proposal for every latent; add them to the guide (a q(y | x))"
        )


def chunk_sizes(
    n: int, k: int, batch_size: int | None, particle_chunk: int | None
) -> tuple[int, int]:
    """Points per call and particles per call, aiming at :data:`ROWS_PER_CALL` rows per call: K in equal
    chunks of at most ROWS_PER_CALL particles, then as many points as fit beside one chunk."""
    check_count("batch_size", batch_size, allow_none=True)
    check_count("particle_chunk", particle_chunk, allow_none=True)
    if particle_chunk is None:
        if batch_size is None:  # equal chunks: K=5000 -> 2 x 2500, not 4096 + 904
            particle_chunk = -(-k // -(-k // ROWS_PER_CALL))
        else:
            particle_chunk = max(1, ROWS_PER_CALL // batch_size)
    particle_chunk = min(particle_chunk, k)
    if batch_size is None:
        batch_size = max(1, ROWS_PER_CALL // particle_chunk)
    return min(batch_size, n), particle_chunk


#: What to do when a program does not vectorise over particles and no known cause matches.
PARTICLE_ADVICE = (
    "Index tensors from the right (z[..., j], z.shape[-1], x.new_zeros(x.shape[0], d)) so that a leading "
    "particle dimension broadcasts"
)


def check_vectorised(
    program: Program, x0: Batch, info: ProgramInfo, vectorize: bool
) -> torch.Tensor:
    """One small chunk of log weights (2 particles, or 1 unvectorised), refusing in one line what fails."""
    k = 2 if vectorize else None
    try:
        log_w = log_w_chunk(program, x0, k, info)
    except Exception as err:
        if not from_program(err):
            raise
        if not vectorize:
            raise program_failure(
                err, "computing log weights", program, x0, lambda: particle_context(info, None)
            ) from err
        raise program_failure(
            err,
            f"the model and guide run on their own but fail when vectorised over particles (a plate at dim "
            f"{-info.rank}, left of all their plates; vectorize_particles=False runs them once per particle "
            "instead, K times slower)",
            program,
            x0,
            lambda: particle_context(info, 2),
            advice=PARTICLE_ADVICE,
        ) from err
    if log_w.shape != (k or 1, len(x0[0])):
        raise ProgramError(
            f"per-point log weights have shape {tuple(log_w.shape)} instead of ({k or 1}, {len(x0[0])}) under "
            "a particle plate: every latent and observed site must sit in the data plate"
        )
    return log_w


def prepare(
    program: Program,
    data: Any,
    num_samples: int,
    seed: int | None,
    generator: torch.Generator | None,
    vectorize: bool = True,
) -> tuple[Batch, int, ProgramInfo]:
    """Validate the data at the boundary, inspect the program, check it vectorises over particles (or runs
    once per particle, ``vectorize=False``)."""
    rows = program.rows(data, "x")
    check_count("num_samples", num_samples)
    if not isinstance(vectorize, bool):
        raise ArgumentTypeError(f"vectorize_particles must be True or False; got {vectorize!r}")
    seed = resolve_seed(seed, generator)
    with sandbox(program, seed, rows[0].device):
        info = inspect_program(program, rows)
        require_per_point(info)
        check_vectorised(
            program, rows_slice(rows, slice(0, min(len(rows[0]), 16))), info, vectorize
        )
    return rows, seed, info


def _compile_shapes(
    n: int, k: int, n_b: int, k_c: int, fast: str, total: int | None = None
) -> set[tuple[int, int]]:
    """The ``(points, particles)`` chunk shapes of a scan of ``n`` points worth compiling under ``fast``
    (``total``: the points of the whole job, all ranks, for the size threshold; default ``n``)."""
    if fast == "eager" or (fast == "auto" and (total or n) * k < COMPILE_MIN_ROWS):
        return set()
    counts: dict[tuple[int, int], int] = {}
    for rows in (n_b,) * (n // n_b) + ((n % n_b,) if n % n_b else ()):
        for parts in (k_c,) * (k // k_c) + ((k % k_c,) if k % k_c else ()):
            counts[(rows, parts)] = counts.get((rows, parts), 0) + 1
    least = 1 if fast == "compile" else COMPILE_MIN_CHUNKS
    return {shape for shape, count in counts.items() if count >= least}


def points_shard(
    rows: Batch, num_samples: int, batch_size: int | None, particle_chunk: int | None
) -> Shard:
    """This process's chunks of the points of a :func:`scan` (all of them outside a process group)."""
    n = len(rows[0])
    n_b, _ = chunk_sizes(n, num_samples, batch_size, particle_chunk)
    return point_shard(n, n_b, rows[0].device)


def scan(
    program: Program,
    rows: Batch,
    info: ProgramInfo,
    num_samples: int,
    seed: int,
    batch_size: int | None,
    particle_chunk: int | None,
    keep: bool,
    chunk_fn: Callable = log_w_chunk,
    fast: str = "auto",
    progress: bool = False,
    vectorize: bool = True,
    shard: Shard | None = None,
) -> Iterator[tuple[slice, torch.Tensor | None, torch.Tensor, torch.Tensor]]:
    """Walk the rows in chunks of points and particles, each chunk of points on its own seeded stream
    (:func:`~.sharding.chunk_seed`), only ``shard``'s chunks when given (rows are global indices).

    Yields ``(rows, log_w, lse, total)`` per chunk of points (float64): ``log_w: (n_b, K)`` if ``keep``,
    ``lse: (n_b,)`` the log-sum-exp over all K particles, ``total: (n_b,)`` their sum. ``vectorize=False``
    runs the programs once per particle (no particle plate; never compiled). An exception from the programs
    is one :class:`~ppl_vae.errors.ProgramError` line naming the rows and the site; observed values outside
    their supports are counted and warned about once per site at the end.
    """
    n = len(rows[0])
    n_b, k_c = chunk_sizes(n, num_samples, batch_size, particle_chunk)
    shard = shard or Shard(n, n_b)
    if shard.chunk != n_b or shard.n != n:
        raise ValueError(
            f"the shard cuts {shard.n} points in chunks of {shard.chunk}, not {n} in {n_b}"
        )
    x = rows[0]
    check_memory(
        4.0 * n_b * k_c * max(1, math.prod(x.shape[1:])) * 3,
        f"importance sampling with {k_c} particles x {n_b} points per call",
        "pass a smaller particle_chunk or batch_size",
    )
    if keep:
        check_memory(
            8.0 * n * num_samples,
            f"keeping {n} x {num_samples} log weights",
            "use iw_log_likelihood (no (N, K) array) or fewer samples",
        )
    scratch: dict = {}  # buffers reused across chunks, the last chunk's traces, support counts
    if not vectorize:
        chunk_fn, fast = unvectorised(chunk_fn), "eager"

    def traced(batch: Batch, k: int) -> torch.Tensor:
        with traceable():
            return chunk_fn(program, batch, k, info, None)

    run = ChunkRunner(
        lambda batch, k: chunk_fn(program, batch, k, info, scratch),
        traced,
        _compile_shapes(shard.hi - shard.lo, num_samples, n_b, k_c, fast, n),
        explicit=fast == "compile",
    )
    bar = tqdm(
        total=shard.hi - shard.lo,
        desc=f"log weights, K={num_samples}",
        unit="pt",
        disable=not progress,
        leave=False,
    )
    with sandbox(program, seed, x.device), pyro.validation_enabled(False), bar:
        for start in shard.starts:
            torch.manual_seed(chunk_seed(seed, start))
            batch = rows_slice(rows, slice(start, start + n_b))
            m = len(batch[0])
            lse = torch.full((m,), -math.inf, dtype=torch.float64, device=x.device)
            total = torch.zeros(m, dtype=torch.float64, device=x.device)
            kept = []
            for k_start in range(0, num_samples, k_c):
                k = min(k_c, num_samples - k_start)
                lw = _run_chunk(run, batch, k, program, info, (start, start + m), vectorize)
                if torch.isnan(lw).any():
                    bad = torch.isnan(lw).any(0).nonzero().flatten() + start
                    raise UserError(
                        f"log weights are NaN for {len(bad)} point(s), first at row {int(bad[0])}: "
                        "check the data (NaN/inf) and that the model's parameters are finite"
                    )
                lse = torch.logaddexp(lse, lw.logsumexp(0))
                total = total + lw.sum(0)
                if keep:
                    kept.append(lw.T)
            bar.update(m)
            yield slice(start, start + m), (torch.cat(kept, 1) if keep else None), lse, total
    warn_support(scratch.get("support", {}))


def _run_chunk(
    run: Callable,
    batch: Batch,
    k: int,
    program: Program,
    info: ProgramInfo,
    span: tuple[int, int],
    vectorize: bool,
) -> torch.Tensor:
    """One chunk's log weights (float64); an exception from the programs named by rows and site."""
    try:
        return run(batch, k).double()
    except Exception as err:
        if not from_program(err):
            raise
        raise program_failure(
            err,
            f"importance sampling, rows {span[0]}-{span[1] - 1}",
            program,
            batch,
            lambda: particle_context(info, min(k, 2) if vectorize else None),
        ) from err


# =============================================================================== estimators
def log_weights(
    model: Any,
    guide: Any = None,
    x: Any = None,
    num_samples: int = 1000,
    *,
    batch_size: int | None = None,
    particle_chunk: int | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    fast: str = "auto",
    progress: bool = False,
    data_plate: str | None = None,
    vectorize_particles: bool = True,
) -> torch.Tensor:
    """Log importance weights ``log p(x_n, z_nk) - log q(z_nk | x_n)``, ``z_nk ~ q(. | x_n)``.

    Args:
        model, guide, x: Pyro programs and data (``(N, ...)`` tensor, tuple of row-aligned tensors, or a
            Dataset), or ``(program, x)`` with an object that has ``.model``/``.guide``.
        num_samples: K draws per point.
        batch_size: points per call (default: about :data:`ROWS_PER_CALL` / particle_chunk).
        particle_chunk: particles per call (default: K cut into equal chunks of at most ROWS_PER_CALL).
        seed, generator: the random stream (an int seed, None: 0, or a ``torch.Generator`` to draw one
            from); same seed and chunk sizes, same numbers on CPU (each chunk of points draws from its own
            seed, so under ``torchrun`` the ranks share the chunks and gather the same result:
            :mod:`~ppl_vae.estimators.sharding`). The caller's RNG is left as it was.
        fast: ``"auto"`` (compile the chunk for jobs of at least :data:`COMPILE_MIN_ROWS` rows),
            ``"compile"`` or ``"eager"``; compiled chunks draw the same numbers (checked per call).
        progress: a progress bar over the points.
        data_plate: the name of the data plate (default ``"data"``, else the one plate that encloses every
            observed site).
        vectorize_particles: draw the K particles in one vectorised run per chunk (a particle plate left of
            the program's plates); ``False`` runs the programs once per particle, for programs that do not
            broadcast over a leading dimension (boolean-mask indexing, positive ``torch.cat`` dims): K times
            slower, the same numbers in distribution.

    Every site's ``poutine.scale`` (the user's, a subsampling plate's) is removed: values are unscaled
    nats per point (:class:`~ppl_vae.programs.PerPointScale`); the program's modules run in eval mode.

    Returns:
        ``(N, K)`` tensor of log weights (nats), samples on the last axis (as ArviZ's ``psislw`` wants).

    Examples:
        >>> import torch
        >>> import ppl_vae as pv
        >>> _ = torch.manual_seed(0)
        >>> x = torch.bernoulli(torch.full((20, 6), 0.5), generator=torch.Generator().manual_seed(0))
        >>> vae = pv.VAE(input_dim=6, latent_dim=2, hidden_dims=(8,))
        >>> log_w = pv.log_weights(vae, x, num_samples=7, seed=0)  # log p(x, z_k) - log q(z_k | x)
        >>> log_w.shape
        torch.Size([20, 7])
    """
    check_fast(fast)
    program, data, num_samples = resolve(model, guide, x, num_samples, data_plate)
    rows, seed, info = prepare(program, data, num_samples, seed, generator, vectorize_particles)
    shard = points_shard(rows, num_samples, batch_size, particle_chunk)
    with shard.computing():
        parts = [
            lw
            for _, lw, _, _ in scan(
                program,
                rows,
                info,
                num_samples,
                seed,
                batch_size,
                particle_chunk,
                True,
                fast=fast,
                progress=progress,
                vectorize=vectorize_particles,
                shard=shard,
            )
        ]
    local = (
        torch.cat(parts, 0) if parts else rows[0].new_empty((0, num_samples), dtype=torch.float64)
    )
    return shard.gather(local).to(rows[0].dtype)


def iw_log_likelihood(
    model: Any,
    guide: Any = None,
    x: Any = None,
    num_samples: int = 1000,
    *,
    batch_size: int | None = None,
    particle_chunk: int | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    fast: str = "auto",
    progress: bool = False,
    data_plate: str | None = None,
    vectorize_particles: bool = True,
) -> torch.Tensor:
    """Importance-weighted estimate of ``log p(x_n)`` per point (Burda et al., 2015), nats: ``(N,)``.

    ``IW_K(x_n) = log (1/K) sum_k p(x_n, z_k) / q(z_k | x_n)``: a lower bound on ``log p(x_n)`` in
    expectation that rises with K; memory bounded by the chunk sizes. Arguments as :func:`log_weights`.

    Examples:
        >>> import torch
        >>> import ppl_vae as pv
        >>> _ = torch.manual_seed(0)
        >>> lg = pv.LinearGaussianVAE(input_dim=3, latent_dim=1)
        >>> x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
        >>> iw = pv.iw_log_likelihood(lg, x, num_samples=5000, seed=0)  # (N,) nats
        >>> bool(((iw - lg.exact_log_likelihood(x)).abs() < 0.05).all())  # IW converges to log p(x)
        True
    """
    check_fast(fast)
    program, data, num_samples = resolve(model, guide, x, num_samples, data_plate)
    rows, seed, info = prepare(program, data, num_samples, seed, generator, vectorize_particles)
    shard = points_shard(rows, num_samples, batch_size, particle_chunk)
    out = torch.empty(shard.hi - shard.lo, dtype=rows[0].dtype, device=rows[0].device)
    with shard.computing():
        for part, _, lse, _ in scan(
            program,
            rows,
            info,
            num_samples,
            seed,
            batch_size,
            particle_chunk,
            False,
            fast=fast,
            progress=progress,
            vectorize=vectorize_particles,
            shard=shard,
        ):
            out[part.start - shard.lo : part.stop - shard.lo] = lse - math.log(num_samples)
    return shard.gather(out)


def elbo(
    model: Any,
    guide: Any = None,
    x: Any = None,
    num_samples: int = 1,
    *,
    analytic_kl: bool = False,
    batch_size: int | None = None,
    particle_chunk: int | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    fast: str = "auto",
    progress: bool = False,
    data_plate: str | None = None,
    vectorize_particles: bool = True,
) -> torch.Tensor:
    """The evidence lower bound per point, averaged over ``num_samples`` draws of ``z``, nats: ``(N,)``.

    ``analytic_kl=False``: ``mean_k [log p(x_n, z_k) - log q(z_k | x_n)]`` (as ``Trace_ELBO``).
    ``analytic_kl=True``: ``mean_k log p(x_n | z_k) - sum_sites KL(q(z | x_n) || p(z))``, the KL in
    closed form (as ``TraceMeanField_ELBO``); needs reparameterised guide sites and a registered KL, and a
    guide that samples the latents in the model's order (else the KL is sampled, with a
    :class:`~ppl_vae.programs.ProgramWarning`: the closed form would be biased). Other arguments as
    :func:`log_weights`.

    Examples:
        >>> import torch
        >>> import ppl_vae as pv
        >>> _ = torch.manual_seed(0)
        >>> x = torch.bernoulli(torch.full((20, 6), 0.5), generator=torch.Generator().manual_seed(0))
        >>> vae = pv.VAE(input_dim=6, latent_dim=2, hidden_dims=(8,))
        >>> pv.elbo(vae, x, num_samples=10, seed=0).shape  # one ELBO per data point, in nats
        torch.Size([20])
        >>> bool((pv.elbo(vae.model, vae.guide, x, analytic_kl=True, seed=0) < 0).all())
        True
    """
    check_fast(fast)
    program, data, num_samples = resolve(model, guide, x, num_samples, data_plate)
    rows, seed, info = prepare(program, data, num_samples, seed, generator, vectorize_particles)
    chunk_fn = log_w_chunk
    if analytic_kl:
        with sandbox(program, seed, rows[0].device):
            model_tr, guide_tr = run_with_particles(
                program, info, rows_slice(rows, slice(0, 16)), 1 if vectorize_particles else None
            )
        if check_analytic(info, guide_tr, model_tr):
            chunk_fn = analytic_chunk
    shard = points_shard(rows, num_samples, batch_size, particle_chunk)
    out = torch.empty(shard.hi - shard.lo, dtype=rows[0].dtype, device=rows[0].device)
    with shard.computing():
        for part, _, _, total in scan(
            program,
            rows,
            info,
            num_samples,
            seed,
            batch_size,
            particle_chunk,
            False,
            chunk_fn,
            fast,
            progress,
            vectorize_particles,
            shard,
        ):
            out[part.start - shard.lo : part.stop - shard.lo] = total / num_samples
    return shard.gather(out)
