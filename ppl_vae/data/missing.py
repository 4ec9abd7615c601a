r"""NaN means missing: a matrix with holes -> finite filled values and a mask, with the checks both issues share.

Every loader and ``fit`` use the same rule: a NaN (an empty CSV cell, ``None`` in a DataFrame) is a missing
cell; ``mask[n, j]`` is True where cell ``(n, j)`` was observed; the filled matrix holds a finite value
everywhere (the train column mean unless a loader gives type-aware fills), so a program never sees a NaN.
Infinite values are not missing: they stay an error. A row with nothing observed and a column with nothing
observed in training are errors naming them (there is nothing to condition on / nothing to learn from).

>>> x = torch.tensor([[1.0, float("nan")], [3.0, 4.0]])
>>> filled, mask = split_missing(x)
>>> filled.tolist(), mask.tolist()
([[1.0, 4.0], [3.0, 4.0]], [[True, False], [True, True]])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError

__all__ = [
    "PYRO_MASK_IDIOM",
    "check_observed",
    "fill_missing",
    "missing_fractions",
    "split_missing",
]

#: How a user's own program scores observed cells only (shown by the refusals and in the README).
PYRO_MASK_IDIOM = (
    "pass the mask as a row-aligned input, fit(program, (x_filled, mask)) with "
    "x_filled, mask = ppl_vae.data.split_missing(x), and score "
    "dist.Normal(loc, scale).mask(mask).to_event(1) in model(x, mask)"
)


def _labels(index: Sequence[Any] | None, positions: np.ndarray, limit: int = 5) -> str:
    shown = [str(index[p]) if index is not None else str(int(p)) for p in positions[:limit]]
    more = f" and {len(positions) - limit} more" if len(positions) > limit else ""
    return ", ".join(shown) + more


def check_observed(
    mask: Tensor | np.ndarray,
    what: str,
    *,
    index: Sequence[Any] | None = None,
    columns: Sequence[str] | None = None,
    check_columns: bool = True,
) -> None:
    """Raise for a row with no observed cell, and (``check_columns``) a column with none.

    ``index`` labels the rows in the message (the file's row numbers or its ID column), ``columns`` the
    columns (the table's names; positions otherwise).
    """
    m = mask.cpu().numpy() if isinstance(mask, Tensor) else np.asarray(mask)
    empty_rows = np.flatnonzero(~m.any(axis=1))
    if empty_rows.size:
        raise DataError(
            f"{what}: {empty_rows.size} row(s) have no observed value, every cell non-finite (NaN: missing) "
            f"({'rows' if empty_rows.size > 1 else 'row'} {_labels(index, empty_rows)}): nothing to "
            "condition on; drop them"
        )
    if check_columns:
        empty_cols = np.flatnonzero(~m.any(axis=0))
        if empty_cols.size:
            names = [columns[j] if columns is not None else str(int(j)) for j in empty_cols[:5]]
            raise DataError(
                f"{what}: column(s) {', '.join(names)} have no observed value: nothing to learn them "
                "from; drop them (or choose another split)"
            )


def missing_fractions(mask: Tensor | None, d: int) -> list[float]:
    """The fraction of cells missing per column, ``d`` floats (zeros without a mask)."""
    if mask is None or len(mask) == 0:
        return [0.0] * d
    return (1.0 - mask.float().mean(0)).tolist()


def fill_missing(x: Tensor, mask: Tensor, fill: Tensor) -> Tensor:
    """``x`` with the cells where ``mask`` is False replaced by ``fill: (D,)`` (a new tensor)."""
    return torch.where(mask, x, fill.to(x.dtype).expand_as(x))


def split_missing(x: Any, what: str = "x") -> tuple[Tensor, Tensor | None]:
    """A float tensor ``(N, D)`` with NaN for missing cells -> ``(filled, mask)``.

    ``filled`` holds the column mean of the observed cells where a cell is missing; ``mask`` is bool
    ``(N, D)`` (True = observed), or None when nothing is missing (then ``filled`` is ``x`` itself).
    Infinite values, a row with nothing observed and a column with nothing observed are errors.

    Examples:
        >>> import torch
        >>> import ppl_vae as pv
        >>> filled, mask = pv.split_missing(torch.tensor([[1.0, float("nan")], [3.0, 4.0]]))
        >>> filled.tolist(), mask.tolist()
        ([[1.0, 4.0], [3.0, 4.0]], [[True, False], [True, True]])
    """
    if not isinstance(x, Tensor):
        x = torch.as_tensor(np.asarray(x, dtype=np.float32))
    if not x.is_floating_point():
        return x, None
    nan = torch.isnan(x)
    if not bool(nan.any()):
        return x, None
    if x.dim() != 2:
        raise DataError(
            f"{what}: missing values (NaN) need (N, D) rows; got shape {tuple(x.shape)}: "
            "flatten with x.reshape(len(x), -1)"
        )
    if bool(torch.isinf(x).any()):
        row = int(torch.isinf(x).any(1).nonzero()[0])
        raise DataError(
            f"{what}: infinite values (row {row}); NaN means missing, inf is an error: replace them"
        )
    mask = ~nan
    check_observed(mask, what)
    counts = mask.sum(0)
    means = torch.where(mask, x, torch.zeros_like(x)).sum(0) / counts
    return fill_missing(x, mask, means), mask
