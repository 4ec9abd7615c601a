"""Datasets as torch tensors with metadata.

>>> from ppl_vae.data import load_dataset
>>> data = load_dataset("digits", binarize="dynamic", seed=0)
>>> data.train.shape, data.test.shape, data.meta.image_shape
(torch.Size([1437, 64]), torch.Size([360, 64]), (8, 8))

Names: ``three_clusters`` and ``two_moons`` (2-D points), ``digits`` (scikit-learn's 8x8
digits, the default), ``mnist`` and ``fashion_mnist`` (IDX files on disk, see
:func:`download_mnist`), and a user's file as ``"csv:PATH"`` / ``"npy:PATH"``.

A table -- a CSV, a pandas DataFrame or a 2-D NumPy array passed as ``data`` -- gets a schema
(``Dataset.schema``: each column ``real``, ``positive``, ``count``, ``binary`` or ``categorical``; rules in
:mod:`ppl_vae.data.infer`), masks for its missing cells and its rows' labels (:mod:`ppl_vae.data.dataset`).

>>> import pandas as pd
>>> frame = pd.DataFrame({"id": ["a", "b", "c", "d", "e"], "smoker": ["no", "yes", "no", None, "yes"],
...                       "visits": [0, 3, 12, 9, 14], "dose": [0.1, 2.5, 0.3, 1.2, 0.7]})
>>> data = load_dataset(frame, test_fraction=0.4)
>>> data.schema.types
{'smoker': 'binary', 'visits': 'count', 'dose': 'positive'}
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import DataError
from ..registry import REGISTRY, register
from .builtin import digits, three_clusters, two_moons
from .dataset import Dataset, DatasetMeta
from .idx import download_mnist, fashion_mnist, mnist, read_idx
from .infer import infer_schema
from .missing import split_missing
from .read import Header
from .schema import COLUMN_TYPES, Column, Schema
from .table import load_table
from .tabular import load_tabular, parse_tabular_name

__all__ = [
    "COLUMN_TYPES",
    "DATASETS",
    "Column",
    "Dataset",
    "DatasetMeta",
    "Schema",
    "download_mnist",
    "infer_schema",
    "load_dataset",
    "read_idx",
    "split_missing",
]

register(
    "dataset",
    "three_clusters",
    three_clusters,
    doc="2-D points: three Gaussian clusters (generated, seeded)",
    images=False,
    idx=False,
)
register(
    "dataset",
    "two_moons",
    two_moons,
    doc="2-D points: scikit-learn's two interleaving half circles (generated, seeded)",
    images=False,
    idx=False,
)
register(
    "dataset",
    "digits",
    digits,
    doc="scikit-learn's 8x8 handwritten digits, grey levels in [0, 1] (shipped, the default)",
    images=True,
    idx=False,
)
register(
    "dataset",
    "mnist",
    mnist,
    doc="MNIST 28x28, the official split (IDX files on disk: download_mnist)",
    images=True,
    idx=True,
)
register(
    "dataset",
    "fashion_mnist",
    fashion_mnist,
    doc="Fashion-MNIST 28x28, the official split (IDX files on disk)",
    images=True,
    idx=True,
)
REGISTRY.add_column("dataset", "images", lambda e: "yes" if e.trait("images") else "-")

#: Dataset name -> loader (a live view of the registry's ``dataset`` entries); each loader takes the
#: keyword arguments of :func:`load_dataset`. Traits: ``images`` (rows are images: a Bernoulli
#: likelihood by default), ``idx`` (read from IDX files on disk).
DATASETS: Mapping[str, Callable[..., Dataset]] = REGISTRY.view("dataset", lambda e: e.factory)


def load_dataset(
    name: Any,
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
    """Load a dataset by name as float32 train/test tensors ``(N, D)`` / ``(M, D)`` plus metadata.

    Args:
        name: a key of :data:`DATASETS`, or ``"csv:PATH"`` / ``"npy:PATH"`` / a path ending
            in ``.csv`` or ``.npy``; or a table itself: a pandas DataFrame or a 2-D NumPy array.
        binarize: None (values as they are), ``"static"`` (one seeded {0, 1} draw of train
            and test) or ``"dynamic"`` (the same seeded draw for ``.train``/``.test``, and a
            fresh draw of the train grey levels on each ``resample_train``). Needs data in [0, 1].
        seed: seeds the split, synthetic data and binarisation; same seed, same tensors.
        data_dir: folder with the IDX files (``mnist``, ``fashion_mnist`` only); default
            ``$PPL_VAE_DATA/<name>`` or ``$PPL_VAE_DATA``.
        test_fraction: fraction of rows held out as test (ignored by the MNIST official split).
        standardize: z-score columns with the train mean/std (not with ``binarize``).
        n_samples: synthetic data: points generated (default 1500); other data: keep the
            first n train rows (the test split is untouched) for quick runs.
        noise: synthetic data only: cluster std (default 0.5) / moon noise (default 0.1).
        types: tables only: ``{column: type}`` overriding the inferred types (``real``, ``positive``,
            ``count``, ``binary``, ``categorical``, ``ignore``, ``id``).
        header: CSV only: ``True``, ``False`` or ``"auto"`` (a header of numbers is detected).

    Raises:
        DataError: unknown name or bad argument values, data that fail validation (a ValueError).
        MissingFileError: missing data files (a FileNotFoundError).

    Examples:
        >>> import ppl_vae as pv
        >>> data = pv.load_dataset("digits", binarize="static", seed=0)
        >>> data.train.shape, data.test.shape, data.meta.binarize
        (torch.Size([1437, 64]), torch.Size([360, 64]), 'static')
        >>> sorted(data.train.unique().tolist())
        [0.0, 1.0]
    """
    if _is_table(name):
        if data_dir is not None or noise is not None:
            raise DataError(
                "data_dir and noise do not apply to a DataFrame or an array; leave them None"
            )
        if header != "auto":
            raise DataError("header= is for CSV files; a DataFrame has its column names already")
        return load_table(
            name,
            name="dataframe" if hasattr(name, "columns") else "array",
            source="dataframe" if hasattr(name, "columns") else "array",
            types=types,
            binarize=binarize,
            seed=seed,
            test_fraction=test_fraction,
            standardize=standardize,
            n_samples=n_samples,
        )
    if not isinstance(name, str):
        raise DataError(
            f"name must be a dataset name, a file as 'csv:PATH', a DataFrame or a 2-D array; got "
            f"{type(name).__name__}"
        )
    kwargs: dict[str, Any] = dict(
        binarize=binarize,
        seed=seed,
        data_dir=data_dir,
        test_fraction=test_fraction,
        standardize=standardize,
        n_samples=n_samples,
        noise=noise,
    )
    if name in DATASETS:
        if types is not None or header != "auto":
            raise DataError(
                f"types= and header= are for tables (a CSV or a DataFrame); {name!r} is not one"
            )
        return DATASETS[name](**kwargs)
    if parse_tabular_name(name) is not None:
        return load_tabular(name, **kwargs, types=types, header=header)
    raise DataError(
        f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}, "
        "or a file as 'csv:PATH' / 'npy:PATH'"
    )


def _is_table(data: Any) -> bool:
    """A DataFrame or a 2-D NumPy array (not a name)."""
    import numpy as np

    if hasattr(data, "columns") and hasattr(data, "iloc"):
        return True
    return isinstance(data, np.ndarray)
