r"""Missing cells by importance sampling: SNIS conditional means, SIR draws, and their reliability.

For a row with observed cells :math:`x_o`, missing cells :math:`x_m` and the mask (True = observed)
passed to the program as ``model(x, mask, ...)``, ``guide(x, mask, ...)``, draw
:math:`z_k \sim q(z \mid x_o)` and weigh by the observed cells only (the model masks its observed
site, so the filled values of missing cells contribute nothing; :func:`check_masked` verifies it):

.. math::

    \log w_k = \log p(x_o, z_k) - \log q(z_k \mid x_o), \qquad
    \tilde w_k = w_k / \textstyle\sum_j w_j .

When ``p(x | z)`` factorises over cells, :math:`p(x_m \mid z, x_o) = p(x_m \mid z)`, and
(Mattei & Frellsen, 2019, Sec. 4.2):

* **single imputation** (self-normalised importance sampling, SNIS):
  :math:`\hat\mu_j = \sum_k \tilde w_k f_{jk}`, :math:`f_{jk} = E[x_j \mid z_k]` (for a one-hot block,
  the level probabilities, whose argmax is the most probable level);
* its **predictive s.d.**, :math:`\mathrm{Var}[x_j \mid x_o] \approx \sum_k \tilde w_k
  (\mathrm{Var}[x_j \mid z_k] + (f_{jk} - \hat\mu_j)^2)`;
* its **Monte Carlo s.e.** by the delta method (Owen, 2013, eq. 9.8):
  :math:`\widehat{\mathrm{se}}_j^2 = \sum_k \tilde w_k^2 (f_{jk} - \hat\mu_j)^2`;
* each cell's **ESS**, the number of independent draws from the posterior that would estimate
  :math:`E[f_j]` as well: :math:`\sum_k \tilde w_k (f_{jk} - \hat\mu_j)^2 / \widehat{\mathrm{se}}_j^2`
  (Vihola et al., 2020), capped by the row's ``1 / sum_k w~_k^2``: both come from the same weights and
  are over-optimistic when a few particles carry the weight, which the row's PSIS k-hat flags;
* **multiple imputation** (sampling importance resampling, SIR): for ``m = 1..M`` draw
  :math:`k_m \sim \mathrm{Cat}(\tilde w)` and take the draw :math:`x_m \sim p(x_m \mid z_{k_m})` made
  with that particle: approximately independent draws from :math:`p(x_m \mid x_o)` (exact as
  :math:`K \to \infty`), the input of Rubin's rules.

The same weights give :math:`\mathrm{IW}_K = \log \frac1K \sum_k w_k`, the estimate of
:math:`\log p(x_o)`, with its delta-method s.e. :math:`\sqrt{1/\mathrm{ESS} - 1/K}`.

**Any program** whose observed site holds the rows ``x: (N, ...)`` (row-aligned with the data):
the site is found by its value, or named with ``site=``. A site whose cells are dependent given the
latents (a ``MultivariateNormal``) is refused: ``E[x_m | z]`` is not ``E[x_m | z, x_o]`` there.
All ``K`` particles of a point are drawn in one call (a few points per call, about
:data:`~.importance.ROWS_PER_CALL` rows), on one seeded stream.

References:
    Mattei & Frellsen (2019), MIWAE: Deep Generative Modelling and Imputation of Incomplete Data Sets,
    ICML. Owen (2013), Monte Carlo theory, methods and examples, ch. 9. Vihola, Helske & Franks (2020),
    Importance sampling type estimators based on approximate marginal MCMC, Scand. J. Stat.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from torch.distributions import Independent

from .._checks import check_int, check_memory
from ..errors import DataError, ProgramError
from ..programs import Program, ProgramInfo, as_program, rows_slice, run_with_particles
from .importance import ROWS_PER_CALL, prepare, sandbox, sum_sites

__all__ = ["CellImputation", "check_masked", "impute_cells", "observed_site", "training_off"]

Batch = tuple[torch.Tensor, ...]


@dataclass
class CellImputation:
    """What :func:`impute_cells` found, in the program's own (model) space.

    Attributes:
        mean: ``(N, ...)`` the rows with missing cells replaced by their SNIS conditional mean.
        sd: ``(N, ...)`` predictive s.d. of each missing cell given the observed ones (0 where observed;
            NaN where the site's distribution has no variance).
        se: ``(N, ...)`` Monte Carlo s.e. of ``mean`` (0 where observed).
        ess: ``(N, ...)`` each missing cell's importance-sampling ESS (NaN where observed).
        draws: ``(M, N, ...)`` SIR draws, observed cells kept; None without ``multiple``.
        log_px: ``(N,)`` IW estimate of log p(x_obs) (nats); ``log_px_se``: its delta-method s.e.
        row_ess: ``(N,)`` ``1 / sum_k w~_k^2`` of each row's weights; log_weights: ``(N, K)`` float32 (for
            PSIS k-hat: :func:`~ppl_vae.diagnostics.psis_diagnostics`).
        mask: ``(N, ...)`` bool, True = observed. num_samples: K. site: the observed site's name.
    """

    mean: torch.Tensor
    sd: torch.Tensor
    se: torch.Tensor
    ess: torch.Tensor
    draws: torch.Tensor | None
    log_px: torch.Tensor
    log_px_se: torch.Tensor
    row_ess: torch.Tensor
    log_weights: torch.Tensor
    mask: torch.Tensor
    num_samples: int
    site: str


# ============================================================================ checks
@contextlib.contextmanager
def training_off(program: Program) -> Iterator[None]:
    """The program's module in eval mode (Dropout/BatchNorm off: one value per row, not per chunk),
    restored afterwards."""
    module = program.module
    modes = None if module is None else [(m, m.training) for m in module.modules()]
    if module is not None:
        module.eval()
    try:
        yield
    finally:
        for m, mode in modes or ():
            m.training = mode


def _cells(fn: Any) -> tuple[Any, int]:
    """The innermost distribution under ``Independent`` and ``.mask`` wrappers, and its event rank."""
    while True:
        if isinstance(fn, Independent):
            fn = fn.base_dist
        elif isinstance(fn, dist.MaskedDistribution):
            fn = fn.base_dist
        else:
            return fn, len(fn.event_shape)


def observed_site(
    info: ProgramInfo, trace: poutine.Trace, x: torch.Tensor, site: str | None
) -> str:
    """The observed site that holds the rows ``x`` (by value), or ``site``; refused in one line otherwise."""
    if site is not None:
        if site not in info.observed:
            raise ProgramError(
                f"site={site!r} is not an observed site of the model; its observed sites are "
                f"{list(info.observed)}"
            )
        found = site
    else:
        holding = [n for n in info.observed if trace.nodes[n]["value"] is x]
        holding = holding or [
            n for n in info.observed if tuple(trace.nodes[n]["value"].shape) == tuple(x.shape)
        ]
        if len(holding) != 1:
            raise ProgramError(
                f"imputation needs the observed site that holds the rows x {tuple(x.shape)}; the model's "
                f"observed sites {list(info.observed)} hold {len(holding)} such: observe the whole row in "
                "one site (pyro.sample('x', ..., obs=x)) or pass site='name'"
            )
        found = holding[0]
    fn = trace.nodes[found]["fn"]
    inner, rank = _cells(fn)
    if rank and not isinstance(inner, dist.OneHotCategorical | dist.Delta):
        if not getattr(inner, "cells_independent_given_latents", False):
            raise ProgramError(
                f"the observed site {found!r} is a {type(inner).__name__} over {rank} event dim(s): its cells "
                "are dependent given the latents, so E[x_mis | z] from the site is not E[x_mis | z, x_obs]; "
                "write p(x | z) as a product over cells (e.g. dist.Normal(loc, scale).to_event(1))"
            )
    return found


def check_masked(program: Program, info: ProgramInfo, batch: Batch, site: str) -> None:
    """Refuse a model whose observed site scores the missing cells.

    The model is replayed at the same latent draws with each missing cell's fill replaced by the largest
    observed value of its column (a value in the support); the site's log-density per row must not move.
    """
    x, mask = batch[0], batch[1]
    observed = torch.where(mask, x, torch.full_like(x, -math.inf))
    col_max = observed.amax(0, keepdim=True)
    other = torch.where(mask | ~torch.isfinite(col_max), x, col_max.expand_as(x))
    if torch.equal(other, x):
        return
    guide_tr = poutine.trace(program.guide).get_trace(*batch)

    def site_lp(rows: torch.Tensor) -> torch.Tensor:
        tr = poutine.trace(poutine.replay(program.model, trace=guide_tr)).get_trace(
            rows, *batch[1:]
        )
        node = tr.nodes[site]
        return node["fn"].log_prob(node["value"])

    with pyro.validation_enabled(False):
        a, b = site_lp(x), site_lp(other)
    if not torch.allclose(a, b, rtol=1e-5, atol=1e-4, equal_nan=True):
        raise ProgramError(
            f"the model's observed site {site!r} scores the missing cells (its log-density changed when only "
            "their fill values changed): mask them, pyro.sample('x', dist.Normal(loc, scale).mask(mask)"
            ".to_event(1), obs=x), with the mask (True = observed) passed as model(x, mask)"
        )


def _check_mask(x: torch.Tensor, mask: Any) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != x.shape:
        raise DataError(
            f"mask must be a bool tensor of the shape of x {tuple(x.shape)} (True = observed); got "
            f"{type(mask).__name__} {getattr(mask, 'dtype', '')} {tuple(getattr(mask, 'shape', ()))}"
        )
    empty = (~mask.reshape(len(mask), -1).any(1)).nonzero().flatten()
    if len(empty):
        raise DataError(
            f"{len(empty)} row(s) have no observed cell, first row {int(empty[0])}: there is nothing to "
            "condition on; drop those rows"
        )
    return mask.to(x.device)


# ============================================================================ per chunk
def _as_cells(value: torch.Tensor, k: int, x: torch.Tensor, what: str, site: str) -> torch.Tensor:
    """A site statistic ``(k, [1, ...,] n, ...)`` as ``(k, n, P)`` (P cells per row)."""
    while value.dim() > x.dim() + 1 and value.shape[1] == 1:
        value = value.squeeze(1)
    try:
        value = value.expand(k, *x.shape)
    except RuntimeError:
        raise ProgramError(
            f"the {what} of observed site {site!r} has shape {tuple(value.shape)}, which does not line up "
            f"with {k} particles x the rows {tuple(x.shape)}"
        ) from None
    return value.reshape(k, len(x), -1)


def _chunk(program: Program, info: ProgramInfo, batch: Batch, k: int, site: str, draws: bool):
    model_tr, guide_tr = run_with_particles(program, info, batch, k)
    x = batch[0]
    shape = (k, len(x))
    log_w = sum_sites(model_tr, info.observed + info.latent, info, shape, x) - sum_sites(
        guide_tr, info.latent + info.guide_aux, info, shape, x
    )
    fn = model_tr.nodes[site]["fn"]
    mean = _as_cells(fn.mean, k, x, "mean", site)
    try:
        var = _as_cells(fn.variance, k, x, "variance", site)
    except NotImplementedError:
        var = None
    sample = _as_cells(fn.sample(), k, x, "sample", site) if draws else None
    return log_w, mean, var, sample


def snis_cells(
    log_w: torch.Tensor, f: torch.Tensor, var: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """SNIS moments per row and cell from ``log_w: (K, n)`` and ``f, var: (K, n, P)`` (float64)."""
    lw = log_w.double()
    w = torch.softmax(lw, 0)[..., None]  # (K, n, 1)
    f = f.double()
    mu = (w * f).sum(0)
    dev2 = (f - mu) ** 2
    between = (w * dev2).sum(0)
    mc_var = (w.square() * dev2).sum(0)
    row_ess = 1.0 / w.square().sum(0)  # (n, 1)
    tiny = 1e-300
    ess = torch.where(mc_var > tiny, between / mc_var.clamp_min(tiny), row_ess)
    pred = between + (w * var.double()).sum(0) if var is not None else torch.full_like(mu, math.nan)
    k = lw.shape[0]
    log_px = lw.logsumexp(0) - math.log(k)
    return {
        "mean": mu,
        "sd": pred.clamp_min(0).sqrt(),
        "se": mc_var.sqrt(),
        "ess": torch.minimum(ess, row_ess),
        "row_ess": row_ess[:, 0],
        "log_px": log_px,
        "log_px_se": (1.0 / row_ess[:, 0] - 1.0 / k).clamp_min(0).sqrt(),
        "weights": w[..., 0],
    }


def _resample(w: torch.Tensor, sample: torch.Tensor, multiple: int) -> torch.Tensor:
    """SIR: ``multiple`` particle indices per row from the normalised ``w: (K, n)``; their draws
    ``(M, n, P)`` from ``sample: (K, n, P)``."""
    idx = torch.multinomial(w.T.float(), multiple, replacement=True)  # (n, M)
    rows = torch.arange(w.shape[1], device=w.device)
    return sample[idx.T, rows]


# ============================================================================ the estimator
def impute_cells(
    model: Any,
    x: torch.Tensor,
    mask: torch.Tensor,
    extra: tuple[torch.Tensor, ...] = (),
    num_samples: int = 1000,
    multiple: int | None = None,
    *,
    guide: Any = None,
    site: str | None = None,
    seed: int | None = None,
    data_plate: str | None = None,
) -> CellImputation:
    """SNIS single imputation, SIR multiple imputations and log p(x_obs) for any masked program.

    Args:
        model: a program (``.model``/``.guide``), or a model with ``guide=``; called as
            ``model(x, mask, *extra)``.
        x: ``(N, ...)`` rows, missing cells filled with finite values (the program's own fill).
        mask: bool, the shape of ``x``, True = observed; every row needs one observed cell.
        extra: further row-aligned inputs of the program.
        num_samples: K particles per row. multiple: M SIR draws per row (None: no draws).
        site: the observed site holding ``x`` (default: found by value).
        seed: the random stream (None: 0); the caller's RNG is untouched.
        data_plate: the data plate's name (default ``"data"``).

    Returns:
        :class:`CellImputation` (observed cells exactly as given).
    """
    program = as_program(model, guide, data_plate=data_plate)
    mask = _check_mask(x, mask)
    if multiple is not None:
        check_int(multiple, "multiple", minimum=1)
    check_int(num_samples, "num_samples", minimum=2)
    rows = (x, mask, *extra)
    with training_off(program):
        rows, seed, info = prepare(program, rows, num_samples, seed, None)
        x = rows[0]
        with sandbox(program, seed, x.device):
            first = rows_slice(rows, slice(0, 16))
            guide_tr = poutine.trace(program.guide).get_trace(*first)
            model_tr = poutine.trace(poutine.replay(program.model, trace=guide_tr)).get_trace(
                *first
            )
            name = observed_site(info, model_tr, first[0], site)
            check_masked(program, info, first, name)
        return _scan(program, info, rows, num_samples, multiple, seed, name)


def _scan(program, info, rows, k, multiple, seed, name) -> CellImputation:
    x = rows[0]
    n, cells = len(x), max(1, math.prod(x.shape[1:]))
    per_call = max(1, ROWS_PER_CALL // k)
    check_memory(8.0 * 8 * k * min(per_call, n) * cells, f"imputation with {k} particles per row")
    check_memory(4.0 * n * k + 4.0 * (multiple or 0) * n * cells, f"{n} rows x {k} log weights")
    parts: dict[str, list[torch.Tensor]] = {}
    log_ws, draws = [], []
    with sandbox(program, seed, x.device), pyro.validation_enabled(False):
        for start in range(0, n, per_call):
            batch = rows_slice(rows, slice(start, start + per_call))
            log_w, f, var, sample = _chunk(program, info, batch, k, name, bool(multiple))
            if not torch.isfinite(log_w).any(0).all():
                bad = int((~torch.isfinite(log_w).any(0)).nonzero()[0]) + start
                raise DataError(
                    f"every log weight of row {bad} is non-finite: check the data and the model's parameters"
                )
            stats = snis_cells(log_w, f, var)
            for key in ("mean", "sd", "se", "ess", "row_ess", "log_px", "log_px_se"):
                parts.setdefault(key, []).append(stats[key])
            log_ws.append(log_w.T.float())
            if multiple:
                draws.append(_resample(stats["weights"], sample, multiple))
    return _assemble(parts, log_ws, draws, rows, k, name)


def _assemble(parts, log_ws, draws, rows, k, name) -> CellImputation:
    x, mask = rows[0], rows[1]
    flat_mask = mask.reshape(len(x), -1)
    flat_x = x.reshape(len(x), -1)

    def cells(key: str, observed: float) -> torch.Tensor:
        value = torch.cat(parts[key], 0).to(x.dtype)
        value = torch.where(flat_mask, torch.full_like(value, observed), value)
        return value.reshape(x.shape)

    mean = torch.where(flat_mask, flat_x, torch.cat(parts["mean"], 0).to(x.dtype)).reshape(x.shape)
    out_draws = None
    if draws:
        d = torch.cat(draws, 1).to(x.dtype)
        out_draws = torch.where(flat_mask, flat_x, d).reshape(len(d), *x.shape)
    return CellImputation(
        mean=mean,
        sd=cells("sd", 0.0),
        se=cells("se", 0.0),
        ess=cells("ess", math.nan),
        draws=out_draws,
        log_px=torch.cat(parts["log_px"]).to(x.dtype),
        log_px_se=torch.cat(parts["log_px_se"]).to(x.dtype),
        row_ess=torch.cat(parts["row_ess"]).to(x.dtype),
        log_weights=torch.cat(log_ws, 0),
        mask=mask,
        num_samples=k,
        site=name,
    )
