"""Reading a user's CSV as the statistician wrote it: encodings, a header (of words or of numbers), row labels.

:func:`read_csv_frame` returns a pandas DataFrame whose index is the file's data-row number (0 for the first
row after the header, as pandas counts; a column the schema finds ID-like replaces it later) and whose
column names are strings. Its rules:

* **Encoding**: UTF-8 (a byte-order mark is skipped); a UTF-16 file with its byte-order mark is read as
  UTF-16; anything else that is not UTF-8 is read as Windows-1252 (Excel's "CSV" on Windows; every byte
  decodes, Latin-1 is its subset) and a warning says so. A file with NUL bytes and no UTF-16 mark is not a
  text CSV: one error.
* **Header**: ``header=True`` / ``False`` say it. ``"auto"``: a first row with any cell that is not a number
  is a header; a first row of numbers only is data, unless it looks like a header of numbers (``2019,2020``):
  every value an integer, distinct, and outside the range of the rest of its column by more than that
  range's width or over a column of fractions -- then it is a header and a warning says so.
* Empty cells, ``NA``, ``NaN``, ``null`` (pandas' defaults) are missing values.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import DataError

__all__ = ["Header", "decode_bytes", "read_csv_frame"]

Header = bool | Literal["auto"]


def decode_bytes(raw: bytes, path: Path | str) -> str:
    """The text of a CSV file, by the encoding rules of the module docstring."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError as err:
            raise DataError(
                f"{path}: starts with a UTF-16 mark but is not UTF-16 ({err.reason})"
            ) from None
    if b"\x00" in raw:
        raise DataError(
            f"{path}: holds NUL bytes, so it is not a text CSV (a spreadsheet, or UTF-16 without its "
            "mark): save it as 'CSV UTF-8'"
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        at = err.start
    try:
        text, used = raw.decode("cp1252"), "Windows-1252 (cp1252)"
    except UnicodeDecodeError:
        text, used = raw.decode("latin-1"), "Latin-1"
    warnings.warn(
        f"{path} is not UTF-8 (byte {at}): read it as {used}, Excel's usual encoding; save it as "
        "'CSV UTF-8' if characters look wrong",
        UserWarning,
        stacklevel=3,
    )
    return text


def _is_number(text: Any) -> bool:
    try:
        float(str(text))
    except ValueError:
        return False
    return True


def _numeric_header(first: list[str], body: Any) -> bool:
    """Whether a first row of numbers is a header (see the module docstring)."""
    import pandas as pd

    values = [float(v) for v in first]
    if len(set(values)) != len(values) or not all(v.is_integer() for v in values):
        return False
    for j, h in enumerate(values):
        rest = pd.to_numeric(body.iloc[:, j], errors="coerce").dropna().to_numpy(dtype=np.float64)
        if rest.size == 0:
            return False
        lo, hi = rest.min(), rest.max()
        if lo <= h <= hi:
            return False
        fractions = bool(np.any(rest != np.rint(rest)))
        if not fractions and min(abs(h - lo), abs(h - hi)) <= hi - lo:
            return False
    return True


def _names(first: list[Any]) -> list[str]:
    names = []
    for j, v in enumerate(first):
        name = "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip()
        names.append(name or f"x{j}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(
            f"the CSV header repeats column name(s) {dup}: give every column its own name"
        )
    return names


def _has_header(first: list[str], cells: Any, path: Path) -> bool:
    """``header="auto"``: a first row with a non-number is a header; one of numbers only when the rows
    below it differ from it in kind (said in a warning: pass header=False if it is data)."""
    if not all(_is_number(v) for v in first if v.strip()) or not any(v.strip() for v in first):
        return True
    numeric = len(cells) > 1 and _numeric_header(first, cells.iloc[1:])
    if numeric:
        warnings.warn(
            f"{path}: the first row ({', '.join(first[:4])}{', ...' if len(first) > 4 else ''}) "
            "is read as a header of numbers (column names); pass header=False (--header no) if "
            "it is data",
            UserWarning,
            stacklevel=4,
        )
    return numeric


def read_csv_frame(path: Path, header: Header = "auto") -> Any:
    """Read a CSV into a DataFrame of typed columns (see the module docstring)."""
    import pandas as pd

    if header not in (True, False, "auto"):
        raise DataError(f"header must be True, False or 'auto'; got {header!r}")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read the file ({err.strerror})") from None
    text = decode_bytes(raw, path)
    if not text.strip():
        raise DataError(f"{path}: the CSV file is empty")
    try:
        cells = pd.read_csv(io.StringIO(text), header=None, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError as err:
        raise DataError(f"{path}: the CSV file is empty") from err
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: cannot parse the CSV ({' '.join(str(err).split())})") from None
    first = [str(v) for v in cells.iloc[0]]
    has_header = _has_header(first, cells, path) if header == "auto" else bool(header)
    names = _names(first) if has_header else [f"x{j}" for j in range(cells.shape[1])]
    frame = pd.read_csv(
        io.StringIO(text), header=None, skiprows=1 if has_header else 0, names=names
    )
    if len(frame) == 0:
        raise DataError(f"{path}: the CSV has a header but no data rows")
    frame.index = pd.RangeIndex(len(frame), name="row")
    return frame
