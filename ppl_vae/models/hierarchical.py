r"""A VAE with two stochastic layers (Burda, Grosse & Salakhutdinov, 2015, section 5).

For a batch ``x: (N, D)`` (sizes are Burda et al.'s MNIST architecture by default, tanh units)::

    model:  z2 ~ N(0, I_50)
            z1 | z2 ~ N(mu(z2), diag sigma(z2)^2)       50 -> 100 -> 100 -> (mu, sigma) in R^100
            x | z1 ~ Bernoulli(logits(z1))              100 -> 200 -> 200 -> 784
    guide:  z1 | x ~ N(mu(x), diag sigma(x)^2)          784 -> 200 -> 200 -> (mu, sigma) in R^100
            z2 | z1 ~ N(mu(z1), diag sigma(z1)^2)       100 -> 100 -> 100 -> (mu, sigma) in R^50

all inside the data plate (sites ``"z1"``, ``"z2"``, ``"x"``), so every estimator and objective of
ppl_vae applies (IW, ELBO, PSIS, ``iwae:k=K``, DReG/STL).

**The analytic objective.** The guide samples z1 before z2 and z2 depends on z1, so
``KL(q(z1 | x) || p(z1 | z2))`` in closed form would be taken at a z2 that was drawn *given* z1:
not the ELBO. The conditional prior is therefore a :class:`ConditionalNormal`, for which no closed-form
KL is registered: ``TraceMeanField_ELBO`` (``analytic``) uses the closed form for the top layer,
``KL(q(z2 | z1) || N(0, I))``, which is valid, and samples the z1 term. (Pyro's check of the mean-field
ordering warns on the first, validated batch; the estimate is correct.)

References:
    Burda, Grosse & Salakhutdinov (2015), Importance Weighted Autoencoders, arXiv:1509.00519.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import nn
from torch.distributions.utils import _standard_normal, broadcast_all

from ..errors import UserError
from ..likelihoods import Likelihood, TableLikelihood
from ..nets import Decoder, GaussianEncoder, check_sizes
from .registry import PURE_PROGRAMS, register_model
from .tables import ColumnShares, TableInputs, build_likelihood, likelihood_config

__all__ = ["ConditionalNormal", "HierarchicalVAE"]


class ConditionalNormal(dist.TorchDistribution):
    """``N(loc, diag scale^2)`` over the last dimension, as the conditional prior ``p(z1 | z2)``.

    The same density as ``Normal(loc, scale).to_event(1)``, in a class with no registered KL, so that
    ``TraceMeanField_ELBO`` samples this term rather than taking a closed form that is wrong for a guide
    that draws z2 after z1 (see the module docstring).
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.independent(constraints.real, 1)
    has_rsample = True

    def __init__(
        self, loc: torch.Tensor, scale: torch.Tensor, validate_args: bool | None = None
    ) -> None:
        self.loc, self.scale = broadcast_all(loc, scale)
        shape = self.loc.shape
        super().__init__(shape[:-1], shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> ConditionalNormal:
        new = self._get_checked_instance(ConditionalNormal, _instance)
        shape = torch.Size(batch_shape) + self.event_shape
        new.loc, new.scale = self.loc.expand(shape), self.scale.expand(shape)
        super(ConditionalNormal, new).__init__(
            torch.Size(batch_shape), self.event_shape, validate_args=False
        )
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape: Any = ()) -> torch.Tensor:
        eps = _standard_normal(
            self._extended_shape(sample_shape), dtype=self.loc.dtype, device=self.loc.device
        )
        return self.loc + eps * self.scale

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return dist.Normal(self.loc, self.scale).log_prob(value).sum(-1)

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    @property
    def variance(self) -> torch.Tensor:
        return self.scale.pow(2)


def _pair(value: Any, what: str) -> tuple[Any, Any]:
    items = tuple(value)
    if len(items) != 2:
        raise UserError(f"{what} must have two entries (layer 1, layer 2); got {value!r}")
    return items[0], items[1]


