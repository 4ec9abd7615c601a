r"""The schema inference rules, and the conversion of a table's cells to model space.

Each column of the table is looked at on its own, over every row (train and test: levels seen only in the
test rows are levels too); missing cells (NaN, ``None``, an empty CSV cell) are left out of every rule:

1. every cell missing: **left out** ("empty"); one distinct value: **left out** ("constant");
2. booleans, or exactly two distinct values (numbers or strings): **binary**, levels in sorted order
   (the second level is 1: ``no/yes``, ``0/1``, ``False/True``);
3. strings: a different string in every row: **ID-like**, left out, and the first such column (or one named
   ``id``/``*_id``) names the rows; at most ``max_levels`` (50) distinct strings: **categorical**; more, or
   numbers with a few strings among them (``"n/a?"``, ``"12kg"``): fits no type, one error naming the column,
   the offending rows and the remedy;
4. integers (every value integral): named like an ID (``id``, ``*_id``, ``index``) and unique: **ID-like**;
   at most ``max_int_levels`` (8) distinct values, each seen twice on average: **categorical** (a code:
   override with ``types={"visits": "count"}``); all >= 0: **count**; else **real**;
5. other numbers: all > 0, spanning at least a factor of 10 (max >= 10 min: below that a normal and a
   log-normal are the same shape), and a log-normal fits better than a normal (larger maximised
   log-likelihood, Jacobian included): **positive**; else **real**. Infinite values: one error.

``types={"name": type}`` overrides a rule (``real``, ``positive``, ``count``, ``binary``, ``categorical``, or
``ignore`` to leave a column out, ``id`` to name the rows by it); the values are then checked against the
type (negative or fractional counts, non-positive positives, more than two binary values: one error naming
the column and a few rows). Statistics (means, scales, fills, missing fractions) come from the train rows only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np

from ..errors import DataError
from .schema import COLUMN_TYPES, Column, Schema, finite_or_none

__all__ = ["MAX_INT_LEVELS", "MAX_LEVELS", "TYPE_CHOICES", "encode_frame", "infer_schema"]

#: Most distinct strings a categorical column may have before it "fits no type".
MAX_LEVELS = 50
#: Most distinct integers read as a categorical code rather than a count.
MAX_INT_LEVELS = 8
#: What ``types=`` accepts for a column.
TYPE_CHOICES: tuple[str, ...] = (*COLUMN_TYPES, "ignore", "id")
_ID_NAME = re.compile(r"^(id|.*[_ ]id|.*ID|index|row_?id)$", re.IGNORECASE)


# ============================================================================ helpers
def _rows(index: Any, where: np.ndarray, values: Any = None, limit: int = 3) -> str:
    """``rows 4, 9, 12 (values -1, 2.5, 'x')`` for the first offending positions."""
    pos = np.flatnonzero(where)
    labels = [str(index[p]) for p in pos[:limit]]
    more = f" and {len(pos) - limit} more" if len(pos) > limit else ""
    text = f"row{'s' if len(pos) > 1 else ''} {', '.join(labels)}{more}"
    if values is not None:
        shown = ", ".join(repr(_py(values[p])) for p in pos[:limit])
        text += f" (value{'s' if len(pos) > 1 else ''} {shown})"
    return text


def _py(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _is_numeric(series: Any) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(
        series.dtype
    )


def _is_bool(series: Any) -> bool:
    import pandas as pd

    if pd.api.types.is_bool_dtype(series.dtype):
        return True
    present = series.dropna()
    return len(present) > 0 and all(isinstance(v, (bool, np.bool_)) for v in present)


def _as_numbers(series: Any, name: str, what: str) -> np.ndarray:
    """Numbers (float64, NaN where missing) of a column that should hold numbers, or one error."""
    import pandas as pd

    if _is_numeric(series):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    missing = series.isna().to_numpy()
    nums = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~missing & np.isnan(nums)
    if bad.any():
        raw = series.to_numpy(dtype=object)
        raise DataError(
            f"{what}: column {name!r} must hold numbers; {int(bad.sum())} cell(s) do not: "
            f"{_rows(series.index, bad, raw)}: correct or empty them (an empty cell is missing), or "
            f"declare the column categorical (types={{{name!r}: 'categorical'}})"
        )
    return nums


def _lognormal_fits_better(v: np.ndarray) -> bool:
    """Maximised log-likelihood of a log-normal (with its Jacobian) above a normal's, for v > 0."""
    if v.size < 3:
        return False
    sd, logs = v.std(), np.log(v)
    lsd = logs.std()
    if sd <= 0 or lsd <= 0:
        return False
    normal = -v.size * (math.log(sd) + 0.5)
    lognormal = -v.size * (math.log(lsd) + 0.5) - logs.sum()
    return lognormal > normal


