"""A run on a table: the likelihood the flags choose for its columns, and what the run says about them.

``ppl-vae train --dataset csv:PATH`` reads the table's schema (:mod:`ppl_vae.data.infer`: each column's type,
its levels, ID-like and constant columns left out), gives every column a family by its type
(``--likelihood auto``; ``--column-likelihood COL=SPEC`` overrides one, ``--column-type COL=TYPE`` its type),
prints the schema once and records it in ``settings.json`` (``settings.data.schema``) and in the model's
config, so ``--resume``, ``evaluate``, ``sample`` and ``impute`` rebuild the same families.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

from ..errors import ArgumentTypeError, DataError, UserError

__all__ = [
    "check_table_flags",
    "column_mapping",
    "is_csv_table",
    "load_with_warnings",
    "replay_warnings",
    "schema_report",
    "table_likelihood",
]


_FLAGS = {"column_types": "--column-type", "column_likelihood": "--column-likelihood"}


def is_csv_table(dataset: str) -> bool:
    """Whether ``dataset`` is a CSV file (a table with a schema: column types, levels, missing cells)."""
    from ..data.tabular import parse_tabular_name

    parsed = parse_tabular_name(dataset)
    return parsed is not None and parsed[0] == "csv"


def column_mapping(name: str, value: Any) -> dict[str, str] | None:
    """``{column: type}`` (``--column-type``) or ``{column: likelihood spec}`` (``--column-likelihood``),
    checked: the types against the schema's, the specs against the registry (their columns are checked
    against the table's once it is read)."""
    from ..data.schema import COLUMN_TYPES

    flag = "--column-type" if name == "column_types" else "--column-likelihood"
    if not value:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ArgumentTypeError(f"{name} must map column names to strings; got {value!r}")
    if name == "column_likelihood":
        from ..registry import REGISTRY

        return {k: str(REGISTRY.parse("likelihood", v)) for k, v in value.items()}
    kinds = (*COLUMN_TYPES, "ignore", "id")
    for column, kind in value.items():
        if kind not in kinds:
            raise UserError(
                f"{flag} {column}={kind}: unknown column type {kind!r}; choose one of {', '.join(kinds)}"
            )
    return dict(value)


def check_table_flags(flags: dict[str, Any], given: dict[str, Any]) -> None:
    """``--column-type`` and ``--column-likelihood`` need a CSV table (and, the latter, a model that
    takes a family per column: vae or hvae)."""
    table = sorted(k for k in ("column_types", "column_likelihood") if given.get(k))
    if table and not is_csv_table(flags["dataset"]):
        raise UserError(
            f"{', '.join(_FLAGS[k] for k in table)}: for a table read from a CSV "
            f"(--dataset csv:PATH); --dataset {flags['dataset']} has no named columns"
        )
    if given.get("column_likelihood") and flags["model"] not in ("vae", "hvae"):
        raise UserError(
            f"--column-likelihood: model {flags['model']!r} has one likelihood for every column; "
            "a family per column is for --model vae or hvae"
        )


def table_likelihood(flags: dict[str, Any], meta: Any) -> dict[str, Any]:
    """``likelihood=`` (and ``schema=``) for :func:`~ppl_vae.models.make_model` from the flags.

    On a table (``meta.schema``) read by vae or hvae: ``"table"`` (``--likelihood auto`` on a CSV) is a family
    per column by its type, ``--column-likelihood COL=SPEC`` overrides some, and any other spec is one family
    for every column, all scored in the data's units; a spec that models no table column (e.g.
    continuous_bernoulli) stays one likelihood over the model-space values, as does everything on an
    all-real table that was not standardised.
    """
    from ..models.tables import needs_table_likelihood
    from ..registry import REGISTRY

    lik, columns = flags["likelihood"], flags.get("column_likelihood") or {}
    schema = getattr(meta, "schema", None)
    if schema is None or flags["model"] not in ("vae", "hvae"):
        if lik == "table":
            raise UserError(
                f"likelihood 'table' (a family per column) needs a table read from a CSV; "
                f"{flags['dataset']} has no columns: choose --likelihood gaussian"
            )
        return {"likelihood": lik}
    from ..data.schema import Schema

    table = Schema.from_dict(schema)
    base = "auto" if lik == "table" else lik
    entry = REGISTRY.get("likelihood", base.partition(":")[0])
    per_column = base == "auto" or bool(entry is not None and entry.trait("types"))
    if not columns and not (base == "auto" or (per_column and needs_table_likelihood(table))):
        return {"likelihood": lik}
    if columns:
        unknown = sorted(set(columns) - set(table.names))
        if unknown:
            raise UserError(
                f"--column-likelihood names {', '.join(map(repr, unknown))}, which the table does not have "
                f"(its columns: {', '.join(table.names)})"
            )
        return {"likelihood": {c: columns.get(c, base) for c in table.names}, "schema": schema}
    return {"likelihood": base, "schema": schema}


_TYPES = re.compile(r"types=\{'([^']+)': '(\w+)'\}")


def in_flags(message: str) -> str:
    """A data-layer message in the run's terms: ``types={'age': 'real'}`` -> ``--column-type age=real``."""
    message = _TYPES.sub(lambda m: f"--column-type {m.group(1)}={m.group(2)}", message)
    return message.replace("types names column", "--column-type names column")


def load_with_warnings(
    load: Any, args: dict[str, Any]
) -> tuple[Any, list[warnings.WarningMessage]]:
    """``load(args)`` with the warnings it gave held back (see :func:`replay_warnings`); a data error
    names the run's flags (:func:`in_flags`)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            data = load(args)
        except DataError as err:
            raise type(err)(in_flags(str(err))) from None
    return data, list(caught)


def replay_warnings(caught: list[warnings.WarningMessage], model: Any) -> None:
    """The data's warnings again, less the raw-scale one when the model's table likelihood standardises
    every column for its networks and scores the data in their own units (then it says nothing)."""
    from ..data.table import ScaleWarning

    table = getattr(model, "schema", None) is not None
    for w in caught:
        if table and issubclass(w.category, ScaleWarning):
            continue
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def schema_report(model: Any, data: Any) -> str | None:
    """The table's columns, their types and the family each is scored by (None when not a table)."""
    schema = getattr(data, "schema", None)
    if schema is None:
        return None
    lik = getattr(model, "likelihood", None)
    families = getattr(lik, "specs", None) if getattr(model, "schema", None) is not None else None
    lines = schema.describe().splitlines()
    head = f"{data.meta.name}: {lines[0]}"
    kept = lines[1 : 1 + len(schema)]
    width = max((len(line) for line in kept), default=0)
    body = []
    for line, column in zip(
        lines[1:], [*schema.names, *(n for n, _ in schema.dropped)], strict=True
    ):
        family = (families or {}).get(column)
        body.append(f"{line:<{width}}  -> {family}" if family and line in kept else line)
    if families is None and lik is not None:
        body.append(
            f"  (every column: likelihood {getattr(lik, 'spec', lik)!r} on the model-space values)"
        )
    return "\n".join([head, *body])
