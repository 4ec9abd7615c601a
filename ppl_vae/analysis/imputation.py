r"""``pv.impute``: missing cells filled in the user's terms, with honest uncertainty and its reliability.

The estimator is :mod:`ppl_vae.estimators.impute` (SNIS single imputation, SIR multiple imputations,
Mattei & Frellsen, 2019); this module takes the user's rows in (:mod:`.cells`) and gives DataFrames
back, observed cells exactly as given:

* **single imputation**: per cell the SNIS conditional mean :math:`E[x_j \mid x_o]` in the column's
  original units (real, positive, count: a count's mean stays a float), for a binary or categorical
  column its most probable level (the argmax of the SNIS level probabilities, kept in
  :attr:`Imputation.probabilities`);
* **multiple imputation**: ``M`` completed tables from SIR draws (counts as integers, levels as their
  values), for :meth:`Imputation.pool` (Rubin's rules);
* per imputed cell: the predictive s.d. (``sd``), the Monte Carlo s.e. of the imputed value (``se``),
  the importance-sampling ESS (``ess``); per row: IW log p(x_obs), PSIS k-hat and a ``reliable`` flag
  (k-hat <= 0.7), with a warning naming how many rows fail it.

**Which statistic, in original units.** With a table's schema, a real column's mean is affine in
model space (``shift + scale * E[y | z]``) and a count's is the likelihood's own mean; a positive column
(log-standardised) has :math:`E[x \mid z] = E[e^{\mathrm{shift} + \mathrm{scale}\,y} \mid z]`, which
depends on the likelihood's family, so it is averaged over one draw per particle (unbiased, noisier:
the s.e. says how much); level probabilities likewise from one draw of the code per particle.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from .._checks import check_int
from ..diagnostics.psis import KHAT_BAD, psis_diagnostics
from ..errors import UserError
from ..estimators.impute import CellImputation, impute_cells
from ..programs import as_program
from .cells import Rows, row_label, table_rows
from .rubin import Pooled, pool

__all__ = ["Imputation", "impute"]


@dataclass
class Imputation:
    """What :func:`impute` made (DataFrames indexed and named like the input).

    Attributes:
        completed: the single imputation: observed cells untouched, missing cells their SNIS value.
        tables: the ``M`` SIR-completed tables (empty without ``multiple``).
        sd, se, ess: per imputed cell the predictive s.d. (original units; NaN for levels), the Monte
            Carlo s.e. of the imputed value (of the chosen level's probability for levels) and the ESS;
            NaN where observed.
        probabilities: per binary/categorical column with imputed cells, their level probabilities.
        rows: per row ``n_missing``, ``log_px`` (IW log p(x_obs)), ``log_px_se``, ``khat``, ``ess``,
            ``reliable`` (k-hat <= 0.7).
        missing: bool, True where a cell was imputed.
        summary: K, M, seed, counts, missing fractions (JSON-able). cells: the model-space result.
    """

    completed: pd.DataFrame
    tables: list[pd.DataFrame]
    sd: pd.DataFrame
    se: pd.DataFrame
    ess: pd.DataFrame
    probabilities: dict[str, pd.DataFrame]
    rows: pd.DataFrame
    missing: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)
    cells: CellImputation | None = field(default=None, repr=False)

    def pool(self, statistic: Any, dof: float | None = None) -> Pooled:
        """Rubin's rules over :attr:`tables`: ``statistic(table) -> (estimate, variance)``."""
        if len(self.tables) < 2:
            raise UserError(
                "pooling needs multiple imputations: call impute(..., multiple=M) with M >= 2"
            )
        return pool(self.tables, statistic, dof)


# ============================================================================ features per column
def _to_original(col: Any, v: torch.Tensor) -> torch.Tensor:
    """:meth:`Column.to_original` in torch (model space -> original units)."""
    if col.transform == "standardize":
        return col.shift + col.scale * v
    if col.transform == "log-standardize":
        return torch.exp(col.shift + col.scale * v)
    return v


class SchemaFeatures:
    """A table's cells per particle in original units, and one-hot draws of levels (:class:`Features`).

    A numeric column's feature is ``E[x_j | z]`` in original units: the likelihood's mean (by the
    likelihood contract the mean in original units, expressed in model space) mapped back; its variance
    given z is the likelihood's (scaled, for an affine transform) or, where it has none or the transform
    is not affine, ``(x_jk - E[x_j | z_k])^2`` from the particle's draw (unbiased). A level's feature is
    the one-hot of the particle's drawn code, so its SNIS mean is the level probabilities."""

    draws = True

    def __init__(self, schema: Any) -> None:
        self.schema = schema
        self.layout: list[tuple[Any, slice]] = []
        cells, width = [], 0
        for j, col in enumerate(schema.columns):
            w = col.num_levels if col.levels is not None else 1
            self.layout.append((col, slice(width, width + w)))
            cells += [j] * w
            width += w
        self.cells = torch.tensor(cells, dtype=torch.long)

    def __call__(self, mean, var, sample):
        parts, within = [], []
        for j, (col, _) in enumerate(self.layout):
            f, v = self._column(j, col, mean, var, sample)
            parts.append(f)
            within.append(v)
        return torch.cat(parts, -1), torch.cat(within, -1)

    def _column(self, j, col, mean, var, sample):
        s = sample[..., j : j + 1]
        if col.levels is not None:
            codes = s[..., 0].round().long().clamp(0, col.num_levels - 1)
            f = torch.nn.functional.one_hot(codes, col.num_levels).to(sample.dtype)
            return f, torch.zeros_like(f)  # the draw's spread is in the between-particle term
        drawn = _to_original(col, s.double())
        if mean is None:
            return drawn, torch.zeros_like(drawn)
        f = _to_original(col, mean[..., j : j + 1].double())
        if var is not None and col.transform in ("identity", "standardize"):
            scale = col.scale if col.transform == "standardize" else 1.0
            return f, scale**2 * var[..., j : j + 1].double()
        return f, (drawn - f).square()


# ============================================================================ assembling frames
def _cell_frames(rows: Rows, out: CellImputation, features: SchemaFeatures | None):
    """Per-column imputed values (user terms), sd, se, ess as numpy arrays; level probabilities."""
    cols = rows.columns
    n = len(rows.frame)
    values, sd, se, ess = ({} for _ in range(4))
    probabilities: dict[str, pd.DataFrame] = {}
    missing = (  # None: every cell observed
        ~rows.mask.cpu().numpy() if rows.mask is not None else np.zeros((n, len(cols)), dtype=bool)
    )
    to_np = lambda t: t.detach().cpu().double().numpy()  # noqa: E731
    mean, f_sd, f_se, f_ess = (to_np(t).reshape(n, -1) for t in (out.mean, out.sd, out.se, out.ess))
    if features is None:
        for j, c in enumerate(cols):
            values[c], sd[c], se[c], ess[c] = mean[:, j], f_sd[:, j], f_se[:, j], f_ess[:, j]
        return values, sd, se, ess, probabilities
    for col, part in features.layout:
        if col.levels is None:
            values[col.name], sd[col.name] = mean[:, part.start], f_sd[:, part.start]
            se[col.name], ess[col.name] = f_se[:, part.start], f_ess[:, part.start]
            continue
        probs = mean[:, part]
        best = np.nan_to_num(probs, nan=-1.0).argmax(1)
        pick = np.arange(n)
        values[col.name] = np.array(col.levels, dtype=object)[best]
        sd[col.name] = np.full(n, np.nan)
        se[col.name] = f_se[:, part][pick, best]
        ess[col.name] = f_ess[:, part][pick, best]
        hole = missing[:, features.schema.position(col.name)]
        if hole.any():
            probabilities[col.name] = pd.DataFrame(
                probs[hole], index=rows.frame.index[hole], columns=list(col.levels)
            )
    return values, sd, se, ess, probabilities


def _fill(base: pd.DataFrame, rows: Rows, values: dict, missing: np.ndarray) -> pd.DataFrame:
    """``base`` with each modelled column's missing cells set from ``values`` (observed cells kept)."""
    out = base.copy()
    for j, c in enumerate(rows.columns):
        hole = missing[:, j]
        if not hole.any():
            continue
        original = out[c].dtype
        column = out[c].astype(object)
        column[hole] = np.asarray(values[c], dtype=object)[hole]
        column = column.infer_objects()
        if isinstance(original, pd.CategoricalDtype) and column.isin(original.categories).all():
            column = column.astype(original)
        elif _is_count(rows, c) and pd.api.types.is_numeric_dtype(column.dtype):
            values_c = column.to_numpy(dtype=float, na_value=np.nan)
            finite = values_c[np.isfinite(values_c)]
            if np.array_equal(
                finite, np.rint(finite)
            ):  # draws of a count: integers, as the user has
                column = column.astype("Int64")
        out[c] = column
    return out


def _is_count(rows: Rows, name: Any) -> bool:
    return rows.schema is not None and rows.schema[name].type == "count"


def _draw_values(rows: Rows, draw: torch.Tensor) -> dict:
    if rows.schema is None:
        d = draw.detach().cpu().double().numpy()
        return {c: d[:, j] for j, c in enumerate(rows.columns)}
    frame = rows.schema.to_frame(draw)
    return {c: frame[c].to_numpy(dtype=object) for c in rows.columns}


def _cell_frame(rows: Rows, values: dict, missing: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            c: np.where(missing[:, j], np.asarray(values[c], float), np.nan)
            for j, c in enumerate(rows.columns)
        },
        index=rows.frame.index,
    )
    return frame


