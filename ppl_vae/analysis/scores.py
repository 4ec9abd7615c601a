r"""Outlier scores with their reliability: per-row log p(x_obs), its Monte Carlo s.e. and PSIS k-hat.

For each row, ``K`` draws from the guide give :math:`\mathrm{IW}_K = \log \frac1K \sum_k w_k`, the
importance-weighted estimate of :math:`\log p(x_o)` over the observed cells (the program masks the
rest), with the delta-method standard error
:math:`\widehat{\mathrm{se}} = \sqrt{1/\mathrm{ESS} - 1/K}`, :math:`\mathrm{ESS} = 1/\sum_k \tilde w_k^2`
(Owen, 2013, Sec. 9.2), and PSIS :math:`\hat k` (Vehtari et al., 2024).

A low log p(x_obs) marks a row the model finds unlikely. The rank is given **only to rows whose estimate
can be trusted**: :math:`\hat k \le 0.7` and s.e. at most ``max_se``. A row outside either bound is
flagged (``reliable`` False, ``reason`` says which) and left unranked: its IW value may be far below
the truth because the guide missed where the posterior is, which is also what an outlier looks like.

Rows with different numbers of observed cells are not on one scale (log p(x_obs) sums one term per
observed cell): ``n_observed`` is reported and the ranking warns when it varies.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from .._checks import check_finite_number
from ..diagnostics.psis import KHAT_BAD, psis_diagnostics
from ..estimators.importance import log_weights
from ..estimators.masked import training_off
from ..programs import as_program
from .cells import row_label, table_rows

__all__ = ["Scores", "score"]


@dataclass
class Scores:
    """Per-row outlier scores (see :func:`score`).

    Attributes:
        rows: indexed by the rows' labels, in their order: ``log_px`` (IW log p(x_obs), nats), ``se``,
            ``khat``, ``ess``, ``n_observed``, ``reliable``, ``reason`` (why not), ``rank`` (1 = least
            likely, among reliable rows; NA for flagged rows).
        summary: K, seed, thresholds, counts, missing fractions (JSON-able).
    """

    rows: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)

    def ranked(self) -> pd.DataFrame:
        """Reliable rows from least to most likely, then the flagged rows (unranked)."""
        good = self.rows[self.rows["reliable"]].sort_values("rank")
        return pd.concat([good, self.rows[~self.rows["reliable"]]])

    def top(self, n: int = 10) -> pd.DataFrame:
        """The ``n`` least likely rows among those whose score is reliable."""
        return self.ranked().head(min(n, int(self.rows["reliable"].sum())))


def _reasons(khat: np.ndarray, k_ok: np.ndarray, se: np.ndarray, max_se: float) -> np.ndarray:
    out = np.full(len(khat), "", dtype=object)
    high_k = ~k_ok  # inf k-hat counts as unreliable; NaN (every weight equal) is exact
    high_se = ~(se <= max_se)
    out[high_k] = [f"k-hat {k:.2f} > {KHAT_BAD}" for k in khat[high_k]]
    both = high_k & high_se
    out[high_se & ~high_k] = [f"se {s:.3g} > {max_se:g}" for s in se[high_se & ~high_k]]
    out[both] = [f"{r}; se {s:.3g} > {max_se:g}" for r, s in zip(out[both], se[both], strict=True)]
    return out


def score(
    model: Any,
    data: Any,
    num_samples: int = 1000,
    *,
    seed: int | None = 0,
    max_se: float = 0.25,
    schema: Any = None,
    split: Literal["train", "test"] = "test",
    data_plate: str | None = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> Scores:
    """Score rows by their log p(x_obs), with the s.e. and k-hat that say whether to trust each score.

    Args:
        model: a program (``.model``/``.guide``, e.g. a trained :class:`~ppl_vae.VAE`).
        data: a DataFrame (encoded by the run's schema: an unseen category or a missing column is one
            error naming it), a Dataset (its ``split``), a tensor/array with NaN, or ``(x_filled, mask)``
            (see :mod:`.cells`).
        num_samples: K importance samples per row.
        seed: the random stream. max_se: the largest s.e. (nats) a ranked row may have (0.25: the
            IW estimate's bias, about se^2/2, is then below 0.03 nats).
        schema: the table's schema when ``data`` is a DataFrame and the model carries none.
        split, data_plate, batch_size, progress: as in :func:`~ppl_vae.iw_log_likelihood`.

    Returns:
        :class:`Scores`; a warning says how many rows were flagged.

    Examples:
        >>> import pyro
        >>> import pyro.distributions as dist
        >>> import torch
        >>> import ppl_vae as pv
        >>> def model(x, mask):  # observes only the observed cells
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.Normal(x.new_zeros(len(x), 1), 1.0).to_event(1))
        ...         loc = z.expand(*z.shape[:-1], 3)
        ...         pyro.sample("x", dist.Normal(loc, 0.5).mask(mask).to_event(1), obs=x)
        >>> def guide(x, mask):
        ...     with pyro.plate("data", len(x)):
        ...         n = mask.sum(-1, keepdim=True)
        ...         loc = 4 * (x * mask).sum(-1, keepdim=True) / (1 + 4 * n)
        ...         pyro.sample("z", dist.Normal(loc, 1.5 * (1 + 4 * n).rsqrt()).to_event(1))
        >>> x = torch.tensor([[1.0, float("nan"), 1.2], [-0.5, -0.4, float("nan")]])  # NaN: missing
        >>> scores = pv.score(pv.Program(model, guide), x, num_samples=1000)
        >>> list(scores.rows.columns[:3]), len(scores.rows)
        (['log_px', 'se', 'khat'], 2)
    """
    max_se = check_finite_number(max_se, "max_se", positive=True)
    program = as_program(model, data_plate=data_plate)
    rows = table_rows(program, data, schema=schema, split=split)
    with training_off(program):
        lw = (
            log_weights(
                program,
                rows.batch,
                num_samples,
                seed=seed,
                batch_size=batch_size,
                progress=progress,
            )
            .double()
            .cpu()
        )
    iw = (lw.logsumexp(1) - math.log(num_samples)).numpy()
    ess = (1.0 / torch.softmax(lw, 1).square().sum(1)).numpy()
    se = np.sqrt(np.clip(1.0 / ess - 1.0 / num_samples, 0.0, None))
    psis = psis_diagnostics(lw)
    khat = psis.khat
    reason = _reasons(khat, psis.reliable(KHAT_BAD), se, max_se)
    reliable = reason == ""
    n_obs = (
        rows.mask.sum(1).cpu().numpy()
        if rows.mask is not None
        else np.full(len(iw), rows.x[0].numel(), dtype=np.int64)
    )
    table = pd.DataFrame(
        {
            "log_px": iw,
            "se": se,
            "khat": khat,
            "ess": ess,
            "n_observed": n_obs,
            "reliable": reliable,
            "reason": reason,
        },
        index=rows.frame.index,
    )
    order = np.argsort(np.where(reliable, iw, np.inf), kind="stable")
    rank = np.empty(len(iw))
    rank[order] = np.arange(1, len(iw) + 1)
    table["rank"] = pd.array(np.where(reliable, rank, np.nan), dtype="Int64")
    flagged = int((~reliable).sum())
    if flagged:
        first = table.index[int(np.flatnonzero(~reliable)[0])]
        warnings.warn(
            f"score: {flagged} of {len(table)} rows have an unreliable log p(x_obs) (k-hat > {KHAT_BAD} or "
            f"se > {max_se:g}; first: row {row_label(first)}, {reason[~reliable][0]}): flagged and left unranked; "
            "more num_samples or a better-trained guide may rescue them",
            UserWarning,
            stacklevel=2,
        )
    if len(np.unique(n_obs)) > 1:
        warnings.warn(
            f"score: rows have {n_obs.min()} to {n_obs.max()} observed cells; log p(x_obs) sums one term per "
            "observed cell, so rows with different n_observed are not on one scale: compare ranks within "
            "rows of equal n_observed",
            UserWarning,
            stacklevel=2,
        )
    summary = {
        "num_samples": num_samples,
        "seed": seed,
        "max_se": max_se,
        "khat_threshold": KHAT_BAD,
        "n": len(table),
        "n_flagged": flagged,
        "missing_fraction": rows.missing_fraction(),
    }
    return Scores(rows=table, summary=summary)
