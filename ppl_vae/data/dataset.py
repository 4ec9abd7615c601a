"""The dataset container and its metadata (the checks and transforms loaders share: :mod:`.checks`).

A :class:`Dataset` holds a train and a test matrix ``(N, D)`` / ``(M, D)`` of float32,
optional int64 labels, and a :class:`DatasetMeta` that records how the data were made
(name, split, seed, binarisation, standardisation), so that a run can say exactly which
data it used and reload them.

Loaders build their raw arrays and hand them to :func:`build_dataset`, which validates
them, standardises and binarises as asked, and writes the metadata. Binarisation is
explicit (see the project design): ``"static"`` draws once, ``"dynamic"`` also draws once
for ``.train``/``.test`` and then afresh on every :meth:`Dataset.resample_train` call.

**Missing values and row labels** (the interface the table and missing-value code share):

* ``Dataset.train`` / ``.test`` are always finite float32: a missing cell (NaN in the raw data) is filled
  (the train column mean, or the schema's type-aware fill for a table) and
  ``Dataset.train_mask`` / ``.test_mask`` are bool ``(N, D)`` / ``(M, D)``, True where a cell was
  observed; both None when nothing is missing in either split. ``meta.missing`` / ``meta.missing_test``
  record the fraction missing per column.
* ``Dataset.train_index`` / ``.test_index`` label the rows as the user knows them: a pandas Index of the
  CSV's row numbers (0 = first data row) or of its ID column, a DataFrame's own index, or for other data
  the positions in the source (an int64 array). Row ``i`` of ``.test`` is ``test_index[i]``.
* ``Dataset.schema`` is the table's :class:`~ppl_vae.data.schema.Schema` (None for images and points),
  ``meta.schema`` its JSON form.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ArgumentTypeError, DataError
from .checks import (
    as_float_matrix,
    as_labels,
    bernoulli,
    check_binarize,
    check_same_dim,
    check_seed,
    check_test_fraction,
    num_classes,
    split_indices,
    standardize_columns,
    value_range,
)
from .missing import check_observed, fill_missing, missing_fractions

KINDS: tuple[str, ...] = ("image", "points2d", "tabular")


# --------------------------------------------------------------------------- metadata


@dataclass(frozen=True, kw_only=True)
class DatasetMeta:
    """How a :class:`Dataset` was made; JSON-able through :meth:`to_dict` / :meth:`from_dict`.

    Attributes:
        name: dataset name as passed to :func:`~ppl_vae.data.load_dataset`.
        kind: ``"image"``, ``"points2d"`` or ``"tabular"`` (plots pick images or scatters).
        input_dim: D, the number of columns.
        image_shape: ``(height, width)`` for images, else None.
        value_range: ``(min, max)`` of the train tensor, as floats.
        binarize: None, ``"static"`` or ``"dynamic"``.
        seed: the seed of the split, of synthetic data and of binarisation.
        n_train, n_test: numbers of rows.
        test_fraction: the fraction asked for; None for an official split (MNIST).
        standardize: whether columns were z-scored with the train mean and std.
        mean, std: per-column train mean and std used (std 1.0 for constant columns),
            lists of D floats when standardised, else None.
        source: a file or folder path, or ``"sklearn"``, ``"synthetic"``, ``"tensor"``.
        num_classes: number of distinct labels, None without labels.
        n_samples, noise: the loader arguments of the same names (to reload exactly).
        schema: a table's :class:`~ppl_vae.data.schema.Schema` as a dict (``Schema.to_dict``), else None.
        missing, missing_test: fraction of cells missing per column in train / test (None: none missing).
        load_options: the table-reading arguments (``types``, ``header``) that rebuild the data.
    """

    name: str
    kind: str
    input_dim: int
    image_shape: tuple[int, ...] | None = None
    value_range: tuple[float, float]
    binarize: str | None = None
    seed: int = 0
    n_train: int
    n_test: int
    test_fraction: float | None = None
    standardize: bool = False
    mean: list[float] | None = None
    std: list[float] | None = None
    source: str
    num_classes: int | None = None
    n_samples: int | None = None
    noise: float | None = None
    schema: dict[str, Any] | None = None
    missing: list[float] | None = None
    missing_test: list[float] | None = None
    load_options: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DataError(f"DatasetMeta: kind must be one of {KINDS}; got {self.kind!r}")
        check_binarize(self.binarize)
        if self.image_shape is not None and math.prod(self.image_shape) != self.input_dim:
            raise DataError(
                f"DatasetMeta: image_shape {self.image_shape} has {math.prod(self.image_shape)} "
                f"pixels but input_dim is {self.input_dim}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of JSON types (tuples become lists)."""
        d = dataclasses.asdict(self)
        for key in ("image_shape", "value_range"):
            if d[key] is not None:
                d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetMeta:
        """Inverse of :meth:`to_dict` (also after a trip through JSON)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise DataError(
                f"DatasetMeta.from_dict: unknown keys {unknown}; expected a subset of {sorted(known)}"
            )
        d = dict(d)
        if d.get("image_shape") is not None:
            d["image_shape"] = tuple(int(v) for v in d["image_shape"])
        if d.get("value_range") is not None:
            d["value_range"] = tuple(float(v) for v in d["value_range"])
        return cls(**d)

    def load_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~ppl_vae.data.load_dataset` that rebuild this data.

        Only for data that came from ``load_dataset`` (not :meth:`Dataset.from_tensors`).
        """
        kwargs: dict[str, Any] = {
            "name": self.name,
            "binarize": self.binarize,
            "seed": self.seed,
            "standardize": self.standardize,
            "n_samples": self.n_samples,
            "noise": self.noise,
        }
        if self.test_fraction is not None:
            kwargs["test_fraction"] = self.test_fraction
        if self.name in ("mnist", "fashion_mnist"):
            kwargs["data_dir"] = self.source
        kwargs.update(self.load_options or {})
        return kwargs