# ============================================================================ one column
def _infer_one(
    series: Any, name: str, max_levels: int, max_int_levels: int
) -> tuple[str, Any, str, str]:
    """``(type_or_drop, levels, kind, reason)``; type ``"drop"`` or ``"id"`` for a column left out."""
    present = series.dropna()
    n = len(present)
    if n == 0:
        return "drop", None, "", "empty (every cell missing)"
    distinct = present.unique()
    if len(distinct) == 1:
        return "drop", None, "", f"constant (every value is {_py(distinct[0])!r})"
    if _is_bool(series):
        return "binary", (False, True), "bool", "booleans"
    if not _is_numeric(series):
        return _infer_strings(series, present, name, max_levels)
    return _infer_numbers(series, present, name, max_int_levels)


def _finite(series: Any, present: Any, name: str) -> np.ndarray:
    """The column's observed numbers; an infinite one is an error naming the rows."""
    v = present.to_numpy(dtype=np.float64)
    if not np.isfinite(v).all():
        bad = np.isinf(series.to_numpy(dtype=np.float64, na_value=np.nan))
        raise DataError(
            f"column {name!r} has infinite values at {_rows(series.index, bad)}: replace them with "
            "finite numbers or empty cells (missing)"
        )
    return v


def _infer_numbers(
    series: Any, present: Any, name: str, max_int_levels: int
) -> tuple[str, Any, str, str]:
    """Rules 4 and 5 of the module docstring, for a numeric column with two or more distinct values."""
    v = _finite(series, present, name)
    distinct = present.unique()
    integral = bool(np.all(v == np.rint(v)))
    k, n = len(distinct), len(present)
    levels = tuple(sorted(int(d) if integral else _py(d) for d in distinct))
    kind = "int" if integral else "float"
    if integral and _ID_NAME.match(name) and k == len(series):
        return "id", None, kind, "ID-like (an integer per row, named like an ID)"
    if k == 2:
        return "binary", levels, kind, "two distinct values"
    if not integral:
        if v.min() > 0 and v.max() >= 10 * v.min() and _lognormal_fits_better(v):
            return "positive", None, kind, "positive, over a factor >= 10, a log-normal fits better"
        return "real", None, kind, "numbers"
    if k <= max_int_levels and 2 * k <= n:
        return "categorical", levels, kind, f"{k} distinct integers (a code)"
    if v.min() >= 0:
        return "count", None, kind, "non-negative integers"
    return "real", None, kind, "integers, some negative"


def _infer_strings(
    series: Any, present: Any, name: str, max_levels: int
) -> tuple[str, Any, str, str]:
    import pandas as pd

    nums = pd.to_numeric(present, errors="coerce")
    bad = nums.isna().to_numpy()
    if not bad.any():  # numbers stored as text (an object column): read as numbers
        return _infer_one(nums.astype(np.float64), name, max_levels, MAX_INT_LEVELS)
    text = present.astype(str)
    k = text.nunique()
    if 0.5 * len(present) <= (~bad).sum() and bad.sum() <= max(3, 0.05 * len(present)):
        raw = series.to_numpy(dtype=object)
        where = series.notna().to_numpy() & pd.to_numeric(series, errors="coerce").isna().to_numpy()
        raise DataError(
            f"column {name!r} holds numbers except {int(bad.sum())} cell(s): "
            f"{_rows(series.index, where, raw)}: correct or empty them (an empty cell is missing), or "
            f"declare it categorical (types={{{name!r}: 'categorical'}})"
        )
    if k == len(series) and len(series) >= 2:
        return "id", None, "str", "ID-like (a different string in every row)"
    if k == 2:
        return "binary", tuple(sorted(text.unique())), "str", "two distinct strings"
    if k <= max_levels:
        return "categorical", tuple(sorted(text.unique())), "str", f"{k} distinct strings"
    raise DataError(
        f"column {name!r} has {k} distinct strings in {len(present)} rows: too many levels for a "
        f"categorical (max_levels={max_levels}) and not one per row (an ID): leave it out "
        f"(types={{{name!r}: 'ignore'}}, --column-type {name}=ignore) or raise max_levels"
    )


