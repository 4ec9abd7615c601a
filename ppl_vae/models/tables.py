r"""What the built-in VAEs share for tables and missing values: the mask as a row-aligned input, encoder
features, schema checks, and samples and reconstructions as DataFrames in the user's terms.

A built-in model's programs take the mask as their second, optional input::

    vae.model(x, mask=None)    p(z) p(x_obs | z): the likelihood scores the cells where mask is True
    vae.guide(x, mask=None)    q(z | x): the encoder sees likelihood.features(x, mask) (standardised values,
                               one-hot levels, zeros for missing cells), and the mask itself when the model
                               was built with mask_inputs=True (the default for a table with missing cells)

``dataset_inputs(dataset, split)`` returns ``(mask,)`` for a Dataset with missing cells, so ``fit``, every
estimator, ``evaluate`` and ``compare`` score ``log p(x_obs)`` through the programs as written, with no other
code path. ``split_missing(rows)`` turns a raw ``(N, D)`` tensor with NaN into ``(filled, mask)`` (a table
model fills with its schema's fills, any other with the column means), so ``fit(vae, x_with_nan)`` works;
a user's own program given NaN gets one error showing the Pyro idiom instead
(:data:`~ppl_vae.data.missing.PYRO_MASK_IDIOM`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, cast

import torch

from ..data.missing import check_observed, fill_missing
from ..data.schema import Schema
from ..errors import ArgumentTypeError, DataError, UserError
from ..likelihoods import Likelihood, TableLikelihood, check_matrix, make_likelihood

__all__ = ["ColumnShares", "TableInputs", "build_likelihood", "likelihood_config"]


def likelihood_config(likelihood: Likelihood) -> Any:
    """What a model's config records of its likelihood: the spec, or a table likelihood's dict."""
    config = getattr(likelihood, "config", None)
    return config if isinstance(config, dict) else likelihood.spec


def build_likelihood(likelihood: Any, input_dim: int, schema: Any = None) -> Likelihood:
    """A model's likelihood from its arguments: a spec or instance, or with ``schema`` a table's families."""
    if schema is not None:
        schema = Schema.from_dict(schema)
        if len(schema) != input_dim:
            raise UserError(
                f"the schema has {len(schema)} columns ({', '.join(schema.names)}) but input_dim is "
                f"{input_dim}: use input_dim=len(data.schema)"
            )
        if isinstance(likelihood, Likelihood):
            raise ArgumentTypeError(
                "pass either a Likelihood instance or schema= with a spec, not both"
            )
        return TableLikelihood(schema, likelihood)
    if likelihood == "auto" or (isinstance(likelihood, dict) and "table" not in likelihood):
        raise UserError(
            f"likelihood={likelihood!r} chooses families by a table's column types: pass the table's "
            "schema too, VAE(input_dim=len(data.schema), likelihood='auto', schema=data.schema)"
        )
    return make_likelihood(likelihood, input_dim)


class TableInputs:
    """Mixin of the built-in VAEs (module docstring); needs ``self.likelihood``, ``self.input_dim`` and
    ``self.mask_inputs``."""

    likelihood: Likelihood
    input_dim: int
    mask_inputs: bool
    sample: Callable[..., torch.Tensor]  # the VAE's own
    reconstruct: Callable[..., torch.Tensor]

    @property
    def schema(self) -> Schema | None:
        """The table's schema when the likelihood is a :class:`~ppl_vae.likelihoods.TableLikelihood`."""
        lik = self.likelihood
        return lik.schema if isinstance(lik, TableLikelihood) else None

    def encoder_width(self) -> int:
        return self.likelihood.feature_dim() + (self.input_dim if self.mask_inputs else 0)

    def encoder_input(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """What the encoder sees of ``x: (N, D)`` with its mask (module docstring)."""
        feats = self.likelihood.features(x) if mask is None else self.likelihood.features(x, mask)
        if not self.mask_inputs:
            return feats
        seen = x.new_ones(x.shape) if mask is None else mask.to(x.dtype)
        return torch.cat([feats, seen.expand(feats.shape[:-1] + seen.shape[-1:])], -1)

    def observation(self, out: torch.Tensor, mask: torch.Tensor | None = None) -> Any:
        """The distribution of the observed site: ``likelihood.dist(out)`` or, with a mask, ``dist(out, mask)``."""
        return self.likelihood.dist(out) if mask is None else self.likelihood.dist(out, mask)

    # ------------------------------------------------------------------ the program contract's hooks
    def dataset_inputs(self, dataset: Any, split: str) -> tuple[torch.Tensor, ...]:
        """``(mask,)`` when the dataset has missing cells, else (); checks a table's schema matches."""
        mine, theirs = self.schema, getattr(dataset, "schema", None)
        if mine is not None and theirs is not None and not mine.same_columns(theirs):
            raise DataError(
                f"the data's columns ({theirs!r}) are not the ones this model was built for ({mine!r}): "
                "build the model from this data's schema, or load data with the model's columns"
            )
        if mine is None and theirs is not None and needs_table_likelihood(theirs):
            warnings.warn(
                f"the data are a table ({len(theirs)} columns, types "
                f"{sorted(set(theirs.types.values()))}) but the model's likelihood {self.likelihood.spec!r} "
                "scores the model-space values (standardised numbers, level codes as numbers): its log p(x) "
                "is not in the data's units; build the model with schema=data.schema (likelihood='auto')",
                UserWarning,
                stacklevel=4,
            )
        mask = dataset.mask(split) if hasattr(dataset, "mask") else None
        return () if mask is None else (mask,)

    def split_missing(self, rows: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """``(x_with_nan, *rest)`` -> ``(filled, mask, *rest)`` (module docstring)."""
        x = rows[0]
        if len(rows) > 1:
            raise DataError(
                "x has missing values (NaN) and a mask was given too: pass either x with NaN, or the "
                "filled x with its mask"
            )
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            raise DataError(
                f"x must have shape (N, {self.input_dim}) for this model; got {tuple(x.shape)}"
            )
        if bool(torch.isinf(x).any()):
            raise DataError("x: infinite values; NaN means missing, inf is an error: replace them")
        mask = ~torch.isnan(x)
        check_observed(mask, "x", check_columns=False)
        if self.schema is not None:
            fill = torch.as_tensor(self.schema.fills(), dtype=x.dtype, device=x.device)
        else:
            seen = mask.sum(0).clamp_min(1)
            fill = torch.where(mask, x, torch.zeros_like(x)).sum(0) / seen
        return (fill_missing(x, mask, fill), mask)

    def check_rows(
        self, rows: tuple[torch.Tensor, ...], arg: str = "x"
    ) -> tuple[torch.Tensor, ...]:
        """Validate ``(x,)`` or ``(x, mask)`` at the boundary: shapes, finiteness, the likelihood's support on
        the observed cells, and no row without an observed cell."""
        x = check_matrix(rows[0], self.input_dim, arg)
        if len(rows) == 1:
            self.likelihood.check(x, arg)
            return (x,)
        if len(rows) > 2:
            raise ArgumentTypeError(
                f"{arg}: this model takes (x,) or (x, mask); got {len(rows)} row-aligned tensors"
            )
        mask = rows[1]
        if mask.dtype != torch.bool or mask.shape != x.shape:
            raise DataError(
                f"{arg}: the mask must be a bool tensor of x's shape {tuple(x.shape)} (True = observed); "
                f"got {mask.dtype} of shape {tuple(mask.shape)}"
            )
        check_observed(mask, arg, check_columns=False)
        self.likelihood.check(x, arg, mask)
        return (x, mask)

    def check_data(self, x: object, arg: str = "x") -> torch.Tensor:
        """Validate a batch at the boundary: a finite float tensor ``(N, D)`` in the likelihood's support."""
        return self.check_rows((cast(torch.Tensor, x),), arg)[0]  # check_rows validates it

    # ------------------------------------------------------------------ outputs in the user's terms
    def _table(self, what: str) -> Schema:
        if self.schema is None:
            raise UserError(
                f"{what} as a DataFrame needs a table model (built with schema=data.schema); this model's "
                f"likelihood is {self.likelihood.spec!r}: use the tensor methods"
            )
        return self.schema

    def sample_frame(
        self, n: int, generator: torch.Generator | None = None, mean: bool = False
    ) -> Any:
        """``n`` draws of ``p(x)`` (``mean=True``: the means of ``p(x | z)``) as a DataFrame: original column
        names, categories as their strings, counts as integers."""
        schema = self._table("sample")
        return schema.to_frame(self.sample(n, generator=generator, mean=mean))

    @torch.no_grad()
    def reconstruct_frame(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, index: Any = None
    ) -> Any:
        """The reconstruction (mean of ``p(x | z)`` at the posterior mean of q) of rows ``x`` as a DataFrame."""
        schema = self._table("reconstruct")
        return schema.to_frame(self.reconstruct(x, mask), index=index)


def needs_table_likelihood(schema: Schema) -> bool:
    """Whether a plain likelihood would score anything but raw real values (levels, counts, transforms)."""
    return any(c.type != "real" or c.transform != "identity" for c in schema)


class ColumnShares:
    """Mixin: each column's expected log-likelihood under q (needs ``self.decoder_outputs``)."""

    likelihood: Likelihood
    decoder_outputs: Callable[..., torch.Tensor]

    @torch.no_grad()
    def column_log_likelihood(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        num_samples: int = 16,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``E_q(z|x)[log p(x_j | z)]`` per row and column, ``(N, D)`` nats in the data's units (0 for a
        missing cell), from ``num_samples`` draws of q. Summed over columns and minus ``KL(q || p)`` it is the
        ELBO: which columns a model explains badly."""
        with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
            if generator is not None:
                torch.manual_seed(int(torch.randint(0, 2**62, (), generator=generator)))
            out = self.decoder_outputs(x, mask, num_samples)
        return self.likelihood.column_log_prob(out, x, mask).mean(0)