# --------------------------------------------------------------------------- container


@dataclass(eq=False, repr=False)
class Dataset:
    """Train and test matrices with labels and metadata.

    Attributes:
        train: ``(N, D)`` float32. With binarisation, one seeded {0, 1} draw.
        test: ``(M, D)`` float32. With binarisation, one seeded {0, 1} draw.
        train_labels: ``(N,)`` int64, or None.
        test_labels: ``(M,)`` int64, or None.
        meta: a :class:`DatasetMeta`.
        train_probs: ``(N, D)`` float32 grey levels before binarisation; the same tensor
            as ``train`` when there is no binarisation.
        train_mask, test_mask: bool ``(N, D)`` / ``(M, D)``, True where a cell was observed; both None
            when nothing is missing (see the module docstring).
        train_index, test_index: the rows' labels in the user's data (module docstring), or None.
    """

    train: Tensor
    test: Tensor
    train_labels: Tensor | None
    test_labels: Tensor | None
    meta: DatasetMeta
    train_probs: Tensor | None = None
    train_mask: Tensor | None = None
    test_mask: Tensor | None = None
    train_index: Any = None
    test_index: Any = None

    def __post_init__(self) -> None:
        if self.train_probs is None:
            self.train_probs = self.train
        self._check_masks()
        for what, x in (
            ("train", self.train),
            ("test", self.test),
            ("train_probs", self.train_probs),
        ):
            if not isinstance(x, Tensor) or x.ndim != 2 or x.dtype != torch.float32:
                raise DataError(
                    f"Dataset.{what} must be a 2-D float32 tensor; got "
                    f"{getattr(x, 'dtype', type(x).__name__)} of shape {tuple(getattr(x, 'shape', ()))}"
                )
        if self.test.shape[1] != self.train.shape[1] or self.train_probs.shape != self.train.shape:
            raise DataError(
                f"Dataset: train {tuple(self.train.shape)}, test {tuple(self.test.shape)} and "
                f"train_probs {tuple(self.train_probs.shape)} must share D"
            )
        for what, y, x in (
            ("train_labels", self.train_labels, self.train),
            ("test_labels", self.test_labels, self.test),
        ):
            if y is not None and (y.dtype != torch.int64 or tuple(y.shape) != (len(x),)):
                raise DataError(
                    f"Dataset.{what} must be int64 of shape ({len(x)},); "
                    f"got {y.dtype} of shape {tuple(y.shape)}"
                )

    def _check_masks(self) -> None:
        if (self.train_mask is None) != (self.test_mask is None):
            raise DataError(
                "Dataset: train_mask and test_mask are both None (nothing missing) or both bool tensors"
            )
        for what, m, x in (
            ("train_mask", self.train_mask, self.train),
            ("test_mask", self.test_mask, self.test),
        ):
            if m is not None and (m.dtype != torch.bool or m.shape != x.shape):
                raise DataError(
                    f"Dataset.{what} must be a bool tensor of shape {tuple(x.shape)}; got {m.dtype} "
                    f"of shape {tuple(m.shape)}"
                )
        # rows replaced without their labels (dataclasses.replace(data, train=...)): no labels, positions
        if self.train_index is not None and len(self.train_index) != len(self.train):
            self.train_index = None
        if self.test_index is not None and len(self.test_index) != len(self.test):
            self.test_index = None

    @property
    def schema(self) -> Any:
        """The table's :class:`~ppl_vae.data.schema.Schema`, or None (images, points, plain arrays)."""
        if self.meta.schema is None:
            return None
        cached = self.__dict__.get("_schema")
        if cached is None:
            from .schema import Schema

            cached = self.__dict__["_schema"] = Schema.from_dict(self.meta.schema)
        return cached

    @property
    def has_missing(self) -> bool:
        """Whether any cell of train or test is missing (then the masks are tensors)."""
        return self.train_mask is not None

    def mask(self, split: str) -> Tensor | None:
        """``train_mask`` or ``test_mask`` (``split``: ``"train"`` or ``"test"``)."""
        if split not in ("train", "test"):
            raise DataError(f"split must be 'train' or 'test'; got {split!r}")
        return self.train_mask if split == "train" else self.test_mask

    def index(self, split: str) -> Any:
        """``train_index`` or ``test_index`` (``split``: ``"train"`` or ``"test"``)."""
        if split not in ("train", "test"):
            raise DataError(f"split must be 'train' or 'test'; got {split!r}")
        return self.train_index if split == "train" else self.test_index

    def to_frame(self, split: str = "test") -> Any:
        """A split as a DataFrame in the user's terms (tables: original names, levels and units; missing
        cells as NA), indexed by the rows' labels."""
        x, mask = (self.train, self.train_mask) if split == "train" else (self.test, self.test_mask)
        if self.schema is None:
            import pandas as pd

            values = x.detach().cpu().double().numpy().copy()
            if mask is not None:
                values[~mask.cpu().numpy()] = np.nan
            return pd.DataFrame(values, index=self.index(split))
        return self.schema.to_frame(x, mask, index=self.index(split))

    def __repr__(self) -> str:
        text = (
            f"Dataset({self.meta.name!r}, kind={self.meta.kind!r}, train={tuple(self.train.shape)}, "
            f"test={tuple(self.test.shape)}, binarize={self.meta.binarize!r}, "
            f"labels={self.train_labels is not None}, device={self.train.device})"
        )
        if self.has_missing and self.train_mask is not None:
            frac = float(1.0 - self.train_mask.float().mean())
            text += f"\n{frac:.1%} of train cells missing"
        if self.schema is not None:
            text += "\n" + self.schema.describe()
        return text

    def resample_train(self, generator: torch.Generator) -> Tensor:
        """Train data for one epoch.

        With ``binarize="dynamic"``: a fresh Bernoulli draw of :attr:`train_probs`, ``(N, D)``
        float32 in {0, 1}, different on each call and reproducible from ``generator``
        (a CPU generator gives the same draw whatever device the data are on).
        Otherwise: :attr:`train` itself, unchanged.
        """
        if not isinstance(generator, torch.Generator):
            raise ArgumentTypeError(
                f"resample_train: generator must be a torch.Generator; got {type(generator).__name__}: "
                "pass torch.Generator().manual_seed(seed)"
            )
        if self.meta.binarize != "dynamic" or self.train_probs is None:
            return self.train
        return bernoulli(self.train_probs, generator)

    def to(self, device: str | torch.device) -> Dataset:
        """A copy with every tensor on ``device`` (metadata shared)."""

        def move(t: Tensor) -> Tensor:
            return t.to(device, copy=True)

        def maybe(t: Tensor | None) -> Tensor | None:
            return None if t is None else move(t)

        train = move(self.train)
        probs = train if self.train_probs is self.train else maybe(self.train_probs)
        return dataclasses.replace(
            self,
            train=train,
            test=move(self.test),
            train_labels=maybe(self.train_labels),
            test_labels=maybe(self.test_labels),
            train_probs=probs,
            train_mask=maybe(self.train_mask),
            test_mask=maybe(self.test_mask),
        )

    @classmethod
    def from_tensors(
        cls,
        train: Tensor | np.ndarray,
        test: Tensor | np.ndarray | None = None,
        *,
        name: str = "tensor",
        test_fraction: float = 0.2,
        seed: int = 0,
        labels: Tensor | np.ndarray | tuple[Tensor | np.ndarray, Tensor | np.ndarray] | None = None,
        image_shape: tuple[int, int] | None = None,
    ) -> Dataset:
        """Wrap a user's data after validation.

        Args:
            train: ``(N, D)`` numbers; cast to float32 (a copy).
            test: ``(M, D)``, or None to split ``train`` (seeded, ``test_fraction`` to test).
            name: recorded in the metadata.
            test_fraction: fraction of rows for the test split when ``test`` is None;
                0 keeps every row for training and leaves the test split empty.
            seed: seed of that split.
            labels: ``(N,)`` integers when ``test`` is None (split along with the rows);
                a pair ``(train_labels, test_labels)`` when ``test`` is given; or None.
            image_shape: ``(height, width)`` with ``height * width == D`` to mark images.

        Returns:
            A :class:`Dataset` without binarisation; ``kind`` is ``"image"`` with
            ``image_shape``, ``"points2d"`` when D == 2, else ``"tabular"``. NaN cells are missing:
            filled with the train column mean, with ``train_mask``/``test_mask`` (module docstring).
        """
        check_seed(seed)
        x = as_float_matrix(train, "train", allow_nan=True)
        if test is None:
            y = None
            if labels is not None:
                if isinstance(labels, tuple):
                    raise DataError(
                        "from_tensors: labels must be one (N,) array when test is None "
                        "(it is split with the rows); got a tuple"
                    )
                y = as_labels(labels, len(x), "labels")
            idx_train: Tensor | np.ndarray
            idx_test: Tensor | np.ndarray
            if test_fraction == 0:
                idx_train, idx_test = torch.arange(len(x)), torch.arange(0)
            else:
                check_test_fraction(test_fraction)
                idx_train, idx_test = split_indices(len(x), test_fraction, seed)
            x_train, x_test = x[idx_train], x[idx_test]
            y_train = None if y is None else y[idx_train]
            y_test = None if y is None else y[idx_test]
            fraction: float | None = test_fraction
            index = (np.asarray(idx_train, dtype=np.int64), np.asarray(idx_test, dtype=np.int64))
        else:
            x_train, x_test = x, as_float_matrix(test, "test", allow_nan=True)
            index = (np.arange(len(x_train)), np.arange(len(x_test)))
            y_train = y_test = None
            if labels is not None:
                if not (isinstance(labels, tuple) and len(labels) == 2):
                    raise DataError(
                        "from_tensors: with a test set, labels must be a pair "
                        f"(train_labels, test_labels); got {type(labels).__name__}"
                    )
                y_train = as_labels(labels[0], len(x_train), "train labels")
                y_test = as_labels(labels[1], len(x_test), "test labels")
            fraction = None
        check_same_dim(x_train, x_test)
        if image_shape is not None:
            kind = "image"
            image_shape = (int(image_shape[0]), int(image_shape[1]))
        else:
            kind = "points2d" if x_train.shape[1] == 2 else "tabular"
        holes = fill_holes(x_train, x_test, None)
        x_train, x_test = holes.train, holes.test
        return cls(
            train=x_train,
            test=x_test,
            train_labels=y_train,
            test_labels=y_test,
            train_mask=holes.train_mask,
            test_mask=holes.test_mask,
            train_index=index[0],
            test_index=index[1],
            meta=DatasetMeta(
                name=name,
                kind=kind,
                input_dim=int(x_train.shape[1]),
                image_shape=image_shape,
                value_range=value_range(x_train),
                seed=int(seed),
                n_train=len(x_train),
                n_test=len(x_test),
                test_fraction=fraction,
                source="tensor",
                num_classes=num_classes(y_train, y_test),
                missing=holes.missing,
                missing_test=holes.missing_test,
            ),
        )


