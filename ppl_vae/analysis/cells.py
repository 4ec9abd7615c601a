"""A user's rows in and out of a program's space, for :func:`~ppl_vae.impute` and :func:`~ppl_vae.score`.

What ``data`` may be, and what the program is given (``model(x, mask, *inputs)`` when cells are missing):

* a pandas ``DataFrame``: encoded by the table's schema (``schema=``, else ``model.schema``), NaN/None
  meaning missing; an unseen category or an absent column is one error naming it (the schema's own
  check). Without a schema, numeric columns are taken as they are (one column per cell);
* a ``Dataset``: its ``split`` (``"test"`` by default), the mask and row labels it carries, and the
  program's ``dataset_inputs(dataset, split)`` (our VAE supplies the mask that way);
* a tensor or array ``(N, D)`` with NaN for missing cells (filled with the column means of the observed
  cells, the fill :func:`~ppl_vae.data.missing.split_missing` uses), or ``(x_filled, mask)``: the fill
  is yours (use the one the program was trained with).

Every row needs one observed cell. A program whose ``model`` takes no mask is refused in one line with
the Pyro idiom when cells are missing, and called as ``model(x)`` on complete rows.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..errors import ArgumentTypeError, DataError, ProgramError
from ..programs import Program

__all__ = ["Rows", "row_label", "table_rows", "takes_mask"]

MASK_IDIOM = (
    "write model(x, mask) and guide(x, mask) and observe only the observed cells: "
    "pyro.sample('x', dist.Normal(loc, scale).mask(mask).to_event(1), obs=x)"
)


@dataclass
class Rows:
    """The rows as the program sees them and as the user knows them.

    Attributes:
        batch: what the program is called with: ``(x, mask, *inputs)`` or ``(x, *inputs)`` when complete.
        mask: ``(N, D)`` bool (True = observed), or None when every cell is observed.
        schema: the table's schema, or None (columns are cells, as they are).
        frame: the rows in the user's terms, missing cells NA (the base of completed tables).
    """

    batch: tuple[torch.Tensor, ...]
    mask: torch.Tensor | None
    schema: Any
    frame: pd.DataFrame

    @property
    def x(self) -> torch.Tensor:
        return self.batch[0]

    def missing_fraction(self) -> dict[str, float]:
        """The share of cells missing per column (and ``"all"``)."""
        names = [str(c) for c in self.columns]
        if self.mask is None:
            return {"all": 0.0, **dict.fromkeys(names, 0.0)}
        miss = (~self.mask).double().mean(0).tolist()
        return {"all": float((~self.mask).double().mean()), **dict(zip(names, miss, strict=True))}

    @property
    def columns(self) -> list[Any]:
        return list(self.schema.names) if self.schema is not None else list(self.frame.columns)


def row_label(label: Any) -> str:
    """A row's label as a message shows it: ``'p7'`` for a string, ``233`` for a number."""
    if isinstance(label, np.generic):
        label = label.item()
    return repr(label) if isinstance(label, str) else str(label)


def takes_mask(program: Program) -> bool:
    """Whether ``program.model`` accepts a second positional argument (the mask)."""
    try:
        sig = inspect.signature(program.model)
    except (TypeError, ValueError):
        return True
    params = list(sig.parameters.values())
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return True
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params) >= 2