def _declared_levels(series: Any, present: Any) -> tuple[tuple[Any, ...], str]:
    """The sorted levels and the kind of a column declared binary or categorical."""
    if _is_bool(series):
        return (False, True), "bool"
    if not _is_numeric(series):
        return tuple(sorted(present.astype(str).unique())), "str"
    levels = tuple(sorted(_py(d) for d in present.unique()))
    if all(float(v).is_integer() for v in levels):
        return tuple(int(v) for v in levels), "int"
    return levels, "float"


def _declared(series: Any, name: str, declared: str) -> tuple[str, Any, str, str]:
    """A type the user declared: its levels and kind; the values are checked in :func:`column_numbers`."""
    present = series.dropna()
    if declared in ("ignore", "id"):
        return ("drop" if declared == "ignore" else "id"), None, "", f"declared {declared!r}"
    if declared in ("binary", "categorical"):
        levels, kind = _declared_levels(series, present)
        if declared == "binary" and len(levels) > 2:
            raise DataError(
                f"column {name!r} is declared binary but has {len(levels)} distinct values "
                f"({', '.join(map(str, levels[:5]))}{', ...' if len(levels) > 5 else ''}): declare it "
                f"categorical (types={{{name!r}: 'categorical'}})"
            )
        if len(levels) < 2:
            raise DataError(
                f"column {name!r} is declared {declared} but has {len(levels)} distinct value(s): "
                f"leave it out (types={{{name!r}: 'ignore'}})"
            )
        return declared, levels, kind, f"declared {declared!r}"
    nums = _as_numbers(series, name, "the table")
    finite = nums[~np.isnan(nums)]
    kind = "int" if finite.size and np.all(finite == np.rint(finite)) else "float"
    return declared, None, kind, f"declared {declared!r}"


# ============================================================================ cells
def column_numbers(series: Any, c: Column | tuple[str, str, Any], what: str) -> np.ndarray:
    """A column's cells as original numbers (level codes for binary/categorical), NaN where missing;
    values outside the column's type or levels are one error naming the column and rows."""
    ctype: str
    if isinstance(c, Column):
        name, ctype, levels = c.name, c.type, c.levels
    else:
        name, ctype, levels = c
    if levels is not None:
        return _codes(series, name, levels, what)
    nums = _as_numbers(series, name, what)
    idx = series.index
    seen = ~np.isnan(nums)
    inf = seen & ~np.isfinite(nums)
    if inf.any():
        raise DataError(
            f"{what}: column {name!r} has infinite values at {_rows(idx, inf, nums)}: replace them "
            "with finite numbers or empty cells (missing)"
        )
    if ctype == "count":
        bad = seen & ((nums < 0) | (nums != np.rint(nums)))
        if bad.any():
            raise DataError(
                f"{what}: column {name!r} is a count, but {int(bad.sum())} value(s) are not non-negative "
                f"integers: {_rows(idx, bad, nums)}: correct them, or declare the column real "
                f"(types={{{name!r}: 'real'}})"
            )
    if ctype == "positive":
        bad = seen & (nums <= 0)
        if bad.any():
            raise DataError(
                f"{what}: column {name!r} is positive, but {int(bad.sum())} value(s) are <= 0: "
                f"{_rows(idx, bad, nums)}: correct them, or declare the column real "
                f"(types={{{name!r}: 'real'}})"
            )
    return nums


def _codes(series: Any, name: str, levels: Sequence[Any], what: str) -> np.ndarray:
    import pandas as pd

    missing = series.isna().to_numpy()
    if all(isinstance(v, (bool, np.bool_)) for v in levels):
        lookup: dict[Any, int] = {False: 0, True: 1, "False": 0, "True": 1, "false": 0, "true": 1}
        keys = series.to_numpy(dtype=object)
    elif all(isinstance(v, (int, float)) for v in levels):
        lookup = {float(v): i for i, v in enumerate(levels)}
        keys = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        keys = np.asarray(np.where(np.isnan(keys), None, keys), dtype=object)
        bad_num = ~missing & np.array([k is None for k in keys])
        if bad_num.any():
            raw = series.to_numpy(dtype=object)
            raise DataError(
                f"{what}: column {name!r} must hold one of its levels ({_show(levels)}); "
                f"{_rows(series.index, bad_num, raw)} do not"
            )
    else:
        lookup = {str(v): i for i, v in enumerate(levels)}
        keys = series.astype(object).where(~series.isna(), None).to_numpy(dtype=object)
        keys = np.array([None if k is None else str(k) for k in keys], dtype=object)
    codes = np.full(len(series), np.nan)
    unknown = np.zeros(len(series), dtype=bool)
    for i, k in enumerate(keys):
        if missing[i]:
            continue
        code = lookup.get(k)
        if code is None:
            unknown[i] = True
        else:
            codes[i] = code
    if unknown.any():
        raw = series.to_numpy(dtype=object)
        raise DataError(
            f"{what}: column {name!r} has value(s) that are not among its levels ({_show(levels)}): "
            f"{_rows(series.index, unknown, raw)}: map them to a known level or empty them (missing)"
        )
    return codes


