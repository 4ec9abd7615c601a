"""A user's own data from a CSV or NumPy ``.npy`` file.

Named as ``"csv:PATH"``, ``"npy:PATH"``, or a path ending in ``.csv`` / ``.npy``. A CSV is a table
(:mod:`.table`): strings, counts, numbers and empty cells, with a schema inferred (:mod:`.infer`), a header
detected or given (:mod:`.read`), and a column named ``label`` (integers) taken as labels. An ``.npy`` file
holds one 2-D numeric array (images as rows, or any matrix; NaN = missing) and has no labels or schema.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..errors import DataError, MissingFileError
from .checks import as_float_matrix, check_options, reject_unused, split_indices
from .dataset import Dataset, build_dataset
from .read import Header
from .table import load_table


def parse_tabular_name(name: str) -> tuple[str, Path] | None:
    """``("csv" | "npy", path)`` when ``name`` names a file, else None."""
    for fmt in ("csv", "npy"):
        if name.startswith(f"{fmt}:"):
            return fmt, Path(name[len(fmt) + 1 :]).expanduser()
        if name.lower().endswith(f".{fmt}"):
            return fmt, Path(name).expanduser()
    return None


def read_npy(path: Path) -> np.ndarray:
    """Read one numeric array from an ``.npy`` file (no pickles)."""
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise DataError(f"{path}: cannot read as a numeric .npy array ({err})") from err
    if not isinstance(arr, np.ndarray):
        raise DataError(f"{path}: holds several arrays (.npz?); save one 2-D array with np.save")
    return arr


def load_tabular(
    name: str,
    *,
    binarize: str | None = None,
    seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
    test_fraction: float = 0.2,
    standardize: bool = False,
    n_samples: int | None = None,
    noise: float | None = None,
    types: Mapping[str, str] | None = None,
    header: Header = "auto",
) -> Dataset:
    """Load ``"csv:PATH"``, ``"npy:PATH"`` or a ``.csv`` / ``.npy`` path.

    Seeded random split (``test_fraction`` to test); ``n_samples`` keeps the first n train
    rows; ``standardize=True`` z-scores both splits with the train mean/std (a CSV's positive
    columns: their logs), recorded in ``meta.mean`` / ``meta.std``. Kind ``"points2d"`` when D == 2,
    else ``"tabular"``. ``types`` and ``header``: a CSV's column types and header (:mod:`.table`).
    """
    parsed = parse_tabular_name(name)
    if parsed is None:
        raise DataError(f"{name!r} is not 'csv:PATH', 'npy:PATH' or a .csv/.npy path")
    fmt, path = parsed
    check_options(
        binarize=binarize,
        seed=seed,
        test_fraction=test_fraction,
        standardize=standardize,
        n_samples=n_samples,
        noise=noise,
    )
    reject_unused(name, data_dir=data_dir, noise=noise)
    if not path.is_file():
        raise MissingFileError(
            f"{name!r}: no file at {path} (resolved to {path.resolve()}); check the path"
        )
    if fmt == "csv":
        return load_table(
            path,
            name=name,
            source=str(path.resolve()),
            types=types,
            header=header,
            binarize=binarize,
            seed=seed,
            test_fraction=test_fraction,
            standardize=standardize,
            n_samples=n_samples,
        )
    if types is not None or header != "auto":
        raise DataError(
            f"{name!r}: types= and header= are for tables (a CSV or a DataFrame); an .npy file is one "
            "numeric matrix"
        )
    raw, labels = read_npy(path), None
    x = as_float_matrix(raw, str(path), copy=False, allow_nan=True)  # validate before splitting
    idx_train, idx_test = split_indices(len(x), test_fraction, seed)
    if n_samples is not None:
        if n_samples > len(idx_train):
            raise DataError(
                f"n_samples={n_samples} exceeds the {len(idx_train)} train rows of {path}"
            )
        idx_train = idx_train[:n_samples]
    return build_dataset(
        name=name,
        kind="points2d" if x.shape[1] == 2 else "tabular",
        source=str(path.resolve()),
        x_train=x[idx_train],
        x_test=x[idx_test],
        y_train=None if labels is None else labels[idx_train],
        y_test=None if labels is None else labels[idx_test],
        image_shape=None,
        binarize=binarize,
        seed=seed,
        test_fraction=test_fraction,
        standardize=standardize,
        n_samples=n_samples,
        noise=noise,
        index=(np.asarray(idx_train, dtype=np.int64), np.asarray(idx_test, dtype=np.int64)),
    )
