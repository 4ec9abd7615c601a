"""Datasets that need no files: generated 2-D points and scikit-learn's shipped 8x8 digits.

Every loader has the keyword signature of :func:`ppl_vae.data.load_dataset` (without
``name``) and returns a :class:`~ppl_vae.data.dataset.Dataset`; arguments a loader does not
use must stay None.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from .checks import check_options, reject_unused, split_indices
from .dataset import Dataset, build_dataset

#: Centres of the three Gaussian clusters, as in the classic NumPy VAE demo.
CLUSTER_CENTRES = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 3.0]])


def _split_and_build(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    kind: str,
    source: str,
    image_shape: tuple[int, int] | None,
    binarize: str | None,
    seed: int,
    test_fraction: float,
    standardize: bool,
    n_samples: int | None,
    noise: float | None,
    truncate_train: int | None = None,
) -> Dataset:
    """Stratified seeded split of ``x: (N, D)``, ``y: (N,)``, then :func:`build_dataset`."""
    idx_train, idx_test = split_indices(len(x), test_fraction, seed, stratify=y)
    if truncate_train is not None:
        if truncate_train > len(idx_train):
            raise DataError(
                f"n_samples={truncate_train} exceeds the {len(idx_train)} training rows of {name!r}"
            )
        idx_train = idx_train[:truncate_train]
    return build_dataset(
        name=name,
        kind=kind,
        source=source,
        x_train=x[idx_train],
        x_test=x[idx_test],
        y_train=y[idx_train],
        y_test=y[idx_test],
        image_shape=image_shape,
        binarize=binarize,
        seed=seed,
        test_fraction=test_fraction,
        standardize=standardize,
        n_samples=n_samples,
        noise=noise,
        index=(np.asarray(idx_train, dtype=np.int64), np.asarray(idx_test, dtype=np.int64)),
    )


def three_clusters(
    *,
    binarize: str | None = None,
    seed: int = 0,
    data_dir: str | None = None,
    test_fraction: float = 0.2,
    standardize: bool = False,
    n_samples: int | None = None,
    noise: float | None = None,
) -> Dataset:
    """Three isotropic Gaussian clusters in 2-D, centred at (-2, 0), (2, 0) and (0, 3).

    ``n_samples`` (default 1500) points in all, split as evenly as possible over the
    clusters; ``noise`` is the per-axis standard deviation (default 0.5). Labels are the
    cluster ids 0, 1, 2; the split is stratified. Data: ``(N, 2)``, kind ``"points2d"``.
    """
    check_options(
        binarize=binarize,
        seed=seed,
        test_fraction=test_fraction,
        standardize=standardize,
        n_samples=n_samples,
        noise=noise,
    )
    reject_unused("three_clusters", data_dir=data_dir)
    n = 1500 if n_samples is None else int(n_samples)
    std = 0.5 if noise is None else float(noise)
    rng = np.random.default_rng(seed)
    y = np.arange(n) % len(CLUSTER_CENTRES)
    rng.shuffle(y)
    x = CLUSTER_CENTRES[y] + std * rng.standard_normal((n, 2))
    return _split_and_build(
        "three_clusters",
        x,
        y,
        kind="points2d",
        source="synthetic",
        image_shape=None,
        binarize=binarize,
        seed=seed,
        test_fraction=test_fraction,
        standardize=standardize,
        n_samples=n_samples,
        noise=noise,
    )


def two_moons(
    *,
    binarize: str | None = None,
    seed: int = 0,
    data_dir: str | None = None,
    test_fraction: float = 0.2,
    standardize: bool = False,
    n_samples: int | None = None,
    noise: float | None = None,
) -> Dataset:
    """scikit-learn's ``make_moons``: two interleaved half circles in 2-D.

    ``n_samples`` default 1500, ``noise`` (Gaussian std) default 0.1, seeded by ``seed``.
    Labels are the moon ids 0, 1; the split is stratified. Data: ``(N, 2)``, kind ``"points2d"``.
    """
    from sklearn.datasets import make_moons

    check_options(
        binarize=binarize,
        seed=seed,
        test_fraction=test_fraction,
        standardize=standardize,
        n_samples=n_samples,
        noise=noise,
    )
    reject_unused("two_moons", data_dir=data_dir)
    n = 1500 if n_samples is None else int(n_samples)
    x, y = make_moons(n_samples=n, noise=0.1 if noise is None else float(noise), random_state=seed)
    return _split_and_build(
        "two_moons",
        x,
        y,
        kind="points2d",
        source="synthetic",
        image_shape=None,
        binarize=binarize,
        seed=seed,
        test_fraction=test_fraction,
        standardize=standardize,
        n_samples=n_samples,
        noise=noise,
    )


def digits(
    *,
    binarize: str | None = None,
    seed: int = 0,
    data_dir: str | None = None,
    test_fraction: float = 0.2,
    standardize: bool = False,
    n_samples: int | None = None,
    noise: float | None = None,
) -> Dataset:
    """scikit-learn's 1797 handwritten 8x8 digits (shipped with it: no download).

    Pixels (0..16) are divided by 16 into [0, 1]. Seeded split stratified by digit,
    ``test_fraction`` to test (default 0.2: 1437 train / 360 test rows). ``n_samples`` keeps
    the first n train rows (the test split is untouched). Data: ``(N, 64)``, image_shape
    ``(8, 8)``, labels 0..9. The project's default dataset.
    """
    from sklearn.datasets import load_digits

    check_options(
        binarize=binarize,
        seed=seed,
        test_fraction=test_fraction,
        standardize=standardize,
        n_samples=n_samples,
        noise=noise,
    )
    reject_unused("digits", data_dir=data_dir, noise=noise)
    x, y = load_digits(return_X_y=True)
    return _split_and_build(
        "digits",
        x / 16.0,
        y,
        kind="image",
        source="sklearn",
        image_shape=(8, 8),
        binarize=binarize,
        seed=seed,
        test_fraction=test_fraction,
        standardize=standardize,
        n_samples=n_samples,
        noise=noise,
        truncate_train=n_samples,
    )