def _show(levels: Sequence[Any]) -> str:
    shown = ", ".join(map(str, levels[:6]))
    return shown + (f", ... ({len(levels)} in all)" if len(levels) > 6 else "")


# ============================================================================ the table
def _check_types(frame: Any, types: Mapping[str, str] | None) -> dict[str, str]:
    if types is None:
        return {}
    if not isinstance(types, Mapping):
        raise DataError(
            f"types must be a mapping {{column: type}}, e.g. {{'visits': 'count'}}; got {type(types).__name__}"
        )
    names = [str(c) for c in frame.columns]
    out = {}
    for name, t in types.items():
        if str(name) not in names:
            raise DataError(
                f"types names column {name!r}, which the table does not have; its columns: "
                f"{', '.join(names)}"
            )
        if t not in TYPE_CHOICES:
            raise DataError(f"types[{name!r}] must be one of {', '.join(TYPE_CHOICES)}; got {t!r}")
        out[str(name)] = t
    return out


def infer_schema(
    frame: Any,
    types: Mapping[str, str] | None = None,
    *,
    train_rows: np.ndarray | None = None,
    standardize: bool = False,
    max_levels: int = MAX_LEVELS,
    max_int_levels: int = MAX_INT_LEVELS,
) -> Schema:
    """The :class:`~.schema.Schema` of a DataFrame by the rules of this module's docstring.

    Args:
        frame: a pandas DataFrame (column names become strings).
        types: ``{column: type}`` overrides (see :data:`TYPE_CHOICES`).
        train_rows: positions of the train rows (statistics, fills, missing fractions); default all rows.
        standardize: standardise real columns and log-standardise positive ones in model space.
        max_levels, max_int_levels: see the module docstring.

    Examples:
        >>> import pandas as pd
        >>> import ppl_vae as pv
        >>> frame = pd.DataFrame({"pid": ["a", "b", "c", "d"], "smoker": ["no", "yes", "no", "no"],
        ...                       "dose": [0.01, 2.5, 40.0, 0.3], "site": ["x"] * 4})
        >>> schema = pv.infer_schema(frame)
        >>> schema.types, schema.index, dict(schema.dropped)["site"]
        ({'smoker': 'binary', 'dose': 'positive'}, 'pid', "constant (every value is 'x')")
    """
    declared = _check_types(frame, types)
    train = np.arange(len(frame)) if train_rows is None else np.asarray(train_rows)
    columns: list[Column] = []
    dropped: list[tuple[str, str]] = []
    index: str | None = None
    ids: list[str] = []
    for label in frame.columns:
        name = str(label)
        series = frame[label]
        if name in declared:
            ctype, levels, kind, reason = _declared(series, name, declared[name])
        else:
            ctype, levels, kind, reason = _infer_one(series, name, max_levels, max_int_levels)
        if ctype == "id":
            ids.append(name)
            dropped.append((name, reason))
            continue
        if ctype == "drop":
            dropped.append((name, reason))
            continue
        nums = column_numbers(series, (name, ctype, levels), "the table")
        columns.append(_column(name, ctype, levels, kind, reason, nums[train], standardize))
    index = _index_column(frame, ids, declared)
    if index is not None:
        dropped = [(n, r + ("; names the rows" if n == index else "")) for n, r in dropped]
    return Schema(tuple(columns), tuple(dropped), index, bool(standardize))


