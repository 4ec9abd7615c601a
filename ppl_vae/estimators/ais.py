r"""Annealed importance sampling (AIS) of log p(x) per data point, and the BDMC sandwich, for any program.

For one data point ``x``, AIS (Neal 2001) moves ``C`` chains from ``f_0`` (the guide ``q(z | x)``, or the
prior ``p(z)``) to the posterior along the geometric path

.. math::

    f_t(z) = f_0(z)^{1 - \beta_t}\, p(x, z)^{\beta_t}, \qquad 0 = \beta_0 < \beta_1 < \dots < \beta_T = 1,

with a sigmoid schedule of :math:`\beta` (Grosse, Ghahramani & Adams 2015; Grosse et al. 2016) and HMC
transitions (Wu et al. 2017). Chain ``c`` carries the log weight

.. math::

    \log w_c = \sum_{t=1}^{T} (\beta_t - \beta_{t-1}) \,[\log p(x, z^c_{t-1}) - \log f_0(z^c_{t-1})],
    \qquad z^c_t \sim \mathcal{T}_t(\cdot \mid z^c_{t-1}) \text{ leaving } f_t \text{ invariant},

so that :math:`\mathbb{E}[w_c] = p(x)` and ``log mean_c w_c`` is a stochastic lower bound on ``log p(x)``
(Jensen). With ``T = 1`` this is exactly importance sampling with ``C`` draws from ``f_0`` (``IW_C``).

**Bidirectional Monte Carlo** (:func:`bdmc`; Grosse, Ghahramani & Adams 2015): on data simulated from
the model, ``(x, z)`` with ``z`` an exact posterior draw, reverse AIS (the same path walked from
``beta = 1`` to ``0``, started at ``z``) estimates ``1 / p(x)`` without bias, so ``-log mean_c w^{rev}_c``
is a stochastic *upper* bound; the gap between the two bounds bounds the error of either.

**Transitions** (:mod:`.hmc`): HMC with ``L`` leapfrog steps and an identity mass matrix in unconstrained
space. The step size is per point, shared by its chains: started by doubling/halving at ``beta_0``
(proposals thrown away) and adapted after every transition by
``eps *= exp(ADAPT_RATE * (accept - target_accept))``, ``accept`` the acceptance probability averaged
over ``tune_chains`` extra chains per point that run beside the ``C`` scored ones and whose weights are
dropped. Adapting on the scored chains themselves makes each transition depend on the chain's own past,
which breaks the invariance AIS needs: measured on the linear-Gaussian model, the "lower bound" came out
*above* the exact log p(x) by 0.09 nats with C = 1 and 0.03 with C = 4 at T = 1000 (no bias with tuning
chains). Reverse AIS (:func:`bdmc`) reuses the forward run's step sizes in reverse order, so its kernels do
not depend on the exact posterior draw it starts from. Nothing uses the value of the estimate.

All values are **nats per data point**.

References:
    Neal (2001), Annealed importance sampling, Statistics and Computing 11.
    Grosse, Ghahramani & Adams (2015), Sandwiching the marginal likelihood using bidirectional Monte
    Carlo, arXiv:1511.02543.
    Wu, Burda, Salakhutdinov & Grosse (2017), On the quantitative analysis of decoder-based generative
    models, ICLR.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyro
import pyro.poutine as poutine
import torch
from tqdm.auto import tqdm

from .._checks import check_memory
from ..errors import ArgumentTypeError, ProgramError, UserError
from ..program_errors import translated
from ..program_inspection import inspect_program
from ..programs import PerPointScale, Program, ProgramInfo, rows_slice
from .hmc import find_step_size, hmc_step
from .importance import ROWS_PER_CALL, check_count, prepare, resolve, resolve_seed, sandbox
from .path_density import PathDensity, check_fast
from .sharding import Shard, chunk_seed, point_shard

__all__ = [
    "ADAPT_RATE",
    "INITS",
    "SCHEDULES",
    "AISResult",
    "AISSettings",
    "ais_log_likelihood",
    "ais_result",
    "check_settings",
    "run_ais",
    "schedule_betas",
    "start",
]

INITS = ("guide", "prior")
SCHEDULES = ("sigmoid", "linear")
#: Rate of the step-size adaptation: ``log eps += ADAPT_RATE * (acceptance - target)`` after every transition.
ADAPT_RATE = 0.5
#: Sharpness of the sigmoid schedule (Grosse et al. 2016 use 4).
SIGMOID_DELTA = 4.0
#: Starting guess for the per-point step size, before the doubling/halving search.
INITIAL_STEP = 0.1


def schedule_betas(
    num_steps: int, schedule: Any = "sigmoid", dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """``beta_0 = 0 < ... < beta_T = 1``: ``(T + 1,)``.

    ``"sigmoid"``: ``s_t = sigmoid(delta (2 t / T - 1))`` rescaled to [0, 1], delta = 4 (Grosse et al. 2016;
    many small steps near both ends, where the log-density changes fastest); ``"linear"``: ``t / T``; or a
    1-D tensor of ``T + 1`` increasing values from 0 to 1.
    """
    check_count("num_steps", num_steps)
    if isinstance(schedule, torch.Tensor):
        b = schedule.detach().to(dtype=dtype, device="cpu").flatten()
        if (
            len(b) != num_steps + 1
            or float(b[0]) != 0.0
            or float(b[-1]) != 1.0
            or not bool((b.diff() > 0).all())
        ):
            raise UserError(
                f"a schedule tensor must hold num_steps + 1 = {num_steps + 1} increasing values from "
                f"0 to 1; got {len(b)} values from {float(b[0]):g} to {float(b[-1]):g}"
            )
        return b
    if schedule == "linear":
        return torch.linspace(0.0, 1.0, num_steps + 1, dtype=dtype)
    if schedule == "sigmoid":
        s = torch.sigmoid(SIGMOID_DELTA * torch.linspace(-1.0, 1.0, num_steps + 1, dtype=dtype))
        b = (s - s[0]) / (s[-1] - s[0])
        b[0], b[-1] = 0.0, 1.0
        return b
    raise UserError(
        f"schedule must be one of {', '.join(map(repr, SCHEDULES))} or a tensor of betas; got {schedule!r}"
    )


@dataclass
class AISResult:
    """What :func:`ais_log_likelihood` found, per data point (``(N,)`` tensors unless said otherwise).

    Attributes:
        log_likelihood: ``log mean_c w_c`` (nats); for a reverse run (:func:`bdmc`) ``-log mean_c w_c``.
        se: its standard error over chains (delta method, ``sqrt((C / ess - 1) / (C - 1))``; NaN for C = 1).
        acceptance: HMC acceptance probability, mean over transitions and chains (NaN when T = 1).
        ess: effective number of chains, ``(sum w)^2 / sum w^2`` (1 to C).
        step_size: the last step size of each point (NaN when T = 1: no transition).
        log_weights: ``(N, C)`` log AIS weights.
        settings: the arguments used (JSON-able), ``seconds``: wall time.
    """

    log_likelihood: torch.Tensor
    se: torch.Tensor
    acceptance: torch.Tensor
    ess: torch.Tensor
    step_size: torch.Tensor
    log_weights: torch.Tensor = field(repr=False)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def frame(self) -> pd.DataFrame:
        """Per-point table: ``log_likelihood, se, acceptance, ess, step_size``."""
        return pd.DataFrame(
            {
                k: getattr(self, k).double().cpu().numpy()
                for k in ("log_likelihood", "se", "acceptance", "ess", "step_size")
            }
        )


@dataclass(frozen=True)
class AISSettings:
    num_steps: int
    num_chains: int
    leapfrog_steps: int
    init: str
    betas: torch.Tensor
    target_accept: float
    batch_size: int
    tune_chains: int
    fast: str

    def public(self, seed: int, schedule: Any) -> dict[str, Any]:
        return {
            "num_steps": self.num_steps,
            "num_chains": self.num_chains,
            "leapfrog_steps": self.leapfrog_steps,
            "init": self.init,
            "schedule": schedule if isinstance(schedule, str) else "custom",
            "target_accept": self.target_accept,
            "batch_size": self.batch_size,
            "tune_chains": self.tune_chains,
            "fast": self.fast,
            "seed": seed,
        }


def check_settings(num_steps: Any, num_chains: Any, leapfrog_steps: Any, init: Any) -> None:
    """Refuse bad AIS settings (:class:`~ppl_vae.errors.UserError`) before any work."""
    check_count("num_steps", num_steps)
    check_count("num_chains", num_chains)
    check_count("leapfrog_steps", leapfrog_steps)
    if init not in INITS:
        raise UserError(f"init must be one of {', '.join(map(repr, INITS))}; got {init!r}")


def _prior_guide(model: Any) -> Any:
    def prior_guide(*batch: torch.Tensor) -> None:  # the model's latents, sampled from the prior
        poutine.block(model, hide_fn=lambda msg: msg.get("is_observed", False))(*batch)

    return prior_guide


def setup_ais(
    model: Any,
    guide: Any,
    x: Any,
    init: str,
    data_plate: str | None,
    seed: Any,
    generator: Any,
) -> tuple[Program, tuple[torch.Tensor, ...], int, ProgramInfo]:
    if init not in INITS:
        raise UserError(f"init must be one of {', '.join(map(repr, INITS))}; got {init!r}")
    if (
        init == "prior"
        and x is None
        and guide is not None
        and callable(model)
        and not hasattr(model, "model")
        and not isinstance(model, Program)
    ):  # (model, x): a model alone needs no guide to start from the prior
        model, guide, x = model, _prior_guide(model), guide
    program, data, extra = resolve(model, guide, x, None, data_plate)
    if extra is not None:
        raise ArgumentTypeError(
            "pass the settings by name: ais_log_likelihood(program, x, num_steps=...)"
        )
    rows = program.rows(data, "x")
    seed = resolve_seed(seed, generator)
    with sandbox(program, seed, rows[0].device):
        info = inspect_program(program, rows)
        if not info.latent:
            raise ProgramError(
                "the model has no latent sites: its log p(x) is its own density, exact with one draw: "
                "pv.iw_log_likelihood(program, x, 1) gives it (nothing to anneal)"
            )
        first = rows_slice(rows, slice(0, 16))
        with translated("AIS, reading the latent sites", program, first):
            PathDensity(program, info, first, 1, init)  # discrete latents: refused by name
    if init == "guide" and info.guide_aux:
        raise ProgramError(
            f"AIS from the guide needs q(z | x) as a density of the model's latents alone; the guide "
            f"has auxiliary site(s) {sorted(info.guide_aux)}: use init='prior'"
        )
    rows, seed, info = prepare(program, rows, 2, seed, None)
    return program, rows, seed, info


def validate_ais(
    num_steps: Any,
    num_chains: Any,
    leapfrog_steps: Any,
    init: Any,
    schedule: Any,
    target_accept: Any,
    batch_size: Any,
    tune_chains: Any,
    fast: Any,
) -> torch.Tensor:
    """Every plain argument checked before any work; returns the schedule's betas."""
    check_settings(num_steps, num_chains, leapfrog_steps, init)
    check_fast(fast)
    check_count("batch_size", batch_size, allow_none=True)
    check_count("tune_chains", tune_chains)
    if (
        isinstance(target_accept, bool)
        or not isinstance(target_accept, (int, float))
        or not 0 < target_accept < 1
    ):
        raise UserError(f"target_accept must be a number in (0, 1); got {target_accept!r}")
    return schedule_betas(num_steps, schedule)