@dataclass
class Holes:
    """Filled splits with their masks and missing fractions (None when nothing is missing)."""

    train: Tensor
    test: Tensor
    train_mask: Tensor | None
    test_mask: Tensor | None
    missing: list[float] | None
    missing_test: list[float] | None


def fill_holes(
    train: Tensor,
    test: Tensor,
    fill: Tensor | np.ndarray | None,
    *,
    index: tuple[Any, Any] | None = None,
    columns: Sequence[str] | None = None,
    what: str = "",
) -> Holes:
    """NaN -> filled values and masks for both splits (see :mod:`.missing`).

    ``fill: (D,)`` gives the fill of each column (a table's type-aware fills); default the train column
    mean of the observed cells. A column never observed in train, or a row with nothing observed, is an
    error naming it (``index``/``columns`` label them).
    """
    nan_train, nan_test = torch.isnan(train), torch.isnan(test)
    if not (bool(nan_train.any()) or bool(nan_test.any())):
        return Holes(train, test, None, None, None, None)
    mask_train, mask_test = ~nan_train, ~nan_test
    labels = index or (None, None)
    prefix = f"{what} " if what else ""
    check_observed(mask_train, f"{prefix}train", index=labels[0], columns=columns)
    if len(test):
        check_observed(mask_test, f"{prefix}test", index=labels[1], check_columns=False)
    if fill is None:
        counts = mask_train.sum(0)
        fill_t = torch.where(mask_train, train, torch.zeros_like(train)).sum(0) / counts
    else:
        fill_t = torch.as_tensor(np.asarray(fill, dtype=np.float32))
    return Holes(
        fill_missing(train, mask_train, fill_t),
        fill_missing(test, mask_test, fill_t),
        mask_train,
        mask_test,
        missing_fractions(mask_train, train.shape[1]),
        missing_fractions(mask_test, test.shape[1]),
    )


