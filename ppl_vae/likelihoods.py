"""Observation models p(x | z): decoder output -> a Pyro distribution.

Each likelihood turns the decoder's raw output ``out: (..., D)`` into a
distribution with event shape ``(D,)`` (an ``Independent`` over pixels or
coordinates), so that ``log p(x | z)`` is one number per data point:

=====================  ==========================================  ============
name                   p(x | z)                                    support
=====================  ==========================================  ============
``bernoulli``          prod_j Bernoulli(x_j | sigmoid(out_j))       {0, 1}
``continuous_bernoulli`` prod_j CB(x_j | sigmoid(out_j))            [0, 1]
``gaussian``           prod_j N(x_j | out_j, s_j^2), s learned      real
``gaussian:scale=0.1`` prod_j N(x_j | out_j, 0.1^2), s fixed        real
=====================  ==========================================  ============

The Bernoulli is parameterised by logits: ``Bernoulli(probs=sigmoid(.))`` costs
more and loses precision where the sigmoid saturates. The continuous Bernoulli
(Loaiza-Ganem & Cunningham, 2019) is the proper density for grey levels in
[0, 1]; scoring grey pixels with a Bernoulli inflates log-likelihoods, so we
refuse it and say so rather than switch validation off.

Every likelihood checks its support on the data (:meth:`Likelihood.check`)
before training or evaluation, and the error names the fix.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pyro.distributions as dist
import torch
from torch import nn

from ._checks import check_finite
from .errors import ArgumentTypeError, DataError, UserError
from .registry import REGISTRY, Param, register


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


def _range(x: torch.Tensor) -> str:
    return f"[{float(x.min()):.4g}, {float(x.max()):.4g}]"


class Likelihood(nn.Module):
    """Base class: maps decoder output to ``p(x | z)`` and checks data against its support."""

    name: str = "likelihood"

    def __init__(self, input_dim: int) -> None:
        super().__init__()
        self.input_dim = input_dim

    @property
    def spec(self) -> str:
        """The string that rebuilds this likelihood with :func:`make_likelihood`."""
        return self.name

    def out_dim(self) -> int:
        """Size of the decoder output this likelihood consumes."""
        return self.input_dim

    def dist(self, out: torch.Tensor) -> dist.TorchDistribution:
        """``out: (..., D)`` -> distribution with batch shape ``(...)`` and event shape ``(D,)``."""
        raise NotImplementedError

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        """The mean of ``p(x | z)`` in data space (what a reconstruction shows), ``(..., D)``."""
        raise NotImplementedError

    def check(self, x: torch.Tensor, arg: str = "x") -> None:
        """Raise ``ValueError`` if ``x`` is not finite or lies outside the support."""
        check_finite(x, arg)


class BernoulliLikelihood(Likelihood):
    """Independent Bernoulli pixels with logits from the decoder; data must be in {0, 1}."""

    name = "bernoulli"

    def dist(self, out: torch.Tensor) -> dist.TorchDistribution:
        return dist.Bernoulli(logits=out).to_event(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out)

    def check(self, x: torch.Tensor, arg: str = "x") -> None:
        super().check(x, arg)
        if not ((x == 0) | (x == 1)).all():
            raise DataError(
                f"likelihood 'bernoulli' needs {arg} in {{0, 1}}; got values in {_range(x)}: "
                "pass binarize='dynamic' or 'static' to load_dataset, "
                "or use likelihood='continuous_bernoulli' for grey levels in [0, 1]"
            )


class ContinuousBernoulliLikelihood(Likelihood):
    """Continuous Bernoulli densities for values in [0, 1] (Loaiza-Ganem & Cunningham, 2019)."""

    name = "continuous_bernoulli"

    def dist(self, out: torch.Tensor) -> dist.TorchDistribution:
        # Clamp the logits: the normaliser is evaluated by a Taylor series near 1/2 and
        # loses precision far in the tails; |logit| <= 15 covers probabilities 3e-7 .. 1 - 3e-7.
        return dist.ContinuousBernoulli(logits=out.clamp(-15.0, 15.0)).to_event(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return dist.ContinuousBernoulli(logits=out.clamp(-15.0, 15.0)).mean

    def check(self, x: torch.Tensor, arg: str = "x") -> None:
        super().check(x, arg)
        if (x < 0).any() or (x > 1).any():
            raise DataError(
                f"likelihood 'continuous_bernoulli' needs {arg} in [0, 1]; got values in "
                f"{_range(x)}: rescale the data to [0, 1] or use likelihood='gaussian'"
            )


class GaussianLikelihood(Likelihood):
    """Diagonal Gaussian ``N(x | out, diag s^2)``.

    With ``scale=None`` the per-dimension scale ``s: (D,)`` is learned (a parameter
    ``log_scale`` of this module, trained with the networks); with a float it is fixed.
    """

    name = "gaussian"

    def __init__(self, input_dim: int, scale: float | None = None, init_scale: float = 1.0) -> None:
        super().__init__(input_dim)
        if scale is not None and not (scale > 0 and math.isfinite(scale)):
            raise UserError(f"gaussian scale must be a positive finite number; got {scale!r}")
        self.fixed_scale = scale
        if scale is None:
            self.log_scale = nn.Parameter(torch.full((input_dim,), math.log(init_scale)))
        else:
            self.register_buffer("log_scale", torch.full((input_dim,), math.log(scale)))

    @property
    def spec(self) -> str:
        return self.name if self.fixed_scale is None else f"gaussian:scale={self.fixed_scale:g}"

    def scale(self) -> torch.Tensor:
        # a floor keeps a learned scale from collapsing onto a point and the density from exploding
        return self.log_scale.exp().clamp_min(1e-3)

    def dist(self, out: torch.Tensor) -> dist.TorchDistribution:
        return dist.Normal(out, self.scale().to(out.dtype)).to_event(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return out


register(
    "likelihood",
    "bernoulli",
    BernoulliLikelihood,
    doc="prod_j Bernoulli(x_j | sigmoid(out_j)), logits from the decoder; data in {0, 1}",
    support="{0, 1}",
    reconstruction="nll",
)
register(
    "likelihood",
    "continuous_bernoulli",
    ContinuousBernoulliLikelihood,
    doc="prod_j ContinuousBernoulli(x_j | sigmoid(out_j)); grey levels in [0, 1]",
    support="[0, 1]",
    reconstruction="nll",
)
register(
    "likelihood",
    "gaussian",
    GaussianLikelihood,
    params=(
        Param("scale", None, float, "fixed noise scale s; learned per dimension when omitted"),
    ),
    doc="prod_j N(x_j | out_j, s_j^2); real values",
    support="real",
    reconstruction="mse",
)
REGISTRY.add_column("likelihood", "support", lambda e: str(e.trait("support", "")))
REGISTRY.add_column(
    "likelihood", "reconstruction error", lambda e: str(e.trait("reconstruction", "mse"))
)


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
    a comparison reports).

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
        >>> {"bernoulli", "continuous_bernoulli", "gaussian"} <= set(pv.available_likelihoods())
        True
    """
    return REGISTRY.describe("likelihood")


def make_likelihood(spec: str | Likelihood, input_dim: int) -> Likelihood:
    """Build a likelihood from a spec such as ``"bernoulli"`` or ``"gaussian:scale=0.1"``.

    A :class:`Likelihood` instance passes through; an unknown name or parameter is a
    :class:`~ppl_vae.errors.UserError` listing the registered ones.

    Examples:
        >>> import ppl_vae as pv
        >>> pv.make_likelihood("gaussian:scale=0.1", input_dim=3).spec
        'gaussian:scale=0.1'
    """
    if isinstance(spec, Likelihood):
        return spec
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