def ais_settings(
    rows: tuple[torch.Tensor, ...],
    program: Program,
    info: ProgramInfo,
    num_steps: int,
    num_chains: int,
    leapfrog_steps: int,
    init: str,
    betas: torch.Tensor,
    target_accept: float,
    batch_size: int | None,
    tune_chains: int,
    fast: str,
) -> AISSettings:
    """The chunk size, and the memory it needs checked against what the machine has."""
    n = len(rows[0])
    n_b = min(n, batch_size or max(1, ROWS_PER_CALL // (num_chains + tune_chains)))
    x = rows[0]
    with sandbox(program, 0, x.device):  # the size of one point's latents, for the memory check
        with PerPointScale():
            trace = poutine.trace(program.model).get_trace(*rows_slice(rows, slice(0, 1)))
    latent = sum(
        s["value"].numel()
        for s in trace.nodes.values()
        if s["type"] == "sample" and not s["is_observed"]
    )
    per_row = 4.0 * (8 * max(1, math.prod(x.shape[1:])) + 16 * latent)
    check_memory(
        per_row * n_b * (num_chains + tune_chains),
        f"AIS with {num_chains} + {tune_chains} chains x {n_b} points per call",
        "pass a smaller batch_size or fewer num_chains",
    )
    check_memory(
        8.0 * n * num_chains, f"keeping {n} x {num_chains} log AIS weights", "use fewer points"
    )
    return AISSettings(
        num_steps,
        num_chains,
        leapfrog_steps,
        init,
        betas,
        float(target_accept),
        n_b,
        tune_chains,
        fast,
    )


def start(
    model: Any,
    guide: Any,
    x: Any,
    num_steps: Any,
    num_chains: Any,
    leapfrog_steps: Any,
    init: Any,
    schedule: Any,
    target_accept: Any,
    batch_size: Any,
    tune_chains: Any,
    fast: Any,
    data_plate: str | None,
    seed: Any,
    generator: Any,
    progress: bool,
    what: str,
    passes: int,
) -> tuple[Program, tuple[torch.Tensor, ...], int, ProgramInfo, AISSettings, Any]:
    """Everything before the annealing (shared with :func:`~.bdmc.bdmc`): the arguments checked, the program
    inspected, the chunk size and its memory checked, and a progress bar over ``passes`` walks per chunk."""
    betas = validate_ais(
        num_steps,
        num_chains,
        leapfrog_steps,
        init,
        schedule,
        target_accept,
        batch_size,
        tune_chains,
        fast,
    )
    program, rows, seed, info = setup_ais(model, guide, x, init, data_plate, seed, generator)
    cfg = ais_settings(
        rows,
        program,
        info,
        num_steps,
        num_chains,
        leapfrog_steps,
        init,
        betas,
        target_accept,
        batch_size,
        tune_chains,
        fast,
    )
    n = len(rows[0])
    bar = tqdm(
        total=passes * -(-n // cfg.batch_size) * num_steps,
        unit="step",
        disable=not progress,
        desc=f"{what} T={num_steps}, C={num_chains}, {n} points",
        leave=False,
    )
    return program, rows, seed, info, cfg, bar


def _anneal(
    density: PathDensity,
    u: dict,
    betas: torch.Tensor,
    cfg: AISSettings,
    bar: Any,
    eps_schedule: torch.Tensor | None = None,
    record: bool = False,
) -> tuple[Any, ...]:
    """One chunk along ``betas`` from state ``u`` (distributed as ``f_{betas[0]}``).

    Without ``eps_schedule`` the last ``cfg.tune_chains`` chains only tune the step size (their weights are
    dropped; the step sizes the other chains use never depend on those chains' own states, so their weights stay
    unbiased); with it, ``eps_schedule[t - 1]`` is the step size of transition ``t`` and every chain counts.
    Returns ``(log_w (C, n) float64, mean acceptance (n,), last step size (n,), step sizes used (T - 1, n)``
    if ``record`` else None``); the last step size is NaN when there is no transition (T = 1).
    """
    c = cfg.num_chains
    ev = density.evaluate(u)
    bad = ~(torch.isfinite(ev.base) & torch.isfinite(ev.joint)).all(0)
    if bool(bad.any()):
        raise UserError(
            f"log-densities are not finite at the start of AIS for {int(bad.sum())} point(s) of a chunk: "
            "check the data and that the model's parameters are finite"
        )
    steps = len(betas) - 1
    used = ev.base.new_empty((max(0, steps - 1), density.n)) if record else None
    eps = ev.base.new_full((density.n,), math.nan)
    if eps_schedule is None and steps > 1:
        eps = find_step_size(
            density,
            u,
            ev,
            float(betas[0]),
            ev.base.new_full((density.n,), INITIAL_STEP),
            chains=slice(c, None),
        )
    log_w = torch.zeros((c, density.n), dtype=torch.float64, device=ev.base.device)
    acc = torch.zeros(density.n, dtype=ev.base.dtype, device=ev.base.device)
    for t in range(1, steps + 1):
        log_w += float(betas[t] - betas[t - 1]) * (ev.joint[:c] - ev.base[:c]).double()
        if t < steps:  # the last transition would not change the weights
            if eps_schedule is not None:
                eps = eps_schedule[t - 1]
            if used is not None:
                used[t - 1] = eps
            u, ev, a = hmc_step(density, u, ev, float(betas[t]), eps, cfg.leapfrog_steps)
            acc += a[:c].mean(0)
            if eps_schedule is None:
                eps = eps * torch.exp(ADAPT_RATE * (a[c:].mean(0) - cfg.target_accept))
        bar.update(1)
    return log_w, (acc / (steps - 1) if steps > 1 else acc.fill_(math.nan)), eps, used


def run_ais(
    program: Program,
    rows: tuple[torch.Tensor, ...],
    info: ProgramInfo,
    cfg: AISSettings,
    bar: Any,
    exact: dict[str, torch.Tensor] | None = None,
    seed: int | None = None,
) -> tuple[tuple[torch.Tensor, ...], tuple | None]:
    """AIS over every chunk of points: ``((log_w (N, C), acceptance (N,), last step size (N,)), reverse)``.

    With ``seed``, each chunk of points draws from :func:`~.sharding.chunk_seed` ``(seed, first row)`` and, in a
    process group, each rank anneals its own chunks and the results are gathered (:mod:`.sharding`); without,
    every chunk runs here, in turn on the current random stream. With ``exact`` (latent values with a chain dim of
    size 1, exact posterior draws for ``rows``), each chunk is also annealed in reverse from them, with the forward
    run's step sizes in reverse order (``reverse`` is then a tuple like the first, else None)."""
    n, c = len(rows[0]), cfg.num_chains
    like = rows[0]
    shard = (
        point_shard(n, cfg.batch_size, like.device)
        if seed is not None
        else Shard(n, cfg.batch_size)
    )

    def empty() -> list[torch.Tensor]:
        return [
            torch.empty(n, c, dtype=torch.float64, device=like.device),
            torch.empty(n, dtype=like.dtype, device=like.device),
            torch.empty(n, dtype=like.dtype, device=like.device),
        ]

    fwd, rev = empty(), empty() if exact is not None else None
    with pyro.validation_enabled(False):
        with shard.computing():
            for lo in shard.starts:
                if seed is not None:
                    torch.manual_seed(chunk_seed(seed, lo))
                batch = rows_slice(rows, slice(lo, lo + cfg.batch_size))
                m = len(batch[0])
                with translated(f"AIS, rows {lo}-{lo + m - 1}", program, batch):
                    fwd_part, rev_part = _anneal_chunk(program, info, batch, cfg, bar, exact, lo, m)
                fwd[0][lo : lo + m], fwd[1][lo : lo + m], fwd[2][lo : lo + m] = fwd_part
                if rev is not None:
                    rev[0][lo : lo + m], rev[1][lo : lo + m], rev[2][lo : lo + m] = rev_part
    if shard.active:
        fwd = [shard.gather(a[shard.lo : shard.hi]) for a in fwd]
        rev = None if rev is None else [shard.gather(a[shard.lo : shard.hi]) for a in rev]
    return tuple(fwd), (tuple(rev) if rev is not None else None)


def _anneal_chunk(
    program: Program,
    info: ProgramInfo,
    batch: tuple[torch.Tensor, ...],
    cfg: AISSettings,
    bar: Any,
    exact: dict[str, torch.Tensor] | None,
    lo: int,
    m: int,
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...] | None]:
    """One chunk of points forward (and, with ``exact``, in reverse): ``((log_w.T, acc, last), reverse)``."""
    tune = cfg.tune_chains if cfg.num_steps > 1 else 0
    c = cfg.num_chains
    density = PathDensity(program, info, batch, c + tune, cfg.init, cfg.fast)
    log_w, acc, last, used = _anneal(
        density,
        density.to_unconstrained(density.sample_initial()),
        cfg.betas,
        cfg,
        bar,
        record=exact is not None,
    )
    if exact is None:
        return (log_w.T, acc, last), None
    density = PathDensity(program, info, batch, c, cfg.init, cfg.fast)
    z = {}
    for k in density.latent:  # this chunk's latents (sites may depend on the batch)
        v = exact[k].narrow(info.data_index, lo, m)
        z[k] = v.expand((c,) + tuple(v.shape[1:])).contiguous()
    rev_w, rev_acc, _, _ = _anneal(
        density,
        density.to_unconstrained(z),
        cfg.betas.flip(0),
        cfg,
        bar,
        eps_schedule=used.flip(0),
    )
    return (log_w.T, acc, last), (rev_w.T, rev_acc, last)


def ais_result(
    log_w: torch.Tensor,
    acc: torch.Tensor,
    eps: torch.Tensor,
    sign: float,
    settings: dict,
    seconds: float,
    dtype: torch.dtype,
) -> AISResult:
    c = log_w.shape[1]
    lse = log_w.logsumexp(1)
    ess = (2 * lse - (2 * log_w).logsumexp(1)).exp()
    se = ((c / ess - 1).clamp(min=0) / (c - 1)).sqrt() if c > 1 else torch.full_like(ess, math.nan)
    ll = sign * (lse - math.log(c))
    return AISResult(ll.to(dtype), se.to(dtype), acc, ess.to(dtype), eps, log_w, settings, seconds)


def ais_log_likelihood(
    model: Any,
    guide: Any = None,
    x: Any = None,
    *,
    num_steps: int = 1000,
    num_chains: int = 16,
    leapfrog_steps: int = 10,
    init: str = "guide",
    seed: int | None = 0,
    generator: torch.Generator | None = None,
    schedule: Any = "sigmoid",
    target_accept: float = 0.65,
    tune_chains: int = 2,
    batch_size: int | None = None,
    fast: str = "auto",
    progress: bool = False,
    return_diagnostics: bool = False,
    data_plate: str | None = None,
) -> Any:
    """Annealed importance sampling estimate of ``log p(x_n)`` per point, nats: ``(N,)``.

    Args:
        model, guide, x: ``(model, guide, x)`` or ``(program, x)`` (an object with ``.model``/``.guide``), data a
            tensor ``(N, ...)``, a tuple of row-aligned tensors or a Dataset (:mod:`ppl_vae.programs`). With
            ``init="prior"`` a model alone works: ``ais_log_likelihood(model, x, init="prior")``.
        num_steps: T, the number of intermediate distributions (``T = 1``: plain importance sampling, ``IW_C``).
        num_chains: C independent chains per point; the estimate is ``log mean_c w_c``.
        leapfrog_steps: L leapfrog steps per HMC transition.
        init: ``"guide"`` (start from ``q(z | x)``: short paths suffice when q is good) or ``"prior"``.
        seed, generator: the random stream (as :func:`~ppl_vae.iw_log_likelihood`); the caller's RNG is untouched.
            Numbers depend on the seed and ``batch_size`` (each chunk of points draws from its own seed), not on
            the process: under ``torchrun`` the ranks share the chunks and gather one result
            (:mod:`~ppl_vae.estimators.sharding`).
        schedule: ``"sigmoid"`` (default), ``"linear"`` or a tensor of T + 1 betas (see :func:`schedule_betas`).
        target_accept: the acceptance probability the per-point step size is adapted toward (0.65).
        tune_chains: extra chains per point that only adapt the step size (their weights are dropped).
        fast: ``"auto"`` (default: ppl_vae's own programs evaluate through a captured graph, others eagerly),
            ``"graph"`` (capture any program's evaluation; for programs without Python side effects) or
            ``"eager"``; the same numbers up to float rounding (the graph is checked against the eager
            evaluation on each chunk's first state).
        batch_size: points per chunk (default about 4096 / C, so that C x points ~ 4096 rows per model call).
        progress: a progress bar over annealing steps (all chunks).
        return_diagnostics: return an :class:`AISResult` (``.log_likelihood``, ``.acceptance``, ``.ess``, ``.se``)
            instead of the tensor.
        data_plate: the name of the data plate (default ``"data"``).

    **Cost.** With ``C' = C + tune_chains``, ``B = min(N, batch_size)`` points per chunk and ``c_dec`` the cost
    of the model on one row (its decoder): time ~ ``N C' ((T - 1) L + 22) * 3 c_dec`` (every leapfrog step is
    one forward and one backward pass, about 3 forward passes, of the model on ``C' x B`` rows; 22 bounds
    the one-step proposals of the step-size search), plus about 1 ms of Pyro and autograd bookkeeping per
    evaluation when it runs eagerly (user programs; ppl_vae's own replay a captured graph, ``fast``), so
    per-row cost falls as ``C' B`` grows toward ~4096 rows. A guide with one latent site is run once per
    chunk (its distribution cannot depend on the latent); a guide with several runs at every evaluation. Memory ~ ``4 C' B (a_dec + 12 d)`` bytes, ``a_dec`` the floats the decoder keeps for its backward
    pass per row (its activations plus about twice the data dimension) and ``d`` the latent numbers per
    point, plus ``8 N C`` bytes of log weights: independent of T and L. :func:`bdmc` costs about twice as
    much. Runs on the data's device (CPU or CUDA).

    Examples:
        >>> import torch
        >>> import ppl_vae as pv
        >>> _ = torch.manual_seed(0)
        >>> lg = pv.LinearGaussianVAE(input_dim=3, latent_dim=1)
        >>> x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
        >>> ais = pv.ais_log_likelihood(lg, x, num_steps=100, num_chains=8, leapfrog_steps=2, seed=0)
        >>> bool(((ais - lg.exact_log_likelihood(x)).abs() < 0.1).all())
        True
    """
    t0 = time.perf_counter()
    program, rows, seed, info, cfg, bar = start(
        model,
        guide,
        x,
        num_steps,
        num_chains,
        leapfrog_steps,
        init,
        schedule,
        target_accept,
        batch_size,
        tune_chains,
        fast,
        data_plate,
        seed,
        generator,
        progress,
        "AIS",
        passes=1,
    )
    with sandbox(program, seed, rows[0].device), bar:
        (log_w, acc, eps), _ = run_ais(program, rows, info, cfg, bar, seed=seed)
    result = ais_result(
        log_w, acc, eps, 1.0, cfg.public(seed, schedule), time.perf_counter() - t0, rows[0].dtype
    )
    return result if return_diagnostics else result.log_likelihood
