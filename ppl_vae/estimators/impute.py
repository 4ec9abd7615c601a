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
the site is found by its value, or named with ``site=`` (:mod:`.masked` finds it, refuses a site whose
cells are dependent given the latents, and checks that the model masks the missing cells).
All ``K`` particles of a point are drawn in one call (a few points per call, about
:data:`~.importance.ROWS_PER_CALL` rows), on one seeded stream.

References:
    Mattei & Frellsen (2019), MIWAE: Deep Generative Modelling and Imputation of Incomplete Data Sets,
    ICML. Owen (2013), Monte Carlo theory, methods and examples, ch. 9. Vihola, Helske & Franks (2020),
    Importance sampling type estimators based on approximate marginal MCMC, Scand. J. Stat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, cast

import pyro
import pyro.poutine as poutine
import torch

from .._checks import check_int, check_memory
from ..errors import DataError, ProgramError
from ..programs import as_program, rows_slice, run_with_particles
from .importance import ROWS_PER_CALL, prepare, sandbox, sum_sites
from .masked import cells_of, check_mask, check_masked, observed_site, training_off

__all__ = ["CellImputation", "Features", "impute_cells", "snis_cells"]

Batch = tuple[torch.Tensor, ...]


@dataclass
class CellImputation:
    """What :func:`impute_cells` found, in the program's own (model) space.

    Attributes:
        mean: ``(N, ...)`` the rows with missing cells replaced by their SNIS conditional mean (with
            ``features``: ``(N, F)`` their SNIS means, NaN where observed; likewise ``sd``, ``se``, ``ess``).
        sd: ``(N, ...)`` predictive s.d. of each missing cell given the observed ones (0 where observed);
            where the site's distribution has no variance, ``Var[x_j | z_k]`` is estimated by
            ``(x_jk - E[x_j | z_k])^2`` from one draw per particle (unbiased).
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


class Features(Protocol):
    """Per-particle functions of ``p(x | z)`` to average instead of the cells' means (e.g. a table's
    values in original units, level probabilities from draws of a code column).

    ``cells: (F,)`` long: the flattened cell of each feature (a feature is imputed where its cell is
    missing); ``draws``: whether ``__call__`` needs ``sample``. ``__call__(mean, var, sample)`` takes the
    site's ``(k, n, P)`` mean, variance (None where the distribution has none) and one draw per particle
    (None unless asked), and returns the features ``(k, n, F)`` and their variance given z (or None).
    """

    cells: torch.Tensor
    draws: bool

    def __call__(
        self, mean: torch.Tensor | None, var: torch.Tensor | None, sample: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]: ...


def _moment(fn: Any, what: str, k: int, x: torch.Tensor, site: str) -> torch.Tensor | None:
    """The site's per-cell mean or variance given z, or None where the distribution has none. A ppl_vae
    likelihood's distribution (``.likelihood``, ``.out``) gives its cells' means unmasked: masking
    changes what is scored, not ``E[x_j | z]``."""
    inner, _ = cells_of(fn)
    likelihood, out = getattr(inner, "likelihood", None), getattr(inner, "out", None)
    mean_of = getattr(likelihood, "mean", None)
    try:
        if what == "mean" and callable(mean_of) and out is not None:
            value = mean_of(out)
        else:
            value = getattr(fn, what)
    except NotImplementedError:
        return None
    return _as_cells(value, k, x, what, site)


def _chunk(program, info, batch, k, site, draws, features):
    model_tr, guide_tr = run_with_particles(program, info, batch, k)
    x = batch[0]
    shape = (k, len(x))
    log_w = sum_sites(model_tr, info.observed + info.latent, info, shape, x) - sum_sites(
        guide_tr, info.latent + info.guide_aux, info, shape, x
    )
    fn: Any = model_tr.nodes[site]["fn"]  # a distribution (Pyro types it as any callable)
    mean, var = _moment(fn, "mean", k, x, site), _moment(fn, "variance", k, x, site)
    want = draws or (features.draws if features is not None else var is None)
    sample = _as_cells(fn.sample(), k, x, "sample", site) if want else None
    if features is not None:
        f, fvar = features(mean, var, sample)
    elif mean is None:
        raise ProgramError(
            f"the observed site {site!r} ({type(fn).__name__}) has no mean: SNIS imputation averages "
            "E[x | z]; give the distribution a mean, or pass features="
        )
    else:  # no variance given z: one draw per particle estimates it without bias
        f = mean  # no variance: a draw was taken above (want is True when var is None)
        fvar = var if var is not None else (cast(torch.Tensor, sample) - mean).square()
    return log_w, f, fvar, sample


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
    features: Features | None = None,
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
        features: average these per-particle functions instead of the cells' means (:class:`Features`).

    Returns:
        :class:`CellImputation`: observed cells exactly as given; with ``features``, ``mean``, ``sd``,
        ``se`` and ``ess`` are ``(N, F)``, NaN/0/0/NaN where a feature's cell is observed.
    """
    program = as_program(model, guide, data_plate=data_plate)
    mask = check_mask(x, mask)
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
        return _scan(program, info, rows, num_samples, multiple, seed, name, features)


def _scan(program, info, rows, k, multiple, seed, name, features) -> CellImputation:
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
            log_w, f, var, sample = _chunk(program, info, batch, k, name, bool(multiple), features)
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
    return _assemble(parts, log_ws, draws, rows, k, name, features)


def _assemble(parts, log_ws, draws, rows, k, name, features) -> CellImputation:
    x, mask = rows[0], rows[1]
    flat_mask = mask.reshape(len(x), -1)
    flat_x = x.reshape(len(x), -1)
    known = flat_mask if features is None else flat_mask[:, features.cells.to(x.device)]
    shape = x.shape if features is None else (len(x), len(features.cells))

    def cells(key: str, observed: float) -> torch.Tensor:
        value = torch.cat(parts[key], 0).to(x.dtype)
        return torch.where(known, torch.full_like(value, observed), value).reshape(shape)

    if features is None:
        mean = torch.where(known, flat_x, torch.cat(parts["mean"], 0).to(x.dtype)).reshape(shape)
    else:
        mean = cells("mean", math.nan)
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
