r"""A comparison that survives a kill: every finished (method, seed) cell committed on disk, reused on a re-run.

``run_comparison(..., cells="OUT/cells")`` (and ``ppl-vae compare --out OUT``, which always keeps them)
commits each cell, once its model is trained and evaluated, as one output set
``OUT/cells/s<seed>-<method>-<hash>/`` (:func:`ppl_vae.store.outputs.commit_output_set`: written beside,
swapped in whole): ``row.json`` (its line of the table, the data fingerprint, the KL per unit),
``points.csv`` (per test point) and ``curve.csv`` (the training curve), with a manifest recording the
comparison's settings. A re-run with the same settings reads the finished cells back (every file checked
against its manifest) and trains only the others; a cell killed half-way was never committed, so it is
trained again (the leftover temporary folder is removed when it commits). Cells whose settings differ
from the re-run's are refused in one line naming what changed. Every model is still *built* in order,
so the cells trained later start from the same initial weights as in an uninterrupted run, and the
result equals it (training and evaluation are seeded per cell).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import RunExistsError, UserError
from ..store.lock import lock_folder
from ..store.outputs import MANIFEST, commit_output_set, read_output_set

__all__ = ["CELL_FILES", "Cell", "CellStore", "RESULT_SETTINGS"]

CELL_FILES = ("row.json", "points.csv", "curve.csv")
#: the settings a cell's numbers depend on (the rest, e.g. the reference, only change the summaries)
RESULT_SETTINGS = (
    "methods",
    "dataset",
    "seeds",
    "epochs",
    "num_samples",
    "eval_seed",
    "latent_dim",
    "hidden_dims",
    "likelihood",
    "activation",
    "binarize",
    "batch_size",
    "lr",
    "n_samples",
    "device",
    "time_budget",
    "estimator",
    "test_points",
    "test_curve",
    "evaluate_options",
    "fast",
)


@dataclass
class Cell:
    """One finished (method, seed) of a comparison, as :class:`CellStore` keeps it."""

    row: dict[str, Any]
    points: pd.DataFrame
    curve: pd.DataFrame
    fingerprint: dict[str, Any]
    kl: list[float]


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)


def _text(obj: Any) -> str:
    """JSON that keeps NaN and every float's digits (the row holds NaN for what a method lacks)."""
    return json.dumps(obj, default=_jsonable, allow_nan=True, sort_keys=True)


def _frame_bytes(frame: pd.DataFrame) -> bytes:
    """A frame as CSV under a first line of its dtypes, so :func:`_frame_of` gives it back exactly."""
    dtypes = json.dumps({str(c): str(t) for c, t in frame.dtypes.items()})
    return (dtypes + "\n" + frame.to_csv(index=False)).encode()


def _frame_of(data: bytes) -> pd.DataFrame:
    head, _, body = data.decode().partition("\n")
    dtypes = json.loads(head)
    if not body.strip():
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in dtypes.items()})
    frame = pd.read_csv(io.StringIO(body), float_precision="round_trip", keep_default_na=True)
    return frame.astype({c: t for c, t in dtypes.items() if t != "object"})


def _cell_name(seed: int, label: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9=.,_-]+", "_", label)[:60]
    return f"s{seed}-{slug}-{hashlib.sha1(label.encode()).hexdigest()[:8]}"


def _changed(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    return [
        f"{k} {recorded.get(k)!r} -> {now.get(k)!r}"
        for k in RESULT_SETTINGS
        if recorded.get(k) != now.get(k)
    ]


class CellStore:
    """The finished cells of one comparison in ``folder`` (module docstring).

    Args:
        folder: ``OUT/cells``; made when the first cell commits.
        replace: cells recorded with other settings are removed (they are ours: each holds only what
            its manifest lists) instead of refused (``ppl-vae compare --force``).

    Attributes:
        reused: the labels ``"method (seed s)"`` of the cells read back by this run.
        trained: those trained (and committed) by it.
    """

    def __init__(self, folder: str | os.PathLike[str], replace: bool = False) -> None:
        self.folder = Path(folder)
        self.replace = replace
        self.settings: dict[str, Any] = {}
        self.reused: list[str] = []
        self.trained: list[str] = []

    def names(self) -> list[str]:
        """The committed cells' folder names (leftovers of a killed commit are not cells)."""
        if not self.folder.is_dir():
            return []
        return sorted(
            p.name
            for p in self.folder.iterdir()
            if not p.name.startswith(".") and (p / MANIFEST).is_file()  # a killed commit's leftover
        )

    def start(self, settings: dict[str, Any]) -> None:
        """Record this comparison's settings; refuse (or, with ``replace``, remove) cells of other settings."""
        self.settings = json.loads(_text({k: settings.get(k) for k in RESULT_SETTINGS}))
        for name in self.names():
            recorded = read_output_set(self.folder, name, files=[]).record.get("settings", {})
            changed = _changed(recorded, self.settings)
            if not changed:
                continue
            if not self.replace:
                raise RunExistsError(
                    f"{self.folder} holds cells of a comparison with other settings ({'; '.join(changed)}): "
                    "run it with the same settings to resume it, pass --force to start again, or choose "
                    "another --out"
                )
            self._remove(name)

    def _remove(self, name: str) -> None:
        from ..store.commit import remove
        from ..store.outputs import check_replaceable

        check_replaceable(self.folder / name)  # only what its manifest lists, never a user's file
        remove(self.folder / name)

    def load(self, seed: int, label: str, fingerprint: dict[str, Any]) -> Cell | None:
        """The finished cell of ``label`` for ``seed``, or None; refused when its data were other data."""
        name = _cell_name(seed, label)
        if name not in self.names():
            return None
        found = read_output_set(self.folder, name, list(CELL_FILES))
        doc = json.loads(found.files["row.json"])
        if json.loads(_text(fingerprint)) != doc["fingerprint"]:
            raise UserError(
                f"{self.folder / name}: cell {label!r} (seed {seed}) was computed on other data than this "
                "run loads (the data file or its split changed): pass --force to start again"
            )
        self.reused.append(f"{label} (seed {seed})")
        return Cell(
            row=doc["row"],
            points=_frame_of(found.files["points.csv"]),
            curve=_frame_of(found.files["curve.csv"]),
            fingerprint=fingerprint,
            kl=list(doc["kl"]),
        )

    def save(self, seed: int, label: str, cell: Cell) -> Path:
        """Commit ``cell`` as one set (under ``OUT/cells``'s writer lock)."""
        files = {
            "row.json": _text(
                {"row": cell.row, "fingerprint": cell.fingerprint, "kl": cell.kl}
            ).encode(),
            "points.csv": _frame_bytes(cell.points),
            "curve.csv": _frame_bytes(cell.curve),
        }
        record = {"command": "compare", "method": label, "seed": seed, "settings": self.settings}
        self.folder.mkdir(parents=True, exist_ok=True)
        with lock_folder(self.folder) as folder:
            path = commit_output_set(folder, _cell_name(seed, label), files, record)
        self.trained.append(f"{label} (seed {seed})")
        return path
