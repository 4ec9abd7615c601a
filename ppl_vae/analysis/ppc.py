r"""Posterior predictive checks for any program: :func:`predictive_check`.

For each row ``x_n`` a latent is drawn from the guide, ``z ~ q(z | x_n)``, and a replicate
``x_rep ~ p(x | z)`` from the model (the observed site made unobserved with
``pyro.poutine.uncondition``); ``num_samples`` such replicated data sets are drawn, and as many from the
prior predictive (``z ~ p(z)``). A statistic ``T`` of each column (mean, variance, zero fraction) is
computed on the data and on every replicate; its posterior predictive p-value is
``p = 2 min(P(T_rep >= T_obs), P(T_rep <= T_obs))`` (two-sided, capped at 1; Gelman et al., *Bayesian
Data Analysis*, 3rd ed., ch. 6), with the central 95% interval of ``T_rep``. Missing cells (NaN in the
observations) are left out of the observed statistics.

Posterior predictive p-values are conservative (the data were used twice): under the true model they
cluster towards 0.5 rather than being exactly uniform; prior predictive p-values are uniform.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
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

Statistic = Literal["mean", "variance", "zero_fraction"]
STATISTICS: tuple[Statistic, ...] = ("mean", "variance", "zero_fraction")
#: p-values below this are flagged ``extreme``.
EXTREME_P = 0.01


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
    """Two-sided predictive p-values of ``t_obs`` (D,) against ``t_rep`` (S, D)."""
    upper = (t_rep >= t_obs).mean(axis=0)
    lower = (t_rep <= t_obs).mean(axis=0)
    return np.minimum(1.0, 2.0 * np.minimum(upper, lower))


def _table(
    observed: np.ndarray, reps: dict[str, np.ndarray], statistics: Sequence[Statistic]
) -> pd.DataFrame:
    frames = []
    for source, rep in reps.items():
        for stat in statistics:
            t_obs, t_rep = _statistic(stat, observed), _statistic(stat, rep)
            p = _p_values(t_obs, t_rep)
            frames.append(
                pd.DataFrame(
                    {
                        "source": source,
                        "statistic": stat,
                        "column": np.arange(observed.shape[1]),
                        "observed": t_obs,
                        "replicated_mean": t_rep.mean(axis=0),
                        "lower": np.quantile(t_rep, 0.025, axis=0),
                        "upper": np.quantile(t_rep, 0.975, axis=0),
                        "p_value": np.where(np.isnan(t_obs), np.nan, p),
                    }
                )
            )
    table = pd.concat(frames, ignore_index=True)
    table["extreme"] = table["p_value"] < EXTREME_P
    return table


def predictive_check(
    program: ProgramLike,
    data: DataLike,
    num_samples: int = 100,
    seed: int | None = 0,
    statistics: Sequence[Statistic] = STATISTICS,
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
        Any of ``"mean"``, ``"variance"``, ``"zero_fraction"``.

    Returns
    -------
    PredictiveCheck
        ``.table``: columns ``source`` (``posterior``/``prior``), ``statistic``, ``column``, ``observed``,
        ``replicated_mean``, ``lower``/``upper`` (95% interval), ``p_value``, ``extreme`` (p < 0.01);
        ``.to_inference_data()`` for ``az.plot_ppc``.

    Examples
    --------
    >>> import torch
    >>> import ppl_vae as pv
    >>> vae = pv.LinearGaussianVAE(input_dim=3, latent_dim=1)
    >>> x = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
    >>> check = pv.predictive_check(vae, x, num_samples=20, seed=0)
    >>> sorted(set(check.table["statistic"]))
    ['mean', 'variance', 'zero_fraction']
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
    table = _table(observed, reps, list(statistics))
    return PredictiveCheck(table, observed, reps["posterior"], reps["prior"])