def _binarized(
    train: torch.Tensor, test: torch.Tensor, binarize: str, name: str, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One seeded {0, 1} draw of train then test, with the grey levels read as probabilities."""
    lo = min(float(train.min()), float(test.min()))
    hi = max(float(train.max()), float(test.max()))
    if lo < 0.0 or hi > 1.0:
        raise DataError(
            f"binarize={binarize!r} needs data in [0, 1] (read as Bernoulli probabilities); "
            f"dataset {name!r} has values in [{lo:.4g}, {hi:.4g}]: pass binarize=None and use a "
            "likelihood for real values (e.g. Gaussian, with standardize=True if you like), "
            "or rescale the data into [0, 1] yourself"
        )
    gen = torch.Generator().manual_seed(seed)
    return bernoulli(train, gen), bernoulli(test, gen)


def build_dataset(
    *,
    name: str,
    kind: str,
    source: str,
    x_train: Tensor | np.ndarray,
    x_test: Tensor | np.ndarray,
    y_train: Tensor | np.ndarray | None = None,
    y_test: Tensor | np.ndarray | None = None,
    image_shape: Sequence[int] | None = None,
    binarize: str | None = None,
    seed: int = 0,
    test_fraction: float | None = None,
    standardize: bool = False,
    n_samples: int | None = None,
    noise: float | None = None,
    fill: np.ndarray | None = None,
    schema: dict[str, Any] | None = None,
    index: tuple[Any, Any] | None = None,
    load_options: dict[str, Any] | None = None,
    shift_scale: tuple[list[float], list[float]] | None = None,
) -> Dataset:
    """Validate split data, standardise or binarise as asked, and record the metadata.

    Args:
        x_train: ``(N, D)`` raw train values; x_test: ``(M, D)``; NaN marks a missing cell (filled, with
            masks: see the module docstring).
        y_train, y_test: ``(N,)`` / ``(M,)`` integer labels or None.
        binarize: None, ``"static"`` or ``"dynamic"``; needs values in [0, 1]. Both modes
            draw ``.train`` then ``.test`` from ``torch.Generator().manual_seed(seed)``, so
            static and dynamic runs with one seed share the same binarised test set.
        standardize: z-score with the train mean/std (exclusive with ``binarize``).
        fill: ``(D,)`` model-space fills of missing cells (a table's); default the train column means.
        schema: a table's schema dict (the values are then already in model space: ``standardize`` only
            records that the schema standardised, with ``shift_scale`` its constants).
        index: ``(train_index, test_index)``, the rows' labels.
        The remaining arguments are recorded in :class:`DatasetMeta`.
    """
    check_binarize(binarize)
    if binarize is not None and standardize:
        raise DataError(f"standardize and binarize={binarize!r} are exclusive")
    train = as_float_matrix(x_train, f"{name} train data", copy=False, allow_nan=True)
    test = as_float_matrix(x_test, f"{name} test data", copy=False, allow_nan=True)
    check_same_dim(train, test)
    ytr = None if y_train is None else as_labels(y_train, len(train), f"{name} train labels")
    yte = None if y_test is None else as_labels(y_test, len(test), f"{name} test labels")
    mean = std = None
    if shift_scale is not None:
        mean, std = shift_scale
    elif standardize:
        train, test, mean, std = standardize_columns(train, test)
    columns = None if schema is None else [c["name"] for c in schema["columns"]]
    holes = fill_holes(train, test, fill, index=index, columns=columns, what=name)
    train, test = holes.train, holes.test
    probs = train
    if binarize is not None:
        train, test = _binarized(train, test, binarize, name, seed)
    meta = DatasetMeta(
        name=name,
        kind=kind,
        input_dim=int(train.shape[1]),
        image_shape=None if image_shape is None else tuple(int(s) for s in image_shape),
        value_range=value_range(train),
        binarize=binarize,
        seed=int(seed),
        n_train=len(train),
        n_test=len(test),
        test_fraction=test_fraction,
        standardize=bool(standardize),
        mean=mean,
        std=std,
        source=source,
        num_classes=num_classes(ytr, yte),
        n_samples=n_samples,
        noise=noise,
        schema=schema,
        missing=holes.missing,
        missing_test=holes.missing_test,
        load_options=load_options,
    )
    return Dataset(
        train=train,
        test=test,
        train_labels=ytr,
        test_labels=yte,
        meta=meta,
        train_probs=probs,
        train_mask=holes.train_mask,
        test_mask=holes.test_mask,
        train_index=None if index is None else index[0],
        test_index=None if index is None else index[1],
    )
