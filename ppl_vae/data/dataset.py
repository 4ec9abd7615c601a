"""The dataset container and its metadata (the checks and transforms loaders share: :mod:`.checks`).

A :class:`Dataset` holds a train and a test matrix ``(N, D)`` / ``(M, D)`` of float32,
optional int64 labels, and a :class:`DatasetMeta` that records how the data were made
(name, split, seed, binarisation, standardisation), so that a run can say exactly which
data it used and reload them.

Loaders build their raw arrays and hand them to :func:`build_dataset`, which validates
them, standardises and binarises as asked, and writes the metadata. Binarisation is
explicit (see the project design): ``"static"`` draws once, ``"dynamic"`` also draws once
for ``.train``/``.test`` and then afresh on every :meth:`Dataset.resample_train` call.
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
    """

    train: Tensor
    test: Tensor
    train_labels: Tensor | None
    test_labels: Tensor | None
    meta: DatasetMeta
    train_probs: Tensor | None = None

    def __post_init__(self) -> None:
        if self.train_probs is None:
            self.train_probs = self.train
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

    def __repr__(self) -> str:
        return (
            f"Dataset({self.meta.name!r}, kind={self.meta.kind!r}, train={tuple(self.train.shape)}, "
            f"test={tuple(self.test.shape)}, binarize={self.meta.binarize!r}, "
            f"labels={self.train_labels is not None}, device={self.train.device})"
        )

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
        if self.meta.binarize != "dynamic":
            return self.train
        return bernoulli(self.train_probs, generator)

    def to(self, device: str | torch.device) -> Dataset:
        """A copy with every tensor on ``device`` (metadata shared)."""

        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, copy=True)

        train = move(self.train)
        probs = train if self.train_probs is self.train else move(self.train_probs)
        return dataclasses.replace(
            self,
            train=train,
            test=move(self.test),
            train_labels=move(self.train_labels),
            test_labels=move(self.test_labels),
            train_probs=probs,
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
            ``image_shape``, ``"points2d"`` when D == 2, else ``"tabular"``.
        """
        check_seed(seed)
        x = as_float_matrix(train, "train")
        if test is None:
            y = None
            if labels is not None:
                if isinstance(labels, tuple):
                    raise DataError(
                        "from_tensors: labels must be one (N,) array when test is None "
                        "(it is split with the rows); got a tuple"
                    )
                y = as_labels(labels, len(x), "labels")
            if test_fraction == 0:
                idx_train, idx_test = torch.arange(len(x)), torch.arange(0)
            else:
                check_test_fraction(test_fraction)
                idx_train, idx_test = split_indices(len(x), test_fraction, seed)
            x_train, x_test = x[idx_train], x[idx_test]
            y_train = None if y is None else y[idx_train]
            y_test = None if y is None else y[idx_test]
            fraction: float | None = test_fraction
        else:
            x_train, x_test = x, as_float_matrix(test, "test")
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
            image_shape = tuple(int(s) for s in image_shape)
        else:
            kind = "points2d" if x_train.shape[1] == 2 else "tabular"
        return cls(
            train=x_train,
            test=x_test,
            train_labels=y_train,
            test_labels=y_test,
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
            ),
        )


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
) -> Dataset:
    """Validate split data, standardise or binarise as asked, and record the metadata.

    Args:
        x_train: ``(N, D)`` raw train values; x_test: ``(M, D)``.
        y_train, y_test: ``(N,)`` / ``(M,)`` integer labels or None.
        binarize: None, ``"static"`` or ``"dynamic"``; needs values in [0, 1]. Both modes
            draw ``.train`` then ``.test`` from ``torch.Generator().manual_seed(seed)``, so
            static and dynamic runs with one seed share the same binarised test set.
        standardize: z-score with the train mean/std (exclusive with ``binarize``).
        The remaining arguments are recorded in :class:`DatasetMeta`.
    """
    check_binarize(binarize)
    if binarize is not None and standardize:
        raise DataError(f"standardize and binarize={binarize!r} are exclusive")
    train = as_float_matrix(x_train, f"{name} train data", copy=False)
    test = as_float_matrix(x_test, f"{name} test data", copy=False)
    check_same_dim(train, test)
    ytr = None if y_train is None else as_labels(y_train, len(train), f"{name} train labels")
    yte = None if y_test is None else as_labels(y_test, len(test), f"{name} test labels")
    mean = std = None
    if standardize:
        train, test, mean, std = standardize_columns(train, test)
    probs = train
    if binarize is not None:
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
        train = bernoulli(probs, gen)
        test = bernoulli(test, gen)
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
    )
    return Dataset(
        train=train, test=test, train_labels=ytr, test_labels=yte, meta=meta, train_probs=probs
    )
