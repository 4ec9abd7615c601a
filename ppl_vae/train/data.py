"""Training data as row-aligned tensors: the forms ``fit`` accepts, validated once, drawn per epoch.

``fit`` takes a :class:`~ppl_vae.data.Dataset` (train/test splits, explicit binarisation), a tensor
``(N, ...)``, a tuple of row-aligned tensors ``(x, y, ...)`` (conditioning inputs, labels) that
the programs receive as ``model(*batch)``, or a pandas DataFrame (a table model encodes it with its
schema; other programs take its numbers). NaN in ``x`` means a missing cell: the owner's
``split_missing`` hook turns it into ``(filled, mask)``; a program without one is refused with the
Pyro idiom (:data:`~ppl_vae.data.missing.PYRO_MASK_IDIOM`). :class:`TrainData` holds them as tuples of tensors, knows
how to draw one epoch's rows (a fresh binarisation of ``x`` under ``binarize="dynamic"``), and
remembers which tensors it has validated (by identity, storage and version counter), so calling
``fit(..., epochs=1)`` in a loop validates the data once, not on every call.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .._torch_compat import tensor_edits
from ..data import Dataset
from ..data.missing import PYRO_MASK_IDIOM
from ..errors import ArgumentTypeError, DataError
from ..programs import as_rows, hook_rows

Rows = tuple[torch.Tensor, ...]


def _fingerprint(rows: Rows | None) -> tuple | None:
    """What identifies a set of tensors and their contents without reading them (an in-place edit
    changes :func:`~ppl_vae._torch_compat.tensor_edits`)."""
    if rows is None:
        return None
    return tuple(
        (
            id(t),
            t.untyped_storage().data_ptr(),
            t.storage_offset(),
            tuple(t.shape),
            t.dtype,
            t.device,
            tensor_edits(t),
        )
        for t in rows
    )


@dataclass
class TrainData:
    """Row-aligned train (and test) tensors with the metadata a checkpoint records.

    Attributes:
        train: ``(x, ...)`` with N rows; test: ``(x_test, ...)`` or None.
        meta: the dataset's metadata as a dict (``DatasetMeta.to_dict()``, or a short record for tensors).
        dataset: the :class:`Dataset` when one was given (its dynamic binarisation draws each epoch).
        extra: for a Dataset, ``program.dataset_inputs(dataset, split)``'s row-aligned tensors appended
            after ``x`` (labels for a semi-supervised program), else ().
    """

    train: Rows
    test: Rows | None
    meta: dict[str, Any]
    dataset: Dataset | None = None
    extra_train: Rows = ()

    @property
    def n(self) -> int:
        return len(self.train[0])

    def epoch_rows(self, generator: torch.Generator) -> Rows:
        """The rows of one epoch: ``x`` re-binarised from ``generator`` under dynamic binarisation."""
        if self.dataset is not None and self.dataset.meta.binarize == "dynamic":
            x = self.dataset.resample_train(generator).to(self.train[0].device)
            return (x, *self.train[1:])
        return self.train

    def to(self, device: torch.device) -> TrainData:
        """The same data on ``device`` (no copy for tensors already there)."""

        def move(rows: Rows) -> Rows:
            return tuple(t if t.device == device else t.to(device) for t in rows)

        if all(t.device == device for t in self.train) and all(
            t.device == device for t in self.test or ()
        ):
            return self
        dataset = self.dataset.to(device) if self.dataset is not None else None
        test = None if self.test is None else move(self.test)
        return TrainData(move(self.train), test, self.meta, dataset, self.extra_train)


def _frame_rows(frame: Any, owner: Any, arg: str) -> Any:
    """A DataFrame -> what the program takes: a table model's ``(x, mask)`` from its schema, else its numbers
    (NaN kept, for :func:`_split`)."""
    schema = getattr(owner, "schema", None)
    if schema is not None:
        x, mask = schema.tensors(frame, arg)
        return x if mask is None else (x, mask)
    try:
        values = frame.to_numpy(dtype="float32", na_value=float("nan"))
    except (TypeError, ValueError) as err:
        raise DataError(
            f"{arg}: a DataFrame with non-numeric columns needs a table model: "
            f"data = ppl_vae.load_dataset(frame); VAE(len(data.schema), likelihood='auto', "
            f"schema=data.schema) ({err})"
        ) from None
    return torch.from_numpy(values)


def _split(rows: Rows, owner: Any, arg: str) -> Rows:
    """NaN in the observations -> the owner's ``split_missing`` (filled, mask), or the idiom's error."""
    if not (rows[0].is_floating_point() and bool(torch.isnan(rows[0]).any())):
        return rows
    hook = getattr(owner, "split_missing", None)
    if not callable(hook):
        raise DataError(
            f"{arg} has missing values (NaN) and this program has no way to leave them out: "
            f"{PYRO_MASK_IDIOM}"
        )
    return tuple(hook(rows))


def as_train_data(
    data: Any,
    test_data: Any,
    inputs: Callable[[Dataset, str], Rows] | None,
    owner: Any = None,
) -> TrainData:
    """Normalise ``fit``'s ``data``/``test_data`` (see the module docstring); ``inputs`` is the
    program's ``dataset_inputs`` hook, if it has one; ``owner`` the program's object (its
    ``split_missing`` hook and a table model's schema)."""
    if _is_frame(data):
        data = _frame_rows(data, owner, "data")
    if _is_frame(test_data):
        test_data = _frame_rows(test_data, owner, "test_data")
    if isinstance(data, Dataset):
        if test_data is not None:
            raise ArgumentTypeError(
                "test_data is taken from the Dataset's test split; pass test_data only "
                "with tensor data"
            )
        extra_train = hook_rows(inputs, data, "train") if inputs else ()
        extra_test = hook_rows(inputs, data, "test") if inputs else ()
        test = (data.test, *extra_test) if data.test is not None and len(data.test) else None
        return TrainData((data.train, *extra_train), test, data.meta.to_dict(), data, extra_train)
    train = _split(as_rows(data, "data", nan_ok=True), owner, "data")
    test = (
        _split(as_rows(test_data, "test_data", nan_ok=True), owner, "test_data")
        if test_data is not None
        else None
    )
    if test is not None and len(test) != len(train):
        raise ArgumentTypeError(
            f"test_data must have the same form as data ({len(train)} tensor(s)); got {len(test)}"
        )
    meta = {
        "name": "tensor",
        "source": "tensor",
        "n_train": len(train[0]),
        "n_test": 0 if test is None else len(test[0]),
        "shapes": [list(t.shape[1:]) for t in train],
    }
    return TrainData(train, test, meta)


def _is_frame(data: Any) -> bool:
    return hasattr(data, "columns") and hasattr(data, "iloc")


#: How many earlier sets of tensors :func:`validate` remembers as checked (a loop over a few data chunks).
KEEP_CHECKED = 8


def _checked_before(memo: dict[str, Any], key: tuple, tensors: Rows) -> bool:
    """Whether these very tensors (alive, the same objects, unchanged) passed the checks before."""
    refs = memo.get("checked", {}).get(key)
    return refs is not None and all(r() is t for r, t in zip(refs, tensors, strict=True))


def _remember_checked(memo: dict[str, Any], key: tuple, tensors: Rows) -> None:
    """Weak references only: remembering a set never keeps its tensors alive."""
    checked = memo.setdefault("checked", {})
    checked.pop(key, None)
    checked[key] = tuple(weakref.ref(t) for t in tensors)
    while len(checked) > KEEP_CHECKED:
        checked.pop(next(iter(checked)))


def validate(
    data: TrainData, check: Callable[[Rows, str], Rows], memo: dict[str, Any]
) -> TrainData:
    """Run the boundary checks once per set of tensors: ``check(rows, arg) -> rows`` on train, test and,
    under dynamic binarisation, a rounding of the grey levels (the values later epochs can draw).

    ``memo`` (kept by the training state across ``fit`` calls) remembers the last tensors checked, by
    identity, storage and version counter, and what the checks returned for them; and, by weak
    reference, the last :data:`KEEP_CHECKED` sets the checks passed unchanged (a loop of ``fit`` calls
    over a few chunks of data checks each chunk once).
    """
    probs_of = data.dataset.train_probs if data.dataset is not None else None
    dynamic = data.dataset is not None and data.dataset.meta.binarize == "dynamic"
    probs: Rows = (probs_of,) if dynamic and probs_of is not None else ()
    key = (_fingerprint(data.train), _fingerprint(data.test), _fingerprint(probs))
    tensors = (*data.train, *(data.test or ()), *probs)
    if (
        memo.get("key") == key
    ):  # the same tensors as the last call: memo["key"] stays the same object
        train, test = memo["rows"]
        return TrainData(train, test, data.meta, data.dataset, data.extra_train)
    if _checked_before(memo, key, tensors):
        train, test = data.train, data.test
    else:
        train = check(as_rows(data.train, "data.train"), "data.train")
        test = (
            check(as_rows(data.test, "data.test"), "data.test") if data.test is not None else None
        )
        if probs:
            check((probs[0].clamp(0, 1).round(), *data.train[1:]), "data.train_probs")
        if all(
            a is b
            for a, b in zip((*train, *(test or ())), (*data.train, *(data.test or ())), strict=True)
        ):
            _remember_checked(memo, key, tensors)  # the checks passed them as they are
    memo.update(key=key, rows=(train, test))
    return TrainData(train, test, data.meta, data.dataset, data.extra_train)