@register_model
class HierarchicalVAE(TableInputs, ColumnShares, nn.Module):
    """Two stochastic layers, x - z1 - z2, as in Burda et al. (2015); see the module docstring.

    Args:
        input_dim: D.
        latent_dims: ``(d1, d2)``, default ``(100, 50)``.
        hidden_dims: the deterministic layers between x and z1 and between z1 and z2, default
            ``((200, 200), (100, 100))``; each generative net mirrors its recognition net.
        likelihood: as for :class:`~ppl_vae.models.VAE` (default ``"bernoulli"``).
        activation: default ``"tanh"`` (Burda et al.).
        schema, mask_inputs: a table's schema and whether the encoder sees the mask, as for the VAE;
            both programs take ``mask`` as an optional second input (:mod:`ppl_vae.models.tables`).
    """

    def __init__(
        self,
        input_dim: int,
        latent_dims: Sequence[int] = (100, 50),
        hidden_dims: Sequence[Sequence[int]] = ((200, 200), (100, 100)),
        likelihood: str | Likelihood | Mapping[str, str] = "bernoulli",
        activation: str = "tanh",
        schema: Any = None,
        mask_inputs: bool | None = None,
    ) -> None:
        super().__init__()
        d1, d2 = _pair(latent_dims, "latent_dims")
        h1, h2 = _pair(hidden_dims, "hidden_dims")
        h1 = check_sizes(input_dim, d1, h1)
        h2 = check_sizes(d1, d2, h2)
        self.input_dim, self.latent_dims, self.hidden_dims = input_dim, (d1, d2), (h1, h2)
        self.latent_dim = d1 + d2
        self.activation = activation
        self.likelihood = build_likelihood(likelihood, input_dim, schema)
        default_mask = isinstance(self.likelihood, TableLikelihood) and bool(
            self.likelihood.schema.has_missing
        )
        self.mask_inputs = default_mask if mask_inputs is None else bool(mask_inputs)
        self.encoder = nn.ModuleDict(
            {
                "z1": GaussianEncoder(self.encoder_width(), d1, h1, activation),
                "z2": GaussianEncoder(d1, d2, h2, activation),
            }
        )
        self.decoder = nn.ModuleDict(
            {
                "z1": GaussianEncoder(d2, d1, tuple(reversed(h2)), activation),  # p(z1 | z2)
                "x": Decoder(d1, self.likelihood.out_dim(), h1, activation),  # mirrors h1
            }
        )

    # ------------------------------------------------------------------ Pyro programs
    def model(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """p(z2) p(z1 | z2) p(x | z1) for ``x: (N, D)`` (only the observed cells with ``mask``)."""
        pyro.module("decoder", self.decoder)
        pyro.module("likelihood", self.likelihood)
        n = x.shape[0]
        d2 = self.latent_dims[1]
        with pyro.plate("data", n, dim=-1, device=x.device):  # type: ignore[arg-type]  # Pyro annotates str
            z2 = pyro.sample("z2", dist.Normal(x.new_zeros(n, d2), x.new_ones(n, d2)).to_event(1))
            z1 = pyro.sample("z1", ConditionalNormal(*self.decoder["z1"](z2)))
            pyro.sample("x", self.observation(self.decoder["x"](z1), mask), obs=x)

    def guide(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """q(z1 | x) q(z2 | z1), reparameterised, for ``x: (N, D)``."""
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0], dim=-1, device=x.device):  # type: ignore[arg-type]  # Pyro annotates str
            z1 = pyro.sample(
                "z1", dist.Normal(*self.encoder["z1"](self.encoder_input(x, mask))).to_event(1)
            )
            pyro.sample("z2", dist.Normal(*self.encoder["z2"](z1)).to_event(1))

    # ------------------------------------------------------------------ plain-torch helpers
    def encode(
        self, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The first layer's posterior parameters ``(loc, scale)`` of q(z1 | x), each ``(N, d1)``."""
        return self.encoder["z1"](self.encoder_input(x, mask))

    def decoder_outputs(self, x: torch.Tensor, mask: torch.Tensor | None, k: int) -> torch.Tensor:
        """The decoder's output at ``k`` draws ``z1 ~ q(z1 | x)``: ``(k, N, out_dim)``."""
        loc, scale = self.encode(x, mask)
        return self.decoder["x"](
            loc + scale * torch.randn((k,) + tuple(loc.shape), device=loc.device)
        )

    def decode(self, z1: torch.Tensor) -> torch.Tensor:
        """The mean of ``p(x | z1)``, ``(..., D)``."""
        return self.likelihood.mean(self.decoder["x"](z1))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.encode(x, mask)[0])

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, mean: bool = False
    ) -> torch.Tensor:
        """Draws of ``p(x | z1)`` (``mean=True``: its means) for ancestral draws ``z2 ~ N(0, I)``,
        ``z1 ~ p(z1 | z2)``: ``(n, D)``."""
        device = next(self.parameters()).device
        z2 = torch.randn(n, self.latent_dims[1], generator=generator, device=device)
        loc, scale = self.decoder["z1"](z2)
        z1 = loc + scale * torch.randn(loc.shape, generator=generator, device=device)
        out = self.decoder["x"](z1)
        return self.likelihood.mean(out) if mean else self.likelihood.sample(out, generator)

    @property
    def config(self) -> dict[str, Any]:
        return {
            "class": type(self).__name__,
            "input_dim": self.input_dim,
            "latent_dims": list(self.latent_dims),
            "hidden_dims": [list(h) for h in self.hidden_dims],
            "likelihood": likelihood_config(self.likelihood),
            "activation": self.activation,
            **(
                {"mask_inputs": self.mask_inputs}
                if self.mask_inputs != self._default_mask()
                else {}
            ),
        }

    def _default_mask(self) -> bool:
        return bool(
            isinstance(self.likelihood, TableLikelihood) and self.likelihood.schema.has_missing
        )

    def extra_repr(self) -> str:
        return f"D={self.input_dim}, d={self.latent_dims}, likelihood={self.likelihood.spec!r}"


PURE_PROGRAMS.update({HierarchicalVAE.model, HierarchicalVAE.guide})
