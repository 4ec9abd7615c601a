"""Per-column diagnostics of a table model: which columns a model explains badly, in the data's units.

:func:`column_shares` gives, per row and column, ``E_q(z|x)[log p(x_j | z)]`` (nats, 0 for a missing cell):
the ELBO is their sum over columns minus ``KL(q(z|x) || p(z))``, so the columns' shares of the ELBO are
exact, and a column with a low share is one the model reconstructs badly. (log p(x) itself does not split
into columns: it integrates over z.) :func:`~ppl_vae.evaluate` adds them to its per-point table as
``column:<name>`` and to its summary as ``columns`` (type, family, mean, standard error, fraction missing).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch

__all__ = ["column_shares", "column_summary", "format_columns"]

#: Draws of q per point for the columns' expected log-likelihoods.
COLUMN_DRAWS = 16


def column_shares(
    model: Any, rows: tuple[torch.Tensor, ...], seed: int = 0, num_samples: int = COLUMN_DRAWS
) -> pd.DataFrame | None:
    """``(N, D)`` expected log-likelihood per column (module docstring), or None for a model that is not a
    table model (no ``schema`` with a ``column_log_likelihood`` method)."""
    schema = getattr(model, "schema", None)
    method = getattr(model, "column_log_likelihood", None)
    if schema is None or not callable(method):
        return None
    x, mask = rows[0], (rows[1] if len(rows) > 1 else None)
    was = model.training
    model.eval()
    try:
        gen = torch.Generator().manual_seed(seed)
        parts = [
            method(x[i : i + 1024], None if mask is None else mask[i : i + 1024], num_samples, gen)
            for i in range(0, len(x), 1024)
        ]
    finally:
        model.train(was)
    values = torch.cat(parts).double().cpu().numpy()
    return pd.DataFrame(values, columns=[f"column:{name}" for name in schema.names])


def column_summary(model: Any, shares: pd.DataFrame, mask: torch.Tensor | None) -> dict[str, Any]:
    """``{column: {type, family, mean, se, missing}}`` for a report's summary."""
    schema = model.schema
    families = getattr(model.likelihood, "specs", {})
    seen = None if mask is None else mask.cpu().numpy()
    out: dict[str, Any] = {}
    for j, c in enumerate(schema):
        v = shares.iloc[:, j].to_numpy()
        if seen is not None:
            v = v[seen[:, j]]
        se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan
        out[c.name] = {
            "type": c.type,
            "family": families.get(c.name, model.likelihood.spec),
            "mean": float(np.mean(v)) if len(v) else math.nan,
            "se": se,
            "missing": float(1.0 - seen[:, j].mean()) if seen is not None else 0.0,
        }
    return out


def format_columns(columns: dict[str, dict[str, Any]]) -> str:
    """The summary's ``columns`` as aligned text, lowest share first (the columns explained worst)."""
    width = max([len("column"), *(len(name) for name in columns)])
    lines = [
        "per column: E_q[log p(x_j | z)], nats per row in the data's units (their sum minus the KL is the "
        "ELBO); lowest first",
        f"{'column':<{width}}  {'type':<11}  {'family':<18}  {'share':>10}  {'se':>8}  missing",
    ]
    for name, c in sorted(columns.items(), key=lambda kv: kv[1]["mean"]):
        lines.append(
            f"{name:<{width}}  {c['type']:<11}  {c['family']:<18}  {c['mean']:>10.4f}  "
            f"{c['se']:>8.4f}  {c['missing']:.1%}"
        )
    return "\n".join(lines)
