r"""The likelihood interface: decoder output -> ``p(x | z)``, per row and per cell, with masks.

A :class:`Likelihood` turns the decoder's raw output ``out: (..., out_dim)`` into a distribution with event
shape ``(D,)`` so that ``log p(x | z)`` is one number per data point. The methods a likelihood may implement:

==========================  ===================================================================================
``dist(out, mask=None)``    the distribution of the observation site; with ``mask: (N, D)`` bool, unobserved
                            cells score 0 (the Pyro idiom ``.mask(mask).to_event(1)``). Required.
``log_prob_cells(out, x)``  ``(..., D)`` per-cell log-densities in the data's **original units** (a transform's
                            Jacobian included). Needed to be a column family of a table and for per-column
                            diagnostics; the default ``dist`` is built from it (:class:`CellsDistribution`).
``mean(out)``               ``(..., D)``: the mean of ``p(x | z)`` in original units, expressed in model space
``sample(out, generator)``  ``(..., D)`` draws of ``p(x | z)`` in model space (default ``dist(out).sample()``)
``features(x, mask)``       what the encoder sees of ``x`` (standardised values, one-hot levels); default ``x``
``check(x, arg, mask)``     refuse data outside the support, naming the fix
==========================  ===================================================================================

A likelihood built for table columns receives ``columns=`` (the :class:`~ppl_vae.data.schema.Column` s it
models, with their transforms and train statistics); the same class without columns models a whole row of
``input_dim`` values in their own units (``"poisson"`` on a count matrix). Its registry entry declares the
column types it accepts (trait ``types``, e.g. ``("count",)``): :mod:`.table` reads it.

Registration (:func:`register_likelihood`) makes a spec such as ``"negbin"`` or ``"gaussian:scale=0.1"``
buildable by name, in Python, on the command line and when a checkpoint is reloaded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import nn

from .._checks import check_finite
from ..errors import ArgumentTypeError, DataError
from ..registry import REGISTRY, Param, register

__all__ = [
    "CellsDistribution",
    "Likelihood",
    "available_likelihoods",
    "check_matrix",
    "make_likelihood",
    "register_likelihood",
]


def check_matrix(x: object, input_dim: int, arg: str = "x") -> torch.Tensor:
    """Validate a batch at the boundary: a non-empty, finite float tensor ``(N, input_dim)``.

    Integer tensors are cast to float; anything else raises with the argument's name and value.
    """
    if not isinstance(x, torch.Tensor):
        raise ArgumentTypeError(
            f"{arg} must be a torch.Tensor of shape (N, {input_dim}); got {type(x).__name__}"
        )
    if x.dim() != 2 or x.shape[1] != input_dim:
        hint = " (flatten images with x.reshape(len(x), -1))" if x.dim() > 2 else ""
        raise DataError(
            f"{arg} must have shape (N, {input_dim}) for this model; got {tuple(x.shape)}{hint}"
        )
    if x.shape[0] == 0:
        raise DataError(f"{arg} is empty (0 rows): nothing to train on or evaluate")
    if not x.is_floating_point():
        x = x.float()
    check_finite(x, arg)
    return x


def value_range(x: torch.Tensor) -> str:
    return f"[{float(x.min()):.4g}, {float(x.max()):.4g}]"


def observed(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The observed cells of ``x`` (all of them without a mask), flattened."""
    return x.reshape(-1) if mask is None else x[mask]


