"""The first likelihoods: Bernoulli, continuous Bernoulli and Gaussian, for whole rows or table columns.

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

As a table column (``columns=`` given), the Gaussian models the column in its original units through the
standardised variable of :mod:`.transforms` (``x = m + s u``, ``u ~ N(out, sigma^2)``, so the scale ``s * sigma``
is learned in the column's units and log p carries ``-log s``); the Bernoulli offsets its logits by the train
frequency. Every likelihood checks its support on the observed cells (:meth:`Likelihood.check`) before
training or evaluation, and the error names the fix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import DataError, UserError
from ..registry import Param, register
from .base import CellsDistribution, Likelihood, observed, value_range
from .transforms import ValueMap

__all__ = ["BernoulliLikelihood", "ContinuousBernoulliLikelihood", "GaussianLikelihood"]


def _masked(
    lik: Likelihood, base: dist.TorchDistribution, out: torch.Tensor, mask: torch.Tensor | None
) -> dist.TorchDistribution:
    """Pyro's own distribution over whole rows; with a mask, the cells' one (observed cells scored)."""
    return base.to_event(1) if mask is None else CellsDistribution(lik, out, mask)


def _logit_offsets(n: int, columns: Sequence[Any] | None) -> torch.Tensor:
    """Logit of each binary column's train frequency of 1 (0 without columns): the decoder starts there."""
    p = [min(max(c.mean or 0.5, 1e-3), 1 - 1e-3) for c in columns] if columns else [0.5] * n
    return torch.tensor([math.log(q / (1 - q)) for q in p])


class BernoulliLikelihood(Likelihood):
    """Independent Bernoulli cells with logits from the decoder; data must be in {0, 1}."""

    offset: torch.Tensor

    name = "bernoulli"

    def __init__(self, input_dim: int, columns: Sequence[Any] | None = None) -> None:
        super().__init__(input_dim, columns)
        offset = None if columns is None else _logit_offsets(input_dim, columns)
        self.register_buffer("offset", offset, persistent=False)

    def _logits(self, out: torch.Tensor) -> torch.Tensor:
        return out if self.offset is None else out + self.offset

    def log_prob_cells(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -F.binary_cross_entropy_with_logits(
            self._logits(out), x.expand_as(out), reduction="none"
        )

    def dist(self, out: torch.Tensor, mask: torch.Tensor | None = None) -> dist.TorchDistribution:
        return _masked(self, dist.Bernoulli(logits=self._logits(out)), out, mask)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self._logits(out))

    def sample(self, out: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        u = torch.rand(out.shape, generator=generator, device=out.device, dtype=out.dtype)
        return (u < self.mean(out)).to(out.dtype)

    def features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.columns is None:
            return x
        f = 2 * x - 1
        return f if mask is None else f * mask

    def check(self, x: torch.Tensor, arg: str = "x", mask: torch.Tensor | None = None) -> None:
        super().check(x, arg)
        seen = observed(x, mask)
        if not ((seen == 0) | (seen == 1)).all():
            raise DataError(
                f"likelihood 'bernoulli' needs {arg} in {{0, 1}}; got values in {value_range(seen)}: "
                "pass binarize='dynamic' or 'static' to load_dataset, "
                "or use likelihood='continuous_bernoulli' for grey levels in [0, 1]"
            )


class ContinuousBernoulliLikelihood(Likelihood):
    """Continuous Bernoulli densities for values in [0, 1] (Loaiza-Ganem & Cunningham, 2019)."""

    name = "continuous_bernoulli"

    def __init__(self, input_dim: int, columns: Sequence[Any] | None = None) -> None:
        super().__init__(input_dim, columns)

    @staticmethod
    def _base(out: torch.Tensor) -> dist.ContinuousBernoulli:
        # Clamp the logits: the normaliser is evaluated by a Taylor series near 1/2 and
        # loses precision far in the tails; |logit| <= 15 covers probabilities 3e-7 .. 1 - 3e-7.
        return dist.ContinuousBernoulli(logits=out.clamp(-15.0, 15.0))

    def log_prob_cells(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self._base(out).log_prob(x.expand_as(out))

    def dist(self, out: torch.Tensor, mask: torch.Tensor | None = None) -> dist.TorchDistribution:
        return _masked(self, self._base(out), out, mask)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return self._base(out).mean

    def check(self, x: torch.Tensor, arg: str = "x", mask: torch.Tensor | None = None) -> None:
        super().check(x, arg)
        seen = observed(x, mask)
        if (seen < 0).any() or (seen > 1).any():
            raise DataError(
                f"likelihood 'continuous_bernoulli' needs {arg} in [0, 1]; got values in "
                f"{value_range(seen)}: rescale the data to [0, 1] or use likelihood='gaussian'"
            )


class GaussianLikelihood(Likelihood):
    """Diagonal Gaussian ``N(x | out, diag s^2)``.

    With ``scale=None`` the per-dimension scale ``s: (D,)`` is learned (a parameter
    ``log_scale`` of this module, trained with the networks); with a float it is fixed.
    With ``columns``, the Gaussian is on each column's original value through its standardised
    variable (module docstring): ``scale`` is then in standard deviations of the column.
    """

    log_scale: torch.Tensor

    name = "gaussian"

    def __init__(
        self,
        input_dim: int,
        scale: float | None = None,
        init_scale: float = 1.0,
        columns: Sequence[Any] | None = None,
    ) -> None:
        super().__init__(input_dim, columns)
        if scale is not None and not (scale > 0 and math.isfinite(scale)):
            raise UserError(f"gaussian scale must be a positive finite number; got {scale!r}")
        self.fixed_scale = scale
        if scale is None:
            self.log_scale = nn.Parameter(torch.full((input_dim,), math.log(init_scale)))
        else:
            self.register_buffer("log_scale", torch.full((input_dim,), math.log(scale)))
        self.map = ValueMap(input_dim, columns)

    @property
    def spec(self) -> str:
        return self.name if self.fixed_scale is None else f"gaussian:scale={self.fixed_scale:g}"

    def scale(self) -> torch.Tensor:
        # a floor keeps a learned scale from collapsing onto a point and the density from exploding
        return self.log_scale.exp().clamp_min(1e-3)

    def log_prob_cells(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        u = self.map.to_u(x)
        lp = dist.Normal(out, self.scale().to(out.dtype)).log_prob(u)
        return lp if self.map.trivial else lp + self.map.log_jacobian(u)

    def dist(self, out: torch.Tensor, mask: torch.Tensor | None = None) -> dist.TorchDistribution:
        if self.map.trivial:  # raw values: Pyro's own distribution, as before tables
            return _masked(self, dist.Normal(out, self.scale().to(out.dtype)), out, mask)
        return CellsDistribution(self, out, mask)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return self.map.from_w(self.map.w_of_u(out))

    def sample(self, out: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(out.shape, generator=generator, device=out.device, dtype=out.dtype)
        return self.map.from_w(self.map.w_of_u(out + self.scale().to(out.dtype) * eps))

    def features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.columns is None:
            return x
        u = self.map.to_u(x)
        return u if mask is None else u * mask


register(
    "likelihood",
    "bernoulli",
    BernoulliLikelihood,
    doc="prod_j Bernoulli(x_j | sigmoid(out_j)), logits from the decoder; data in {0, 1}",
    support="{0, 1}",
    reconstruction="nll",
    types=("binary",),
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
    types=("real", "positive", "count", "binary"),
)
