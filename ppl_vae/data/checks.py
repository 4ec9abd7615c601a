"""The checks and transforms every data loader shares: argument checks, matrices, labels, splits,
binarisation and standardisation. Validation at the boundary, one copy; errors name the argument and the
value (:class:`~ppl_vae.errors.DataError`, :class:`~ppl_vae.errors.ArgumentTypeError`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .._checks import check_finite
from ..errors import DataError

BINARIZE_MODES: tuple[None, str, str] = (None, "static", "dynamic")


# --------------------------------------------------------------------------- checks


def check_binarize(binarize: object) -> None:
    """Raise unless ``binarize`` is None, ``"static"`` or ``"dynamic"``."""
    if binarize not in BINARIZE_MODES:
        raise DataError(
            f"binarize must be None, 'static' or 'dynamic'; got {binarize!r}: 'static' draws "
            "one seeded {0, 1} sample, 'dynamic' a fresh one each epoch"
        )


def check_seed(seed: object) -> None:
    """Raise unless ``seed`` is an int in [0, 2**32)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**32:
        raise DataError(f"seed must be an integer in [0, 2**32); got {seed!r}")


def check_test_fraction(test_fraction: object) -> None:
    """Raise unless ``0 < test_fraction < 1``."""
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, int | float)
        or not 0 < test_fraction < 1
    ):
        raise DataError(
            f"test_fraction must be a number strictly between 0 and 1; got {test_fraction!r}"
        )


def check_n_samples(n_samples: object) -> None:
    """Raise unless ``n_samples`` is None or a positive int."""
    if n_samples is None:
        return
    if isinstance(n_samples, bool) or not isinstance(n_samples, int | np.integer) or n_samples < 1:
        raise DataError(f"n_samples must be None or a positive integer; got {n_samples!r}")


def check_options(
    *,
    binarize: object,
    seed: object,
    test_fraction: object,
    standardize: object,
    n_samples: object,
    noise: object,
) -> None:
    """Check the keyword arguments shared by every loader (see ``load_dataset``)."""
    check_binarize(binarize)
    check_seed(seed)
    check_test_fraction(test_fraction)
    check_n_samples(n_samples)
    if not isinstance(standardize, bool | np.bool_):
        raise DataError(f"standardize must be True or False; got {standardize!r}")
    if binarize is not None and standardize:
        raise DataError(
            f"standardize=True and binarize={binarize!r} cannot be combined: binarisation needs "
            "values in [0, 1], z-scores are not; choose one"
        )
    if noise is not None and (
        isinstance(noise, bool)
        or not isinstance(noise, int | float)
        or not math.isfinite(noise)
        or noise < 0
    ):
        raise DataError(f"noise must be None or a finite number >= 0; got {noise!r}")


def reject_unused(dataset: str, **kwargs: object) -> None:
    """Raise if an argument that ``dataset`` does not use was set (not None)."""
    for key, value in kwargs.items():
        if value is not None:
            raise DataError(
                f"{key}={value!r} does not apply to dataset {dataset!r}; leave it as None"
            )


def as_float_matrix(x: object, what: str, *, copy: bool = True, allow_nan: bool = False) -> Tensor:
    """``x`` as a float32 ``(N, D)`` tensor, or a ValueError saying what is wrong.

    Rejects non-numeric input, anything not 2-D, empty data and NaN/inf (with ``allow_nan``, NaN is a
    missing cell and only inf is rejected). With ``copy=False`` a float32 tensor (or array) is used as it
    is, without a copy.
    """
    if isinstance(x, Tensor):
        t = x.detach()
    else:
        try:
            arr = np.asarray(x)
        except Exception as err:  # ragged lists and the like
            raise DataError(f"{what}: cannot convert to an array ({err})") from err
        if arr.dtype.kind not in "biuf":
            raise DataError(f"{what}: needs numbers; got an array of dtype {arr.dtype}")
        arr = np.ascontiguousarray(arr)
        t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    if t.is_complex():
        raise DataError(f"{what}: needs real numbers; got dtype {t.dtype}")
    if t.ndim != 2:
        hint = "x.reshape(-1, 1)" if t.ndim <= 1 else "x.reshape(len(x), -1)"
        raise DataError(
            f"{what}: needs a 2-D (rows, features) array; got shape {tuple(t.shape)}: "
            f"flatten it with {hint}"
        )
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise DataError(
            f"{what}: is empty (shape {tuple(t.shape)}); needs at least one row and column"
        )
    t = t.to(torch.float32, copy=copy)
    if allow_nan and not bool(torch.isinf(t).any()):
        return t
    check_finite(t, what)
    return t