class Likelihood(nn.Module):
    """Base class: maps decoder output to ``p(x | z)`` and checks data against its support.

    Args:
        input_dim: D, the number of values (columns) it models.
        columns: the table columns it models (their transforms and statistics), or None for raw values.
    """

    name: str = "likelihood"

    def __init__(self, input_dim: int, columns: Sequence[Any] | None = None) -> None:
        super().__init__()
        self.input_dim = input_dim
        self.columns = None if columns is None else tuple(columns)
        if self.columns is not None and len(self.columns) != input_dim:
            raise DataError(
                f"likelihood {self.name!r}: {len(self.columns)} columns for input_dim={input_dim}"
            )

    @property
    def spec(self) -> str:
        """The string that rebuilds this likelihood with :func:`make_likelihood`."""
        return self.name

    def out_dim(self) -> int:
        """Size of the decoder output this likelihood consumes."""
        return self.input_dim

    def log_prob_cells(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``(..., D)`` log p of each cell of ``x`` in original units; see the module docstring."""
        raise NotImplementedError(
            f"likelihood {self.name!r} gives no per-cell log-probabilities (log_prob_cells): it cannot "
            "be a table column family or report per-column contributions"
        )

    def dist(self, out: torch.Tensor, mask: torch.Tensor | None = None) -> dist.TorchDistribution:
        """``out: (..., out_dim)`` -> distribution with batch shape ``(...)`` and event shape ``(D,)``."""
        return CellsDistribution(self, out, mask)

    def column_log_prob(
        self, out: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(..., D)`` per-cell log p, 0 where ``mask`` is False."""
        cells = self.log_prob_cells(out, x)
        return cells if mask is None else torch.where(mask, cells, cells.new_zeros(()))

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        """The mean of ``p(x | z)`` (what a reconstruction shows), ``(..., D)`` in model space."""
        raise NotImplementedError

    def sample(self, out: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One draw of ``p(x | z)`` per row of ``out``, ``(..., D)`` in model space."""
        if generator is None:
            return self.dist(out).sample()
        with torch.random.fork_rng(devices=[out.device] if out.is_cuda else []):
            torch.manual_seed(int(torch.randint(0, 2**62, (), generator=generator)))
            return self.dist(out).sample()

    def feature_dim(self) -> int:
        """Width of :meth:`features` (what the encoder takes)."""
        return self.input_dim

    def features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """What the encoder sees of ``x: (N, D)`` (``mask``: observed cells); default ``x`` itself."""
        return x

    def check(self, x: torch.Tensor, arg: str = "x", mask: torch.Tensor | None = None) -> None:
        """Raise ``ValueError`` if ``x`` is not finite or its observed cells lie outside the support."""
        check_finite(x, arg)


class CellsDistribution(dist.TorchDistribution):
    """``prod_j p_j(x_j)`` from a likelihood's :meth:`~Likelihood.log_prob_cells`, masked cells left out.

    Batch shape ``out.shape[:-1]``, event shape ``(D,)``. ``log_prob`` is in original units (see the
    module docstring); ``sample`` draws in model space.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(
        self,
        likelihood: Likelihood,
        out: torch.Tensor,
        mask: torch.Tensor | None = None,
        validate_args: bool | None = None,
    ) -> None:
        self.likelihood, self.out, self.cell_mask = likelihood, out, mask
        batch = out.shape[:-1]
        if mask is not None:
            batch = torch.broadcast_shapes(batch, mask.shape[:-1])
        super().__init__(batch, torch.Size([likelihood.input_dim]), validate_args=False)

    def expand(self, batch_shape: Any, _instance: Any = None) -> CellsDistribution:
        shape = torch.Size(batch_shape)
        out = self.out.expand(shape + self.out.shape[-1:])
        mask = None if self.cell_mask is None else self.cell_mask.expand(shape + self.event_shape)
        return type(self)(self.likelihood, out, mask)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.likelihood.column_log_prob(self.out, value, self.cell_mask).sum(-1)

    def column_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``(..., D)`` per-cell log p, 0 for masked cells."""
        return self.likelihood.column_log_prob(self.out, value, self.cell_mask)

    def sample(self, sample_shape: Any = ()) -> torch.Tensor:
        out = self.out.expand(torch.Size(sample_shape) + self.out.shape)
        return self.likelihood.sample(out)

    @property
    def mean(self) -> torch.Tensor:
        """The mean of ``p(x | z)`` in model space; not defined with masked cells or for a table (its model
        space mixes level codes and units): a squared reconstruction error of either would be wrong."""
        if self.cell_mask is not None or self.likelihood.name == "table":
            raise NotImplementedError(
                "a masked or mixed-type row has no mean to compare with x: use likelihood.mean per column"
            )
        return self.likelihood.mean(self.out)


def register_likelihood(
    name: str,
    factory: Callable[..., Likelihood],
    *,
    params: tuple[Param, ...] = (),
    doc: str,
    replace: bool = False,
    **traits: Any,
) -> None:
    """Add a likelihood: ``factory(input_dim, **params)`` returns a :class:`Likelihood`.

    Once registered, ``VAE(..., likelihood="name:key=value")`` builds it, and a checkpoint that records
    its spec (:attr:`Likelihood.spec`) reloads in any process that registered it again. ``traits``:
    ``support`` (text for docs), ``reconstruction`` (``"nll"`` or ``"mse"``: which reconstruction error
    a comparison reports), ``types`` (the table column types it can model, e.g. ``("count",)``: then
    ``factory(input_dim, columns=[...], **params)`` must accept the columns and the class implement
    :meth:`Likelihood.log_prob_cells`, and ``likelihood={"visits": "name"}`` uses it for a table column).

    Examples:
        >>> import pyro.distributions as dist
        >>> import ppl_vae as pv
        >>> from ppl_vae.likelihoods import Likelihood
        >>> from ppl_vae.registry import REGISTRY
        >>> class Laplace(Likelihood):  # x | z ~ Laplace(decoder(z), 0.5) per coordinate
        ...     name = "laplace_example"
        ...     def dist(self, out):
        ...         return dist.Laplace(out, 0.5).to_event(1)
        ...     def mean(self, out):
        ...         return out
        >>> pv.register_likelihood("laplace_example", Laplace, doc="Laplace, scale 0.5")
        >>> vae = pv.VAE(input_dim=3, latent_dim=2, hidden_dims=(8,), likelihood="laplace_example")
        >>> vae.config["likelihood"]
        'laplace_example'
        >>> REGISTRY.unregister("likelihood", "laplace_example")  # (this example cleans up)
    """
    register("likelihood", name, factory, params=params, doc=doc, replace=replace, **traits)


def available_likelihoods() -> dict[str, str]:
    """Registered likelihood names with one-line descriptions and their parameters.

    Examples:
        >>> import ppl_vae as pv
        >>> {"bernoulli", "continuous_bernoulli", "gaussian", "negbin"} <= set(pv.available_likelihoods())
        True
    """
    return REGISTRY.describe("likelihood")


def make_likelihood(spec: str | Likelihood | dict, input_dim: int) -> Likelihood:
    """Build a likelihood from a spec such as ``"bernoulli"`` or ``"gaussian:scale=0.1"``.

    A :class:`Likelihood` instance passes through; a dict is a table likelihood's recorded config
    (:class:`~.table.TableLikelihood`); an unknown name or parameter is a
    :class:`~ppl_vae.errors.UserError` listing the registered ones.

    Examples:
        >>> import ppl_vae as pv
        >>> pv.make_likelihood("gaussian:scale=0.1", input_dim=3).spec
        'gaussian:scale=0.1'
    """
    if isinstance(spec, Likelihood):
        return spec
    if isinstance(spec, dict):
        from .table import TableLikelihood

        made = TableLikelihood.from_config(spec)
        if made.input_dim != input_dim:
            raise DataError(
                f"the table likelihood models {made.input_dim} columns but input_dim is {input_dim}"
            )
        return made
    if not isinstance(spec, str):
        raise ArgumentTypeError(
            f"likelihood must be a string or a Likelihood; got {type(spec).__name__}"
        )
    made = REGISTRY.build("likelihood", spec, input_dim=input_dim)
    if not isinstance(made, Likelihood):
        raise ArgumentTypeError(
            f"likelihood {spec!r}: its registered factory returned {type(made).__name__}, "
            "not a ppl_vae.likelihoods.Likelihood"
        )
    return made
