r"""Posterior predictive checks for any program: :func:`predictive_check`.

For each row ``x_n`` a latent is drawn from the guide, ``z ~ q(z | x_n)``, and a replicate
``x_rep ~ p(x | z)`` from the model (the observed site made unobserved with
``pyro.poutine.uncondition``); ``num_samples`` such replicated data sets are drawn, and as many from the
prior predictive (``z ~ p(z)``). A statistic ``T`` (per column: mean, variance, zero fraction; per level of
a categorical or binary column: its frequency; per pair of columns: their Pearson correlation) is
computed on the data and on every replicate; its posterior predictive p-value is
``p = 2 min(P(T_rep >= T_obs), P(T_rep <= T_obs))`` (two-sided, capped at 1; Gelman et al., *Bayesian
Data Analysis*, 3rd ed., ch. 6), with the central 95% interval of ``T_rep``. Missing cells (NaN in the
observations) are left out of the observed statistics (a correlation uses the rows where both cells are
observed). A replicate whose statistic is undefined (a constant column's correlation) is left out of
that statistic's p-value and interval.

Which columns have levels: the program's table schema (``binary`` and ``categorical`` columns, levels
coded ``0 .. K-1`` in model space) or ``levels={column: K}``. Correlations are computed for up to
the pairs of up to :data:`MAX_PAIR_COLUMNS` columns: with more columns (pixels), those whose observed
variance is largest (a blank pixel's correlations are undefined anyway).

Posterior predictive p-values are conservative (the data were used twice): under the true model they
cluster towards 0.5 rather than being exactly uniform; prior predictive p-values are uniform.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal, cast

import numpy as np
import pandas as pd
import pyro
import pyro.poutine as poutine
import torch

from ..errors import ArgumentTypeError, ProgramError
from ..programs import DataLike, ProgramLike, as_program, evaluating

if TYPE_CHECKING:
    import arviz as az

__all__ = ["PredictiveCheck", "predictive_check"]

Statistic = Literal["mean", "variance", "zero_fraction", "frequency", "correlation"]
STATISTICS: tuple[Statistic, ...] = (
    "mean",
    "variance",
    "zero_fraction",
    "frequency",
    "correlation",
)
#: p-values below this are flagged ``extreme``.
EXTREME_P = 0.01
#: correlations are computed between at most this many columns (2080 pairs), the most variable ones
MAX_PAIR_COLUMNS = 65


class PredictiveCheck:
    """The result of :func:`predictive_check`: ``table`` (one row per source x statistic x column),
    the observed data and the replicates (``posterior``, ``prior``: arrays ``(S, N, D)``)."""

    def __init__(
        self, table: pd.DataFrame, observed: np.ndarray, posterior: np.ndarray, prior: np.ndarray
    ) -> None:
        self.table = table
        self.observed = observed
        self.posterior = posterior
        self.prior = prior

    def to_inference_data(self) -> az.InferenceData:
        """An ArviZ ``InferenceData`` with ``posterior_predictive`` (one chain, ``S`` draws) and
        ``observed_data`` groups, variable ``x`` (NaN cells stay NaN), for ``az.plot_ppc``."""
        import arviz as az

        return az.from_dict(
            posterior_predictive={"x": self.posterior[None]},
            observed_data={"x": self.observed},
            dims={"x": ["row", "column"]},
        )


def _statistic(name: Statistic, x: np.ndarray) -> np.ndarray:
    """``name`` per column of ``x`` (..., N, D), NaN cells left out."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a column with every cell missing -> NaN
        if name == "mean":
            return np.nanmean(x, axis=-2)
        if name == "variance":
            return np.nanvar(x, axis=-2, ddof=1)
        zero = np.where(np.isnan(x), np.nan, (x == 0).astype(float))
        return np.nanmean(zero, axis=-2)


def _frequencies(x: np.ndarray, levels: dict[int, int]) -> np.ndarray:
    """The share of each level among a column's observed cells: ``(..., L)`` over ``levels``' items."""
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for column, count in levels.items():
            cells = x[..., column]
            for level in range(count):
                hit = np.where(np.isnan(cells), np.nan, (np.round(cells) == level).astype(float))
                out.append(np.nanmean(hit, axis=-1))
    return np.stack(out, axis=-1)


