r"""One likelihood for a whole table: ``p(x | z) = prod_j p_j(x_j | z)``, a family per column, masks honoured.

:class:`TableLikelihood` is a :class:`~.base.Likelihood` like any other (the ``VAE``, ``HierarchicalVAE``, the
estimators and ``evaluate`` use it unchanged). It is built from a table's
:class:`~ppl_vae.data.schema.Schema` and a choice of families:

* ``"auto"``: by column type -- real: ``gaussian``, positive: ``lognormal``, count: ``negbin``, binary:
  ``bernoulli``, categorical: ``categorical`` (:data:`AUTO`);
* one spec for every column (``"gaussian"``: each column must be of a type the family declares);
* a mapping ``{column: spec}``; columns it does not name are ``"auto"``.

Any registered likelihood whose entry declares column ``types`` can be a column's family (a user's own too,
see :func:`~.base.register_likelihood`). Columns with the same family spec form one block, evaluated in one
vectorised call; the decoder output is the blocks' outputs side by side (``out_dim`` = their sum: 1 per
numeric column, 2 per ZINB column, K per categorical one) and the encoder sees the blocks' features side by
side (standardised values, one-hot levels, zeros for missing cells).

**Units.** Each family scores its cells in the column's **original units**, the Jacobian of the schema's
transform and of the family's own standardisation included (:mod:`.transforms`), so log p(x) per row is the
same number whether or not the table was standardised, and two models of one table compare in the same nats.
With a mask, unobserved cells score 0: ``log p(x_obs | z)``.

The likelihood records its schema and families in :attr:`config`, so a checkpoint rebuilds it exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import nn

from ..data.schema import Schema
from ..errors import DataError, UserError
from ..registry import REGISTRY, register
from .base import Likelihood

__all__ = ["AUTO", "TableLikelihood", "column_specs"]

#: The family of each column type under ``likelihood="auto"``.
AUTO: dict[str, str] = {
    "real": "gaussian",
    "positive": "lognormal",
    "count": "negbin",
    "binary": "bernoulli",
    "categorical": "categorical",
}


def _canonical(spec: str, column: str, ctype: str) -> str:
    parsed = REGISTRY.parse("likelihood", spec)
    types = parsed.entry.trait("types")
    if not types:
        raise UserError(
            f"likelihood {parsed.name!r} cannot model a table column (its registry entry declares no "
            f"column types); for column {column!r} ({ctype}) choose one of: {', '.join(_families(ctype))}"
        )
    if ctype not in types:
        raise UserError(
            f"column {column!r} is {ctype}, which likelihood {parsed.name!r} does not model (it takes "
            f"{', '.join(types)}): choose one of {', '.join(_families(ctype))} for it (likelihood="
            f"{{{column!r}: ...}}; CLI --column-likelihood {column}=...), or declare the column's type "
            f"(types={{{column!r}: ...}}; CLI --column-type {column}=...)"
        )
    return str(parsed)


def _families(ctype: str) -> list[str]:
    return [e.name for e in REGISTRY.entries("likelihood") if ctype in (e.trait("types") or ())]


def column_specs(schema: Schema, likelihood: str | Mapping[str, str] = "auto") -> dict[str, str]:
    """The canonical family spec of every column (see the module docstring); errors name the column."""
    if isinstance(likelihood, str):
        chosen = {c.name: likelihood for c in schema}
    elif isinstance(likelihood, Mapping):
        unknown = [k for k in likelihood if k not in schema.names]
        if unknown:
            raise UserError(
                f"likelihood names column(s) {', '.join(map(repr, unknown))}, which the table's schema "
                f"does not have; its columns: {', '.join(schema.names)}"
            )
        chosen = {c.name: likelihood.get(c.name, "auto") for c in schema}
    else:
        raise UserError(
            f"a table's likelihood is 'auto', one spec for every column or a mapping {{column: spec}}; "
            f"got {type(likelihood).__name__}"
        )
    return {
        c.name: _canonical(
            AUTO[c.type] if chosen[c.name] == "auto" else chosen[c.name], c.name, c.type
        )
        for c in schema
    }


def _take(t: torch.Tensor, index: torch.Tensor, sl: slice | None) -> torch.Tensor:
    return t[..., sl] if sl is not None else t[..., index]


class TableLikelihood(Likelihood):
    """The composite likelihood of a table (module docstring).

    Args:
        schema: the table's :class:`~ppl_vae.data.schema.Schema` (or its dict).
        likelihood: ``"auto"``, one spec for every column, or ``{column: spec}``.

    Examples:
        >>> import pandas as pd
        >>> import ppl_vae as pv
        >>> frame = pd.DataFrame({"visits": [0, 3, 12, 9, 14, 2], "dose": [0.01, 2.5, 40.0, 0.3, 1.1, 7.0],
        ...                       "smoker": ["no", "yes", "no", "no", "yes", "no"]})
        >>> data = pv.load_dataset(frame, test_fraction=0.34)
        >>> pv.TableLikelihood(data.schema, {"visits": "poisson"}).describe()
        {'visits': 'count -> poisson', 'dose': 'positive -> lognormal', 'smoker': 'binary -> bernoulli'}
        >>> vae = pv.VAE(len(data.schema), 2, (8,), likelihood="auto", schema=data.schema)
        >>> pv.elbo(vae, data.test, seed=0).shape  # nats per row, in the data's own units
        torch.Size([3])
    """

    inverse: torch.Tensor
    schema: Schema

    name = "table"

    def __init__(
        self, schema: Schema | dict[str, Any], likelihood: str | Mapping[str, str] = "auto"
    ) -> None:
        schema = Schema.from_dict(schema)
        super().__init__(len(schema), schema.columns)
        self.schema = schema
        self.specs = column_specs(schema, likelihood)
        groups: dict[str, list[int]] = {}
        for j, c in enumerate(schema):
            groups.setdefault(self.specs[c.name], []).append(j)
        self.blocks = nn.ModuleList()
        self._slices: list[slice | None] = []
        self._out: list[slice] = []
        start = 0
        for spec, positions in groups.items():
            cols = [schema.columns[j] for j in positions]
            family = REGISTRY.parse("likelihood", spec).build(input_dim=len(cols), columns=cols)
            if not isinstance(family, Likelihood):
                raise UserError(
                    f"likelihood {spec!r} built {type(family).__name__}, not a Likelihood"
                )
            self.blocks.append(family)
            contiguous = positions == list(range(positions[0], positions[-1] + 1))
            self._slices.append(slice(positions[0], positions[-1] + 1) if contiguous else None)
            self.register_buffer(
                f"index{len(self.blocks) - 1}", torch.tensor(positions), persistent=False
            )
            self._out.append(slice(start, start + family.out_dim()))
            start += family.out_dim()
        self._out_dim = start
        order = torch.cat([getattr(self, f"index{b}") for b in range(len(self.blocks))])
        self.register_buffer("inverse", torch.argsort(order), persistent=False)
        self._identity_order = bool((order == torch.arange(len(order))).all())

    # ------------------------------------------------------------------ records
    @property
    def spec(self) -> str:
        return self.name

    @property
    def config(self) -> dict[str, Any]:
        """What rebuilds this likelihood (:meth:`from_config`): the schema and each column's family."""
        return {"table": self.schema.to_dict(), "families": dict(self.specs)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TableLikelihood:
        if "table" not in config:
            raise UserError(
                f"a likelihood given as a dict must be a table likelihood's config (keys 'table', "
                f"'families'); got keys {sorted(config)}"
            )
        return cls(config["table"], config.get("families", "auto"))

    def describe(self) -> dict[str, str]:
        """``{column: "type -> family"}`` (what reports print)."""
        return {c.name: f"{c.type} -> {self.specs[c.name]}" for c in self.schema}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}: {v}" for k, v in self.describe().items())

    # ------------------------------------------------------------------ layout
    def out_dim(self) -> int:
        return self._out_dim

    def feature_dim(self) -> int:
        return sum(cast(Likelihood, b).feature_dim() for b in self.blocks)

    def _parts(self):
        index = [(getattr(self, f"index{b}"), sl) for b, sl in enumerate(self._slices)]
        return zip(self.blocks, index, self._out, strict=True)

    def _assemble(self, parts: list[torch.Tensor]) -> torch.Tensor:
        joined = torch.cat(parts, -1)
        return joined if self._identity_order else joined[..., self.inverse]

    # ------------------------------------------------------------------ likelihood
    def log_prob_cells(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self._assemble(
            [
                fam.log_prob_cells(out[..., osl], _take(x, idx, sl))
                for fam, (idx, sl), osl in self._parts()
            ]
        )

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return self._assemble([fam.mean(out[..., osl]) for fam, _, osl in self._parts()])

    def sample(self, out: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self._assemble(
            [fam.sample(out[..., osl], generator) for fam, _, osl in self._parts()]
        )

    def features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return torch.cat(
            [
                fam.features(_take(x, idx, sl), None if mask is None else _take(mask, idx, sl))
                for fam, (idx, sl), _ in self._parts()
            ],
            -1,
        )

    def block(self, name: str) -> tuple[Likelihood, int, slice]:
        """The family modelling column ``name``, the column's position within it, and the block's outputs."""
        j = self.schema.position(name)
        for fam, (idx, _), osl in self._parts():
            hit = (idx == j).nonzero()
            if len(hit):
                return fam, int(hit[0]), osl
        raise DataError(f"column {name!r} is in no block")  # unreachable: every column is in one

    def check(self, x: torch.Tensor, arg: str = "x", mask: torch.Tensor | None = None) -> None:
        super().check(x, arg)
        for fam, (idx, sl), _ in self._parts():
            xb, mb = _take(x, idx, sl), None if mask is None else _take(mask, idx, sl)
            try:
                fam.check(xb, arg, mb)
            except DataError:
                for k, j in enumerate(idx.tolist()):  # name the column
                    try:
                        fam.check(
                            xb[..., k : k + 1], arg, None if mb is None else mb[..., k : k + 1]
                        )
                    except DataError as err:
                        name = self.schema.columns[j].name
                        raise DataError(f"column {name!r}: {err}") from None
                raise


def _table_factory(input_dim: int, **_: Any) -> Likelihood:
    raise UserError(
        "likelihood 'table' is built from a table's schema: VAE(..., likelihood='auto', schema=data.schema) "
        "or likelihood={column: spec}"
    )


register(
    "likelihood",
    "table",
    _table_factory,
    doc="a family per table column (likelihood='auto' or {column: spec} with schema=); log p in original units",
    support="a table's columns",
    reconstruction="nll",
)
