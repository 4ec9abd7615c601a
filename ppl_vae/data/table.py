"""A statistician's table -> a :class:`~ppl_vae.data.Dataset` with a schema, masks and row labels.

:func:`load_table` takes a pandas DataFrame, a 2-D NumPy array or a CSV path (read by
:func:`~.read.read_csv_frame`) and:

1. takes a column named ``label`` (integers) as labels, as numeric CSVs always did;
2. splits the rows (seeded, ``test_fraction`` to test; ``n_samples`` keeps the first n train rows);
3. infers the :class:`~.schema.Schema` (:mod:`.infer`: types over all rows, statistics over train rows);
4. encodes every kept column into model space, fills missing cells with the schema's fills and keeps the
   masks (a row with nothing observed is one error naming it by its label);
5. labels the rows: the ID column the schema found, else the frame's index (a CSV's data-row numbers).

``Dataset.meta.schema`` records the schema, ``meta.load_options`` the ``types``/``header`` that rebuild it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .checks import check_options, split_indices
from .dataset import Dataset, build_dataset
from .infer import MAX_LEVELS, infer_schema
from .read import Header, read_csv_frame
from .schema import Schema

__all__ = ["LABEL_COLUMN", "ScaleWarning", "frame_of", "load_table", "scale_warning"]

LABEL_COLUMN = "label"
#: Ratio of column scales (std of real columns in their units) above which a warning names them.
SCALE_RATIO = 1e3


def frame_of(data: Any, what: str = "data") -> Any:
    """A DataFrame from a DataFrame (copied, string column names) or a 2-D array (columns ``x0, x1, ...``)."""
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        frame = data.copy()
        frame.columns = [str(c) for c in frame.columns]
        if isinstance(frame.index, pd.RangeIndex) and frame.index.name is None:
            frame.index = frame.index.rename("row")
        return frame
    arr = np.asarray(data)
    if arr.ndim != 2:
        raise DataError(f"{what}: a table needs a 2-D (rows, columns) array; got shape {arr.shape}")
    if arr.dtype.kind not in "biufOUS":
        raise DataError(f"{what}: cannot read an array of dtype {arr.dtype} as a table")
    frame = pd.DataFrame(arr, columns=[f"x{j}" for j in range(arr.shape[1])])
    frame.index = frame.index.rename("row")
    return frame


class ScaleWarning(UserWarning):
    """Real columns whose raw scales differ by orders of magnitude, not standardised (see :func:`scale_warning`)."""


def scale_warning(schema: Schema) -> str | None:
    """A warning when real columns' scales differ by orders of magnitude and were not standardised."""
    if schema.standardize:
        return None
    scales = [(c.std, c.name) for c in schema if c.type in ("real", "positive") and c.std]
    if len(scales) < 2:
        return None
    lo, hi = min(scales), max(scales)
    if hi[0] / lo[0] < SCALE_RATIO:
        return None
    return (
        f"the table's columns differ in scale by {hi[0] / lo[0]:.0e} (std {lo[0]:.3g} for {lo[1]!r}, "
        f"{hi[0]:.3g} for {hi[1]!r}): the built-in table likelihoods standardise for their networks and "
        "report log p(x) in your units, but a plain likelihood or your own program sees the raw values: "
        "pass standardize=True (--standardize)"
    )


def _labels(frame: Any, name: str) -> tuple[Any, np.ndarray | None]:
    if LABEL_COLUMN not in frame.columns:
        return frame, None
    labels = frame.pop(LABEL_COLUMN)
    if labels.isna().any():
        raise DataError(
            f"{name}: the {LABEL_COLUMN!r} column has missing values (rows "
            f"{', '.join(map(str, labels.index[labels.isna()][:5]))}): labels must be complete integers; "
            "fill them or rename the column to model it"
        )
    return frame, labels.to_numpy()


def load_table(
    data: Any,
    *,
    name: str,
    source: str,
    types: Mapping[str, str] | None = None,
    header: Header = "auto",
    binarize: str | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    standardize: bool = False,
    n_samples: int | None = None,
    max_levels: int = MAX_LEVELS,
) -> Dataset:
    """Load a table (see the module docstring) into a :class:`Dataset` with ``meta.schema``.

    Args:
        data: a pandas DataFrame, a 2-D array, or a :class:`~pathlib.Path` to a CSV.
        name, source: recorded in the metadata (``"csv:PATH"`` and the resolved path, ``"dataframe"``, ...).
        types: ``{column: type}`` overrides of the inferred types (``real``, ``positive``, ``count``,
            ``binary``, ``categorical``, ``ignore``, ``id``).
        header: for a CSV: ``True``, ``False`` or ``"auto"`` (see :mod:`.read`).
        standardize: standardise real columns and log-standardise positive ones in model space.
        binarize, seed, test_fraction, n_samples: as for :func:`~ppl_vae.data.load_dataset`.
        max_levels: most distinct strings of a categorical column.
    """
    check_options(
        binarize=binarize,
        seed=seed,
        test_fraction=test_fraction,
        standardize=standardize,
        n_samples=n_samples,
        noise=None,
    )
    frame = read_csv_frame(data, header) if isinstance(data, Path) else frame_of(data, name)
    frame, labels = _labels(frame, name)
    if frame.shape[1] == 0:
        raise DataError(f"{name}: the table has no columns besides {LABEL_COLUMN!r}")
    idx_train, idx_test = _split(len(frame), name, test_fraction, seed, n_samples)
    schema = infer_schema(
        frame, types, train_rows=idx_train, standardize=standardize, max_levels=max_levels
    )
    message = scale_warning(schema)
    if message is not None:
        warnings.warn(f"{name}: {message}", ScaleWarning, stacklevel=3)
    values, _ = schema.encode(frame, name)
    row_labels = _row_labels(frame, schema)
    options = {
        **({"types": dict(types)} if types else {}),
        **({"header": header} if header != "auto" else {}),
    }
    shift_scale = ([c.shift for c in schema], [c.scale for c in schema]) if standardize else None
    return build_dataset(
        name=name,
        kind="points2d" if len(schema) == 2 else "tabular",
        source=source,
        x_train=values[idx_train],
        x_test=values[idx_test],
        y_train=None if labels is None else labels[idx_train],
        y_test=None if labels is None else labels[idx_test],
        binarize=binarize,
        seed=seed,
        test_fraction=test_fraction,
        standardize=standardize,
        n_samples=n_samples,
        fill=schema.fills(),
        schema=schema.to_dict(),
        index=(row_labels[idx_train], row_labels[idx_test]),
        load_options=options or None,
        shift_scale=shift_scale,
    )


def _split(
    n: int, name: str, test_fraction: float, seed: int, n_samples: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """The seeded train/test row indices; ``n_samples`` keeps the first train rows."""
    idx_train, idx_test = split_indices(n, test_fraction, seed)
    if n_samples is not None:
        if n_samples > len(idx_train):
            raise DataError(
                f"n_samples={n_samples} exceeds the {len(idx_train)} train rows of {name}"
            )
        idx_train = idx_train[:n_samples]
    return idx_train, idx_test


def _row_labels(frame: Any, schema: Schema) -> Any:
    """The rows' labels: the ID column's values, else the frame's own index (named ``row``)."""
    import pandas as pd

    if schema.index is not None:
        return pd.Index(frame[schema.index].to_numpy(), name=schema.index)
    return pd.Index(frame.index, name=frame.index.name or "row")