# ============================================================================ the entry point
def impute(
    model: Any,
    data: Any,
    num_samples: int = 1000,
    multiple: int | None = None,
    *,
    seed: int | None = 0,
    schema: Any = None,
    split: Literal["train", "test"] = "test",
    site: str | None = None,
    data_plate: str | None = None,
) -> Imputation:
    """Fill the missing cells of ``data``: SNIS single imputation and (``multiple=M``) M SIR draws.

    Args:
        model: a program (``.model``/``.guide``) whose model masks its observed site, called as
            ``model(x, mask, ...)`` (the user guide's missing-values section shows the Pyro idiom).
        data: a DataFrame (encoded by ``schema`` or the model's; without one, numeric columns as they
            are), a Dataset (its ``split``), a tensor/array with NaN, or ``(x_filled, mask)``.
        num_samples: K importance samples per row. multiple: M completed tables (None: none).
        seed: the random stream (the caller's RNG is untouched).
        site: the observed site holding the rows (default: found by value). data_plate: its plate's name.

    Returns:
        :class:`Imputation`; a warning names the rows whose k-hat exceeds 0.7.

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
        >>> result = pv.impute(pv.Program(model, guide), x, num_samples=1000, seed=0)
        >>> result.completed.shape, result.summary["n_imputed_cells"]
        ((2, 3), 2)
        >>> float(result.completed.iloc[0, 0]), bool(result.completed.notna().all().all())
        (1.0, True)
    """
    check_int(num_samples, "num_samples", minimum=2)
    program = as_program(model, data_plate=data_plate)
    rows = table_rows(program, data, schema=schema, split=split)
    if rows.mask is None:
        raise UserError("nothing to impute: every cell of the data is observed")
    features = SchemaFeatures(rows.schema) if rows.schema is not None else None
    out = impute_cells(
        program,
        rows.batch[0],
        rows.batch[1],
        rows.batch[2:],
        num_samples,
        multiple,
        site=site,
        seed=seed,
        features=features,
    )
    missing = ~rows.mask.cpu().numpy()
    values, sd, se, ess, probabilities = _cell_frames(rows, out, features)
    completed = _fill(rows.frame, rows, values, missing)
    tables = [
        _fill(rows.frame, rows, _draw_values(rows, d), missing)
        for d in (out.draws if out.draws is not None else [])
    ]
    psis = psis_diagnostics(out.log_weights)
    khat = psis.khat
    row_table = pd.DataFrame(
        {
            "n_missing": missing.sum(1),
            "log_px": out.log_px.double().cpu().numpy(),
            "log_px_se": out.log_px_se.double().cpu().numpy(),
            "khat": khat,
            "ess": out.row_ess.double().cpu().numpy(),
            "reliable": psis.reliable(KHAT_BAD),
        },
        index=rows.frame.index,
    )
    _warn_unreliable(row_table)
    summary = {
        "num_samples": num_samples,
        "multiple": multiple or 0,
        "seed": seed,
        "n_rows": len(row_table),
        "n_imputed_cells": int(missing.sum()),
        "n_unreliable_rows": int((~row_table["reliable"]).sum()),
        "min_cell_ess": float(np.nanmin(out.ess.double().cpu().numpy())),
        "missing_fraction": rows.missing_fraction(),
        "site": out.site,
    }
    return Imputation(
        completed=completed,
        tables=tables,
        sd=_cell_frame(rows, sd, missing),
        se=_cell_frame(rows, se, missing),
        ess=_cell_frame(rows, ess, missing),
        probabilities=probabilities,
        rows=row_table,
        missing=pd.DataFrame(missing, index=rows.frame.index, columns=rows.columns),
        summary=summary,
        cells=out,
    )


def _warn_unreliable(rows: pd.DataFrame) -> None:
    bad = ~rows["reliable"].to_numpy()
    if not bad.any():
        return
    first = rows.index[int(np.flatnonzero(bad)[0])]
    warnings.warn(
        f"impute: k-hat > {KHAT_BAD} for {int(bad.sum())} of {len(rows)} rows (first: row {row_label(first)}, k-hat "
        f"{rows['khat'].iloc[int(np.flatnonzero(bad)[0])]:.2f}): their imputations rest on a few particles "
        "(rows['reliable'] is False); raise num_samples or train the guide longer",
        UserWarning,
        stacklevel=3,
    )
