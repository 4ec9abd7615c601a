r"""A table's schema: each column's type, its levels, its transform, and the way back to the user's terms.

A :class:`Schema` is what :func:`~ppl_vae.data.load_dataset` infers from a CSV, a DataFrame or an array
(:mod:`.infer` holds the rules) and records in ``Dataset.meta.schema`` (JSON, through :meth:`Schema.to_dict`).
It maps between three representations of the same cells:

* **original** values, in the user's terms: numbers in their units, categories as their strings;
* **model space**, the float32 tensors the programs see (``Dataset.train``/``.test``), one column per kept
  column (``D = len(schema)``)::

      real         (x - shift) / scale              shift, scale: train mean/std when standardised, else 0, 1
      positive     (log x - shift) / scale           when standardised (log first), else x itself
      count        x                                 non-negative integers, as they are
      binary       0 / 1                             the index of the value in ``levels`` (2 levels)
      categorical  0 .. K-1                          the index of the value in ``levels``

* **mask**: ``True`` where a cell was observed. A missing cell (NaN, an empty CSV cell, ``None``) is filled in
  model space with :attr:`Column.fill` (the train mean, for counts its rounding, for levels the most frequent
  one), so the tensors stay finite; the mask says which cells the likelihoods may score.

Interface for other modules (kept stable):

* ``schema.encode(frame) -> (values, mask)``: a DataFrame with the schema's columns (extra columns ignored)
  -> model-space float64 ``(N, D)`` with NaN where missing, and the ``(N, D)`` bool mask. An unseen category,
  a missing column or a value outside the column's type is one :class:`~ppl_vae.errors.DataError` naming it.
* ``schema.tensors(frame) -> (x, mask)``: the same as float32 tensors, filled; ``mask`` None when complete.
* ``schema.to_original(x) / schema.to_model(values)``: model space <-> original numbers (levels stay codes).
* ``schema.to_frame(x, mask=None, observed=None, index=None)``: a model-space tensor -> a DataFrame with the
  original column names, categories as their strings, counts as integers (when integral). With
  ``observed=(frame_or_values, mask)`` the observed cells are copied from it untouched (imputed tables).
* ``schema.stats(name)``: the train statistics the likelihoods standardise with (``mean``, ``std``,
  ``log_mean``, ``log_std``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import torch

from ..errors import DataError

__all__ = ["COLUMN_TYPES", "Column", "ColumnType", "Schema"]

ColumnType = Literal["real", "positive", "count", "binary", "categorical"]
COLUMN_TYPES: tuple[ColumnType, ...] = get_args(ColumnType)
Transform = Literal["identity", "standardize", "log-standardize", "levels"]
#: How values are written back: float, int, str, bool (the column's original dtype family).
Kind = Literal["float", "int", "str", "bool"]


def _level(value: Any) -> Any:
    """A level as a JSON type (numpy scalars become Python ones)."""
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass(frozen=True)
class Column:
    """One kept column of a table.

    Attributes:
        name: the column's name in the user's table.
        type: ``real``, ``positive``, ``count``, ``binary`` or ``categorical``.
        transform: ``identity``, ``standardize`` (real), ``log-standardize`` (positive) or ``levels``
            (binary, categorical: the value's index in :attr:`levels`).
        shift, scale: model value ``(t(x) - shift) / scale`` with ``t`` the identity or the log.
        levels: the values of a binary or categorical column in code order (strings, numbers or booleans).
        kind: how values are written back (``float``, ``int``, ``str``, ``bool``).
        fill: the model-space value of a missing cell.
        missing: the fraction of train cells missing.
        mean, std: train mean and (population) std of the original values (numeric columns).
        log_mean, log_std: of ``log x`` (positive) or ``log1p x`` (count); None otherwise.
        reason: one line on why the column got its type (what :func:`~.infer.infer_schema` saw).
    """

    name: str
    type: ColumnType
    transform: Transform = "identity"
    shift: float = 0.0
    scale: float = 1.0
    levels: tuple[Any, ...] | None = None
    kind: Kind = "float"
    fill: float = 0.0
    missing: float = 0.0
    mean: float | None = None
    std: float | None = None
    log_mean: float | None = None
    log_std: float | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        if self.type not in COLUMN_TYPES:
            raise DataError(
                f"column {self.name!r}: type must be one of {', '.join(COLUMN_TYPES)}; got {self.type!r}"
            )
        if (self.type in ("binary", "categorical")) != (self.levels is not None):
            raise DataError(f"column {self.name!r}: levels are for binary/categorical columns only")

    @property
    def num_levels(self) -> int:
        return 0 if self.levels is None else len(self.levels)

    def describe(self) -> str:
        """``type`` with its levels or transform, e.g. ``categorical (3 levels: a, b, c)``."""
        if self.levels is not None:
            shown = ", ".join(str(v) for v in self.levels[:4])
            more = ", ..." if len(self.levels) > 4 else ""
            return f"{self.type} ({len(self.levels)} levels: {shown}{more})"
        if self.transform == "identity":
            return self.type
        return f"{self.type} ({self.transform})"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if self.levels is not None:
            d["levels"] = [_level(v) for v in self.levels]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Column:
        d = dict(d)
        if d.get("levels") is not None:
            d["levels"] = tuple(d["levels"])
        return cls(**d)

    # ------------------------------------------------------------------ values
    def to_model(self, values: np.ndarray) -> np.ndarray:
        """Original numbers (codes for levels) -> model space, float64; NaN stays NaN."""
        v = np.asarray(values, dtype=np.float64)
        if self.transform == "standardize":
            return (v - self.shift) / self.scale
        if self.transform == "log-standardize":
            with np.errstate(divide="ignore", invalid="ignore"):
                return (np.log(v) - self.shift) / self.scale
        return v

    def to_original(self, values: np.ndarray) -> np.ndarray:
        """Model space -> original numbers (codes for levels), float64."""
        v = np.asarray(values, dtype=np.float64)
        if self.transform == "standardize":
            return v * self.scale + self.shift
        if self.transform == "log-standardize":
            return np.exp(v * self.scale + self.shift)
        return v


@dataclass(frozen=True)
class Schema:
    """The kept columns of a table, the ones left out (with why), and the column that names the rows.

    Attributes:
        columns: the kept :class:`Column` s, in table order (model-space column j is ``columns[j]``).
        dropped: ``(name, reason)`` of the columns left out (ID-like, constant, empty, asked to ignore).
        index: the name of the ID column whose values label the rows, or None (row numbers).
        standardize: whether real/positive columns were standardised in model space.

    Examples:
        >>> import pandas as pd
        >>> import ppl_vae as pv
        >>> frame = pd.DataFrame({"region": ["n", "s", "s", "e", "n", "e"], "dose": [0.1, 2.0, 0.5, 30, 4.0, 9.0]})
        >>> data = pv.load_dataset(frame, test_fraction=0.34)
        >>> schema = data.schema
        >>> schema.names, schema["region"].levels
        (('region', 'dose'), ('e', 'n', 's'))
        >>> schema.to_frame(data.train)["region"].tolist() == frame.loc[data.train_index, "region"].tolist()
        True
    """

    columns: tuple[Column, ...]
    dropped: tuple[tuple[str, str], ...] = ()
    index: str | None = None
    standardize: bool = False
    _by_name: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.columns:
            left = "; ".join(f"{n}: {r}" for n, r in self.dropped) or "none"
            raise DataError(f"the table has no column left to model (left out: {left})")
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise DataError(f"the table has duplicate column names {dup}: rename them")
        self._by_name.update({n: j for j, n in enumerate(names)})

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.columns)

    def __iter__(self) -> Iterator[Column]:
        return iter(self.columns)

    def __getitem__(self, name: str) -> Column:
        return self.columns[self.position(name)]

    def position(self, name: str) -> int:
        """The model-space column of ``name``; an unknown name is one error listing the columns."""
        try:
            return self._by_name[name]
        except KeyError:
            raise DataError(
                f"no column {name!r} in the table's schema; its columns: {', '.join(self.names)}"
            ) from None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def types(self) -> dict[str, ColumnType]:
        return {c.name: c.type for c in self.columns}

    @property
    def has_missing(self) -> bool:
        return any(c.missing > 0 for c in self.columns)

    def stats(self, name: str) -> dict[str, float | None]:
        c = self[name]
        return {"mean": c.mean, "std": c.std, "log_mean": c.log_mean, "log_std": c.log_std}

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": [c.to_dict() for c in self.columns],
            "dropped": [list(d) for d in self.dropped],
            "index": self.index,
            "standardize": self.standardize,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any] | Schema) -> Schema:
        if isinstance(d, Schema):
            return d
        return cls(
            columns=tuple(Column.from_dict(c) for c in d["columns"]),
            dropped=tuple((str(n), str(r)) for n, r in d.get("dropped", ())),
            index=d.get("index"),
            standardize=bool(d.get("standardize", False)),
        )

    def same_columns(self, other: Schema) -> bool:
        """Same names, types and levels (statistics may differ)."""
        key = [(c.name, c.type, c.levels) for c in self.columns]
        return key == [(c.name, c.type, c.levels) for c in other.columns]

    # ------------------------------------------------------------------ text
    def describe(self) -> str:
        """The schema as a few aligned lines (what the CLI prints once and ``repr`` shows)."""
        width = max(len(c.name) for c in self.columns)
        lines = []
        for c in self.columns:
            miss = f", {c.missing:.{1 if c.missing < 0.1 else 0}%} missing" if c.missing > 0 else ""
            lines.append(f"  {c.name:<{width}}  {c.describe()}{miss}")
        for name, reason in self.dropped:
            lines.append(f"  {name:<{width}}  left out: {reason}")
        head = f"{len(self.columns)} columns" + (
            f" ({len(self.dropped)} left out)" if self.dropped else ""
        )
        rows = f"; rows named by {self.index!r}" if self.index else ""
        return f"{head}{rows}:\n" + "\n".join(lines)

    def __repr__(self) -> str:
        return "Schema(" + ", ".join(f"{c.name}: {c.describe()}" for c in self.columns) + ")"

    # ------------------------------------------------------------------ conversions
    def to_model(self, values: np.ndarray) -> np.ndarray:
        """``(..., D)`` original numbers (codes for levels) -> model space, float64."""
        v = np.asarray(values, dtype=np.float64)
        return np.stack([c.to_model(v[..., j]) for j, c in enumerate(self.columns)], axis=-1)

    def to_original(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """``(..., D)`` model space -> original numbers (codes for levels), float64."""
        v = _numpy(x)
        self._check_width(v, "x")
        return np.stack([c.to_original(v[..., j]) for j, c in enumerate(self.columns)], axis=-1)

    def encode(self, frame: Any, what: str = "the data") -> tuple[np.ndarray, np.ndarray]:
        """A DataFrame (or a mapping of columns) -> model space float64 ``(N, D)`` (NaN where missing) and the
        bool mask. Values are checked against each column's type and levels."""
        from .infer import encode_frame

        return encode_frame(self, frame, what)

    def tensors(
        self, frame: Any, what: str = "the data"
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`encode` as float32 tensors, missing cells filled with :attr:`Column.fill`; the mask is
        None when every cell is observed."""
        values, mask = self.encode(frame, what)
        filled = np.where(mask, values, self.fills()[None, :])
        x = torch.from_numpy(filled.astype(np.float32))
        return x, (None if bool(mask.all()) else torch.from_numpy(mask))

    def fills(self) -> np.ndarray:
        return np.array([c.fill for c in self.columns], dtype=np.float64)

    def to_frame(
        self,
        x: torch.Tensor | np.ndarray,
        mask: torch.Tensor | np.ndarray | None = None,
        *,
        observed: tuple[Any, Any] | None = None,
        index: Sequence[Any] | None = None,
    ) -> Any:
        """A model-space ``(N, D)`` tensor as a DataFrame in the user's terms.

        Numbers in original units; counts as integers when every value is integral (draws; a mean
        stays a float); binary/categorical values as their levels (a code is rounded to the nearest level,
        so a probability of a binary column becomes its more probable level). ``mask``: cells where it is
        False are written as missing (NA). ``observed=(values, mask)``: model-space values whose observed
        cells (mask True) replace those of ``x`` exactly (an imputed table keeps what was observed).
        ``index``: row labels (e.g. ``dataset.test_index``).
        """
        import pandas as pd

        v = _numpy(x).astype(np.float64, copy=True)
        self._check_width(v, "x")
        if v.ndim != 2:
            raise DataError(f"to_frame needs (N, {len(self)}) values; got shape {v.shape}")
        if observed is not None:
            obs_values, obs_mask = (_numpy(a) for a in observed)
            obs_mask = obs_mask.astype(bool)
            if obs_values.shape != v.shape or obs_mask.shape != v.shape:
                raise DataError(
                    f"to_frame: observed values {obs_values.shape} and mask {obs_mask.shape} must "
                    f"match x {v.shape}"
                )
            v = np.where(obs_mask, obs_values, v)
        keep = None if mask is None else _numpy(mask).astype(bool)
        data = {
            c.name: _column_out(c, v[:, j], None if keep is None else keep[:, j])
            for j, c in enumerate(self.columns)
        }
        frame = pd.DataFrame(data)
        if index is not None:
            frame.index = pd.Index(index, name=self.index or getattr(index, "name", None) or "row")
        return frame

    def _check_width(self, v: np.ndarray, what: str) -> None:
        if v.ndim < 1 or v.shape[-1] != len(self):
            raise DataError(
                f"{what} has {v.shape[-1] if v.ndim else 0} columns but the schema has {len(self)} "
                f"({', '.join(self.names)})"
            )


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return (
            x.detach().cpu().double().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
        )
    return np.asarray(x)


def _column_out(c: Column, model: np.ndarray, keep: np.ndarray | None) -> Any:
    """One column of :meth:`Schema.to_frame`: model values -> a pandas Series-like array in the user's terms."""
    import pandas as pd

    values = c.to_original(model)
    missing = ~np.isfinite(values) if keep is None else (~keep | ~np.isfinite(values))
    if c.levels is not None:
        codes = np.clip(np.rint(np.nan_to_num(values)), 0, len(c.levels) - 1).astype(int)
        out = pd.Series([c.levels[k] for k in codes], dtype=_level_dtype(c))
        out[missing] = pd.NA if c.kind != "float" else np.nan
        return out.array
    if c.type == "count":
        values = np.maximum(values, 0.0)
        finite = values[~missing]
        if finite.size and np.all(finite == np.rint(finite)) and np.all(finite < 2**53):
            out = pd.array(np.rint(np.nan_to_num(values)).astype(np.int64), dtype="Int64")
            out[missing] = pd.NA
            return out
    if c.kind == "int" and c.type == "real":
        finite = values[~missing]
        if finite.size and np.all(finite == np.rint(finite)):
            out = pd.array(np.rint(np.nan_to_num(values)).astype(np.int64), dtype="Int64")
            out[missing] = pd.NA
            return out
    values = values.copy()
    values[missing] = np.nan
    return values


def _level_dtype(c: Column) -> Any:
    if c.kind == "str":
        return "object"
    if c.kind == "bool":
        return "boolean"
    if c.kind == "int":
        return "Int64"
    return "float64"


def finite_or_none(value: float) -> float | None:
    """A statistic as a JSON number, None when undefined."""
    return None if value is None or not math.isfinite(value) else float(value)