def _needs_mask(program: Program) -> bool:
    """Whether ``model`` requires a second positional argument (no default)."""
    try:
        params = list(inspect.signature(program.model).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 and positional[1].default is inspect.Parameter.empty


def _from_array(values: np.ndarray, index: Any, columns: Any) -> tuple[torch.Tensor, Any, Any]:
    if values.ndim != 2:
        raise DataError(f"data must be a table (N, D); got shape {values.shape}")
    if np.isinf(values).any():
        row = int(np.isinf(values).any(1).nonzero()[0][0])
        raise DataError(f"data: infinite value in row {row}; NaN means missing, inf is an error")
    mask = ~np.isnan(values)
    observed_any = mask.any(0)
    if not observed_any.all():
        col = int((~observed_any).nonzero()[0][0])
        raise DataError(f"data: column {col} has no observed value: drop it")
    means = np.nanmean(np.where(mask, values, np.nan), 0) if not mask.all() else None
    filled = values if means is None else np.where(mask, values, means[None, :])
    x = torch.from_numpy(np.ascontiguousarray(filled, dtype=np.float32))
    frame = pd.DataFrame(np.where(mask, values, np.nan), index=index, columns=columns)
    return x, (None if mask.all() else torch.from_numpy(mask)), frame


def _from_frame(frame: pd.DataFrame, schema: Any) -> tuple[torch.Tensor, Any, pd.DataFrame]:
    if schema is not None:
        x, mask = schema.tensors(frame, "data")
        frame = frame.copy()
        key = schema.index  # the rows are named by the ID column the schema was inferred with
        if (
            key is not None
            and key in frame.columns
            and frame[key].notna().all()
            and frame[key].is_unique
        ):
            frame.index = pd.Index(frame[key], name=key)
        return x, mask, frame
    numeric = frame.select_dtypes(include="number")
    other = [c for c in frame.columns if c not in numeric.columns]
    if other:
        raise DataError(
            f"data has non-numeric column(s) {other[:3]} and no schema to encode them: pass "
            "schema=dataset.schema (the Dataset the model was trained on) or a model that has one"
        )
    x, mask, _ = _from_array(numeric.to_numpy(np.float64), frame.index, frame.columns)
    return x, mask, frame.copy()


def _from_dataset(program: Program, data: Any, split: str) -> tuple[tuple, Any, Any, pd.DataFrame]:
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test'; got {split!r}")
    x = data.train if split == "train" else data.test
    mask = getattr(data, "mask", lambda s: None)(split)
    hook = getattr(program.owner, "dataset_inputs", None)
    inputs = tuple(hook(data, split)) if callable(hook) else ()
    if mask is not None:
        if inputs and inputs[0] is not mask and not torch.equal(inputs[0], mask):
            raise ProgramError(
                "impute and score pass the mask as the program's second input, model(x, mask, ...); "
                f"{type(program.owner).__name__}.dataset_inputs gives another tensor first"
            )
        inputs = (mask, *inputs[1:]) if inputs else (mask,)
    to_frame = getattr(data, "to_frame", None)
    frame = to_frame(split) if callable(to_frame) else pd.DataFrame(x.double().numpy())
    return (x, *inputs), mask, getattr(data, "schema", None), frame


def _from_pair(data: tuple, schema: Any) -> tuple[torch.Tensor, Any, pd.DataFrame]:
    """``(x_filled, mask)`` -> x, the mask (None when complete) and the rows as a frame with NaN holes."""
    x, mask = data
    if mask.dtype != torch.bool or mask.shape != x.shape:
        raise DataError(
            f"(x, mask): mask must be bool of the shape of x {tuple(x.shape)}; got {mask.dtype} "
            f"{tuple(mask.shape)}"
        )
    values = x.detach().cpu().double().numpy().copy()
    values[~mask.cpu().numpy()] = np.nan
    frame = pd.DataFrame(values) if schema is None else schema.to_frame(x, mask)
    return x, (None if bool(mask.all()) else mask), frame


def table_rows(
    program: Program, data: Any, *, schema: Any = None, split: str = "test", what: str = "data"
) -> Rows:
    """``data`` (a DataFrame, Dataset, tensor/array with NaN, or ``(x_filled, mask)``) as :class:`Rows`."""
    from ..data import Dataset

    if schema is None:
        owner = program.owner
        schema = getattr(owner, "schema", None) or getattr(
            getattr(owner, "likelihood", None), "schema", None
        )
    if isinstance(data, Dataset):
        batch, mask, ds_schema, frame = _from_dataset(program, data, split)
        return _finish(program, batch, mask, schema or ds_schema, frame)
    if isinstance(data, pd.DataFrame):
        x, mask, frame = _from_frame(data, schema)
    elif (
        isinstance(data, tuple)
        and len(data) == 2
        and all(isinstance(t, torch.Tensor) for t in data)
    ):
        x, mask, frame = _from_pair(data, schema)
    elif isinstance(data, (torch.Tensor, np.ndarray)):
        values = data.detach().cpu().double().numpy() if isinstance(data, torch.Tensor) else data
        x, mask, frame = _from_array(np.asarray(values, dtype=np.float64), None, None)
    else:
        raise ArgumentTypeError(
            f"{what} must be a pandas DataFrame, a ppl_vae Dataset, a tensor or array with NaN for "
            f"missing cells, or (x_filled, mask); got {type(data).__name__}"
        )
    return _finish(program, (x,) if mask is None else (x, mask), mask, schema, frame)


def _check_mask(program: Program, mask: torch.Tensor, frame: pd.DataFrame) -> None:
    """Every row observes a cell, and the program takes the mask."""
    empty = (~mask.any(1)).nonzero().flatten()
    if len(empty):
        label = frame.index[int(empty[0])]
        raise DataError(
            f"{len(empty)} row(s) have no observed cell, first row {row_label(label)}: nothing to "
            "condition on; drop them"
        )
    if not takes_mask(program):
        raise ProgramError(
            f"{int((~mask).sum())} cells are missing but the model takes no mask: {MASK_IDIOM}"
        )


def _finish(program: Program, batch: tuple, mask: Any, schema: Any, frame: pd.DataFrame) -> Rows:
    if mask is not None:
        _check_mask(program, mask, frame)
    elif len(batch) == 1 and _needs_mask(program):
        batch = (batch[0], torch.ones_like(batch[0], dtype=torch.bool))
    if schema is not None and schema.dropped:
        holes = [n for n, _ in schema.dropped if n in frame.columns and frame[n].isna().any()]
        if holes:
            warnings.warn(
                f"column(s) {holes} are not modelled (left out of the schema); their missing cells "
                "stay missing",
                UserWarning,
                stacklevel=3,
            )
    module = program.module
    device = next(iter(module.parameters()), None) if module is not None else None
    if device is not None:  # the rows go where the model's parameters are (a run loaded on CUDA)
        batch = tuple(t.to(device.device) for t in batch)
        mask = None if mask is None else batch[1]
    return Rows(batch=batch, mask=mask, schema=schema, frame=frame)