def check_same_dim(train: Tensor, test: Tensor) -> None:
    """Raise unless train and test have the same number of columns."""
    if train.shape[1] != test.shape[1]:
        raise DataError(
            f"train has {train.shape[1]} columns but test has {test.shape[1]} "
            f"(shapes {tuple(train.shape)} and {tuple(test.shape)})"
        )


def as_labels(y: object, n: int, what: str) -> Tensor:
    """``y`` as an int64 ``(n,)`` tensor, or a ValueError."""
    if isinstance(y, Tensor):
        t = y.detach()
    else:
        arr = np.asarray(y)
        if arr.dtype.kind not in "iuf":
            raise DataError(f"{what}: labels must be integers; got an array of dtype {arr.dtype}")
        t = torch.from_numpy(np.array(arr))
    if t.ndim != 1 or len(t) != n:
        raise DataError(f"{what}: needs shape ({n},), one label per row; got {tuple(t.shape)}")
    if t.is_floating_point():
        if not bool(torch.isfinite(t).all()) or not bool((t == t.round()).all()):
            raise DataError(f"{what}: labels must be integers; got NaN, inf or fractions")
    elif t.dtype == torch.bool or t.is_complex():
        raise DataError(f"{what}: labels must be integers; got dtype {t.dtype}")
    return t.to(torch.int64, copy=True)


def num_classes(*labels: Tensor | None) -> int | None:
    """Number of distinct labels over the given label tensors; None if there are none."""
    present = [y for y in labels if y is not None]
    if not present:
        return None
    return int(np.unique(np.concatenate([y.cpu().numpy() for y in present])).size)


def value_range(x: Tensor) -> tuple[float, float]:
    """``(min, max)`` of ``x`` as Python floats."""
    return float(x.min()), float(x.max())


# --------------------------------------------------------------------------- transforms


def split_indices(
    n: int, test_fraction: float, seed: int, stratify: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded shuffle split of ``range(n)`` into train and test indices.

    ``ceil(test_fraction * n)`` rows go to test, as in scikit-learn's ``train_test_split``
    (which does the work); ``stratify`` keeps the label proportions.
    """
    from sklearn.model_selection import train_test_split

    n_test = math.ceil(test_fraction * n)
    if n_test < 1 or n - n_test < 1:
        raise DataError(
            f"test_fraction={test_fraction} of {n} rows leaves an empty train or test split; "
            "use more rows or another test_fraction"
        )
    idx_train, idx_test = train_test_split(
        np.arange(n), test_size=n_test, random_state=seed, shuffle=True, stratify=stratify
    )
    return idx_train, idx_test


def bernoulli(probs: Tensor, generator: torch.Generator) -> Tensor:
    """One Bernoulli draw of ``probs: (N, D)`` in [0, 1], float32 {0, 1} of the same shape.

    Uniforms come from ``generator`` on its own device, so the draw does not depend on
    where ``probs`` lives.
    """
    u = torch.rand(probs.shape, generator=generator, device=generator.device, dtype=probs.dtype)
    return (u.to(probs.device) < probs).to(probs.dtype)


def standardize_columns(
    train: Tensor, test: Tensor
) -> tuple[Tensor, Tensor, list[float], list[float]]:
    """Z-score both splits with the train column mean and (population) std.

    Constant columns get std 1.0 (as scikit-learn's ``StandardScaler`` does), so they
    become 0 rather than NaN. Missing cells (NaN) are left out of the statistics and stay NaN.
    Returns ``(train, test, mean, std)``.
    """
    mean = train.nanmean(dim=0)
    std = (train - mean).pow(2).nanmean(dim=0).sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))
    return (train - mean) / std, (test - mean) / std, mean.tolist(), std.tolist()