def _index_column(frame: Any, ids: list[str], declared: dict[str, str]) -> str | None:
    """The ID column that names the rows: one declared ``id``, else one named like an ID, else the first."""
    chosen = [n for n in ids if declared.get(n) == "id"]
    if len(chosen) > 1:
        raise DataError(
            f"types declares {len(chosen)} ID columns ({', '.join(chosen)}); name the rows by one"
        )
    for name in chosen:
        col = frame[name]
        if col.isna().any() or col.nunique() != len(col):
            dup = col.duplicated(keep=False).to_numpy() | col.isna().to_numpy()
            raise DataError(
                f"column {name!r} is declared the ID but is not unique and complete: "
                f"{_rows(frame.index, dup, col.to_numpy(dtype=object))}: fix those rows or declare "
                f"it 'ignore'"
            )
    if chosen:
        return chosen[0]
    complete = [n for n in ids if not frame[n].isna().any() and frame[n].nunique() == len(frame)]
    named = [n for n in complete if _ID_NAME.match(n)]
    return named[0] if named else (complete[0] if complete else None)


def _log_stats(ctype: str, seen: np.ndarray) -> tuple[float | None, float | None]:
    """Mean and std of ``log x`` (positive) or ``log1p x`` (count) over the observed train cells."""
    if ctype not in ("positive", "count"):
        return None, None
    logs = np.log(seen) if ctype == "positive" else np.log1p(seen)
    return float(logs.mean()), float(logs.std()) or 1.0


def _transform(
    ctype: str,
    levels: Any,
    standardize: bool,
    seen: np.ndarray,
    mean: float,
    std: float,
    log_mean: float | None,
    log_std: float | None,
) -> tuple[str, float, float, float]:
    """``(transform, shift, scale, fill)`` of a column (the fill in model space)."""
    if levels is not None:
        codes, counts = np.unique(seen.astype(int), return_counts=True)
        return "levels", 0.0, 1.0, float(codes[np.argmax(counts)])
    if ctype == "real" and standardize:
        return "standardize", mean, std, 0.0
    if ctype == "positive" and standardize:
        return "log-standardize", cast(float, log_mean), cast(float, log_std), 0.0
    if ctype == "positive":
        return "identity", 0.0, 1.0, float(math.exp(cast(float, log_mean)))
    if ctype == "count":
        return "identity", 0.0, 1.0, float(np.rint(mean))
    return "identity", 0.0, 1.0, mean


def _column(
    name: str,
    ctype: str,
    levels: Any,
    kind: str,
    reason: str,
    train: np.ndarray,
    standardize: bool,
) -> Column:
    """A column's statistics, fill and transform from its train cells (original numbers / codes)."""
    seen = train[~np.isnan(train)]
    missing = float(np.isnan(train).mean()) if train.size else 0.0
    if seen.size == 0:
        raise DataError(
            f"column {name!r} has no observed value in the train rows: it cannot be modelled; leave "
            f"it out (types={{{name!r}: 'ignore'}}) or choose another split"
        )
    mean = float(seen.mean())
    std = float(seen.std()) or 1.0
    log_mean, log_std = _log_stats(ctype, seen)
    transform, shift, scale, fill = _transform(
        ctype, levels, standardize, seen, mean, std, log_mean, log_std
    )
    return Column(
        name=name,
        type=ctype,  # type: ignore[arg-type]
        transform=transform,  # type: ignore[arg-type]
        shift=shift,
        scale=scale,
        levels=None if levels is None else tuple(_py(v) for v in levels),
        kind=kind,  # type: ignore[arg-type]
        fill=fill,
        missing=missing,
        mean=finite_or_none(mean),
        std=finite_or_none(std),
        log_mean=finite_or_none(log_mean) if log_mean is not None else None,
        log_std=finite_or_none(log_std) if log_std is not None else None,
        reason=reason,
    )


def encode_frame(schema: Schema, frame: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """See :meth:`Schema.encode`."""
    import pandas as pd

    if isinstance(frame, Mapping) and not isinstance(frame, pd.DataFrame):
        frame = pd.DataFrame(frame)
    if not isinstance(frame, pd.DataFrame):
        raise DataError(
            f"{what} must be a pandas DataFrame with the columns {', '.join(schema.names)}; got {type(frame).__name__}"
        )
    frame = frame.rename(columns=str)
    absent = [n for n in schema.names if n not in frame.columns]
    if absent:
        raise DataError(
            f"{what} has no column(s) {', '.join(map(repr, absent))}, which the model was trained on; its "
            f"columns: {', '.join(map(str, frame.columns))}"
        )
    if len(frame) == 0:
        raise DataError(f"{what} has no rows")
    values = np.column_stack([c.to_model(column_numbers(frame[c.name], c, what)) for c in schema])
    mask = ~np.isnan(values)
    return values, mask