def _correlations(x: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Pearson correlations ``(..., P)`` of the column ``pairs`` (P, 2) of ``x`` (..., N, D): NaN where a
    column is constant; with missing cells, each pair on the rows where both cells are observed."""
    if np.isnan(x).any():
        flat = x.reshape(-1, *x.shape[-2:])
        return np.stack([_pairwise_complete(rows, pairs) for rows in flat]).reshape(
            *x.shape[:-2], len(pairs)
        )
    used, pairs = np.unique(pairs, return_inverse=True)  # only the paired columns: (S, N, <= 65)
    x, pairs = x[..., used], pairs.reshape(-1, 2)
    centred = x - x.mean(axis=-2, keepdims=True)
    cov = np.einsum("...ni,...nj->...ij", centred, centred)  # (..., D, D): cheap for many pairs
    var = np.diagonal(cov, axis1=-2, axis2=-1)
    constant = np.ptp(x, axis=-2) == 0
    i, j = pairs[:, 0], pairs[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov[..., i, j] / np.sqrt(var[..., i] * var[..., j])
    return np.where(constant[..., i] | constant[..., j], np.nan, r)


def _pairwise_complete(x: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Correlations ``(P,)`` of ``x`` (N, D) with NaN cells, each pair on its rows observed in both."""
    frame = pd.DataFrame(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        corr = frame.corr(min_periods=2).to_numpy()
    return corr[pairs[:, 0], pairs[:, 1]]


def _pair_columns(observed: np.ndarray) -> list[int]:
    """All columns, or the :data:`MAX_PAIR_COLUMNS` whose observed variance is largest (in order)."""
    d = observed.shape[1]
    if d <= MAX_PAIR_COLUMNS:
        return list(range(d))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        var = np.nan_to_num(np.nanvar(observed, axis=0), nan=-1.0)
    return sorted(np.argsort(-var, kind="stable")[:MAX_PAIR_COLUMNS].tolist())


def _terms(
    stat: Statistic,
    observed: np.ndarray,
    levels: dict[int, int],
    names: Sequence[str],
    labels: Mapping[int, Sequence[str]],
) -> tuple[pd.DataFrame, Callable[[np.ndarray], np.ndarray]]:
    """The rows a statistic gives (``column``, ``other``, ``level``, ``term``) and its function."""
    d = observed.shape[1]
    if stat == "frequency":
        cells = [(c, lv) for c, count in levels.items() for lv in range(count)]
        frame = pd.DataFrame(
            {
                "column": [c for c, _ in cells],
                "other": -1,
                "level": [lv for _, lv in cells],
                "term": [f"{names[c]}={labels[c][lv] if c in labels else lv}" for c, lv in cells],
            }
        )
        return frame, lambda x: _frequencies(x, levels)
    if stat == "correlation":
        cols = _pair_columns(observed)
        pairs = np.array([(i, j) for k, i in enumerate(cols) for j in cols[k + 1 :]], int)
        pairs = pairs.reshape(-1, 2)
        frame = pd.DataFrame(
            {
                "column": pairs[:, 0],
                "other": pairs[:, 1],
                "level": -1,
                "term": [f"{names[i]}~{names[j]}" for i, j in pairs],
            }
        )
        return frame, lambda x: _correlations(x, pairs)
    frame = pd.DataFrame({"column": np.arange(d), "other": -1, "level": -1, "term": list(names)})
    return frame, lambda x: _statistic(stat, x)


def _observed_site(trace: poutine.Trace, x: torch.Tensor) -> str:
    """The name of the model's observed site whose value is the data ``x``."""
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or not site["is_observed"]:
            continue
        value = site["value"]
        if (
            isinstance(value, torch.Tensor)
            and value.shape == x.shape
            and torch.equal(torch.nan_to_num(value), torch.nan_to_num(x))
        ):
            return name
    raise ProgramError(
        "predictive_check: no observed site of the model has the data as its value; observe the data "
        "with pyro.sample(name, dist, obs=x) on the rows passed in"
    )


def _replicates(
    program: ProgramLike, rows: tuple[torch.Tensor, ...], num_samples: int, posterior: bool
) -> np.ndarray:
    """``num_samples`` replicated data sets ``(S, N, D)`` from the posterior or prior predictive."""
    prog = as_program(program)
    x = rows[0]
    out = []
    with evaluating(prog), torch.no_grad():
        site = _observed_site(poutine.trace(prog.model).get_trace(*rows), x)
        for _ in range(num_samples):
            model = poutine.uncondition(prog.model)
            if posterior:
                guide_trace = poutine.trace(prog.guide).get_trace(*rows)
                model = poutine.replay(model, trace=guide_trace)
            value = cast(torch.Tensor, poutine.trace(model).get_trace(*rows).nodes[site]["value"])
            out.append(value.detach().reshape(len(x), -1).cpu().numpy())
    return np.stack(out).astype(float)


def _rows_of(program: ProgramLike, data: DataLike) -> tuple[tuple[torch.Tensor, ...], np.ndarray]:
    """The program's rows and the observations as an array ``(N, D)`` with NaN where missing."""
    prog = as_program(program)
    rows = prog.rows(data, "data")
    observed = rows[0].detach().reshape(len(rows[0]), -1).cpu().numpy().astype(float)
    mask = rows[1] if len(rows) > 1 and rows[1].dtype == torch.bool else None
    if mask is not None and mask.shape == rows[0].shape:
        observed = np.where(mask.reshape(len(mask), -1).cpu().numpy(), observed, np.nan)
    return rows, observed


def _p_values(t_obs: np.ndarray, t_rep: np.ndarray) -> np.ndarray:
    """Two-sided predictive p-values of ``t_obs`` (T,) against ``t_rep`` (S, T); undefined draws left out."""
    valid = ~np.isnan(t_rep)
    with np.errstate(invalid="ignore", divide="ignore"):
        count = valid.sum(axis=0)
        upper = ((t_rep >= t_obs) & valid).sum(axis=0) / count
        lower = ((t_rep <= t_obs) & valid).sum(axis=0) / count
    p = np.minimum(1.0, 2.0 * np.minimum(upper, lower))
    return np.where(np.isnan(t_obs) | (count == 0), np.nan, p)


def _summaries(t_rep: np.ndarray) -> dict[str, np.ndarray]:
    """Mean and central 95% interval of ``t_rep`` (S, T) over its defined draws."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a term undefined in every draw -> NaN
        return {
            "replicated_mean": np.nanmean(t_rep, axis=0),
            "lower": np.nanquantile(t_rep, 0.025, axis=0),
            "upper": np.nanquantile(t_rep, 0.975, axis=0),
        }


def _table(
    observed: np.ndarray,
    reps: dict[str, np.ndarray],
    statistics: Sequence[Statistic],
    levels: dict[int, int],
    names: Sequence[str],
    labels: Mapping[int, Sequence[str]],
) -> pd.DataFrame:
    frames = []
    for stat in statistics:
        terms, fn = _terms(stat, observed, levels, names, labels)
        if not len(terms):
            continue
        t_obs = fn(observed)
        for source, rep in reps.items():
            t_rep = fn(rep)
            frame = terms.assign(source=source, statistic=stat, observed=t_obs)
            frames.append(frame.assign(**_summaries(t_rep), p_value=_p_values(t_obs, t_rep)))
    order = ["source", "statistic", "column", "other", "level", "term", "observed"]
    table = pd.concat(frames, ignore_index=True)
    table = table[order + [c for c in table.columns if c not in order]]
    table = table.sort_values(["source"], kind="stable", key=lambda s: s != "posterior")
    table = table.reset_index(drop=True)
    table["extreme"] = table["p_value"] < EXTREME_P
    return table


def _levels_and_names(
    program: ProgramLike, d: int, levels: Mapping[int, int] | None
) -> tuple[dict[int, int], list[str], dict[int, list[str]]]:
    """Which columns have levels (and how many), the columns' names and the schema's level labels:
    from ``levels`` or the schema."""
    schema = getattr(as_program(program).owner, "schema", None)
    names = [str(j) for j in range(d)]
    found: dict[int, int] = {}
    labels: dict[int, list[str]] = {}
    if schema is not None and len(schema) == d:
        names = list(schema.names)
        for j, column in enumerate(schema):
            if column.type in ("binary", "categorical"):
                found[j] = len(column.levels)
                labels[j] = [str(level) for level in column.levels]
    if levels is not None:
        bad = [k for k, v in levels.items() if not 0 <= int(k) < d or int(v) < 2]
        if bad:
            raise ArgumentTypeError(
                f"levels: columns {bad} are not column positions 0..{d - 1} with at least 2 levels"
            )
        found = {int(k): int(v) for k, v in levels.items()}
        labels = {j: lab for j, lab in labels.items() if found.get(j) == len(lab)}
    return dict(sorted(found.items())), names, labels


def predictive_check(
    program: ProgramLike,
    data: DataLike,
    num_samples: int = 100,
    seed: int | None = 0,
    statistics: Sequence[Statistic] = STATISTICS,
    levels: Mapping[int, int] | None = None,
) -> PredictiveCheck:
    """Posterior (and prior) predictive checks of per-column statistics.

    Parameters
    ----------
    program
        A program (:class:`~ppl_vae.Program`, a VAE, an object with ``.model``/``.guide``).
    data
        The rows to check (a tensor ``(N, ...)``, a Dataset's train split, a tuple of row-aligned tensors).
    num_samples
        Replicated data sets drawn from each of the posterior and the prior predictive.
    seed
        Pyro's seed for the draws (``None``: leave the global state alone).
    statistics
        Any of ``"mean"``, ``"variance"``, ``"zero_fraction"`` (per column), ``"frequency"`` (per level of
        a column with levels), ``"correlation"`` (per pair of columns; of the :data:`MAX_PAIR_COLUMNS` most variable
        columns when there are more).
    levels
        ``{column position: number of levels}`` of the columns whose values are level codes ``0 .. K-1``;
        default: the binary and categorical columns of the program's table schema (none without one).

    Returns
    -------
    PredictiveCheck
        ``.table``: columns ``source`` (``posterior`` rows first, then ``prior``), ``statistic``,
        ``column``, ``other`` (a correlation's second column, else -1), ``level`` (a frequency's level,
        else -1), ``term`` (``name``, ``name=level`` or ``a~b``, with the schema's column names and levels),
        ``observed``, ``replicated_mean``, ``lower``/``upper`` (95% interval), ``p_value``, ``extreme``
        (p < 0.01); ``.to_inference_data()`` for ``az.plot_ppc``.

    Examples
    --------
    >>> import torch
    >>> import ppl_vae as pv
    >>> vae = pv.LinearGaussianVAE(input_dim=3, latent_dim=1)
    >>> x = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
    >>> check = pv.predictive_check(vae, x, num_samples=20, seed=0)
    >>> sorted(set(check.table["statistic"]))
    ['correlation', 'mean', 'variance', 'zero_fraction']
    >>> check.table.loc[check.table.statistic == "correlation", "term"].iloc[:3].tolist()
    ['0~1', '0~2', '1~2']
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
        raise ArgumentTypeError(f"num_samples must be an integer >= 2; got {num_samples!r}")
    unknown = [s for s in statistics if s not in STATISTICS]
    if unknown or not statistics:
        raise ArgumentTypeError(
            f"statistics: {unknown or 'none given'}; choose from {', '.join(STATISTICS)}"
        )
    if seed is not None:
        pyro.set_rng_seed(seed)
    rows, observed = _rows_of(program, data)
    reps = {
        "posterior": _replicates(program, rows, num_samples, posterior=True),
        "prior": _replicates(program, rows, num_samples, posterior=False),
    }
    found, names, labels = _levels_and_names(program, observed.shape[1], levels)
    table = _table(observed, reps, list(statistics), found, names, labels)
    return PredictiveCheck(table, observed, reps["posterior"], reps["prior"])
