r"""Priors p(z) of the built-in VAE: a spec -> an ``nn.Module`` whose :meth:`Prior.dist` the model samples.

A prior is named like every other building block (``"standard_normal"``, ``"name:key=value"``) and built
for a latent size ``d`` with :func:`make_prior`; :class:`~ppl_vae.models.VAE` samples
``pyro.sample("z", prior.dist(x))`` inside its data plate, so the distribution has batch shape ``(N,)``
and event shape ``(d,)``, and its tensors are made from ``x`` (``x.new_zeros``: the data's device and
dtype, no global default).

=====================  ===========================================  =======================================
name                   p(z)                                         KL(q || p) under ``analytic``
=====================  ===========================================  =======================================
``standard_normal``    N(0, I_d), ``Normal(0, 1).to_event(1)``       closed form for the Gaussian guides
=====================  ===========================================  =======================================

**Adding a prior** (a mixture of Gaussians, a VampPrior) is one module and its test: subclass
:class:`Prior` (its parameters are trained with the networks: the VAE registers it with
``pyro.module("prior", ...)``), and call :func:`register_prior` with its parameters and traits
(``closed_form_kl``: whether ``kl_divergence(q, p)`` has a closed form for the Gaussian guides; a
learned mixture has none, so ``analytic`` samples that term and ``trace`` is the honest choice). The
VAE's ``config`` records the prior's :attr:`Prior.spec`, so a checkpoint reloads it.

References:
    Kingma & Welling (2014), Auto-Encoding Variational Bayes (the standard normal prior).
    Tomczak & Welling (2018), VAE with a VampPrior (a learned prior through this interface).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro.distributions as dist
import torch
from torch import nn

from .errors import ArgumentTypeError
from .registry import REGISTRY, Param, register

__all__ = [
    "Prior",
    "StandardNormalPrior",
    "available_priors",
    "make_prior",
    "register_prior",
]


class Prior(nn.Module):
    """Base class: ``dist(x)`` is p(z) for the batch ``x: (N, ...)``, batch shape ``(N,)``, event ``(d,)``."""

    name: str = "prior"

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    @property
    def spec(self) -> str:
        """The string that rebuilds this prior with :func:`make_prior`."""
        return self.name

    def dist(self, x: torch.Tensor) -> dist.TorchDistribution:
        """p(z) for the ``len(x)`` points of the batch ``x`` (tensors made from ``x``)."""
        raise NotImplementedError

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """``n`` draws of z, ``(n, d)``, on ``device``."""
        raise NotImplementedError


class StandardNormalPrior(Prior):
    """``N(0, I_d)`` as ``Normal(0, 1).to_event(1)``: the pair with a Gaussian guide has a closed-form KL."""

    name = "standard_normal"

    def dist(self, x: torch.Tensor) -> dist.TorchDistribution:
        n = x.shape[0]
        return dist.Normal(
            x.new_zeros(n, self.latent_dim), x.new_ones(n, self.latent_dim)
        ).to_event(1)

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=generator, device=device)


register(
    "prior",
    "standard_normal",
    StandardNormalPrior,
    doc="N(0, I_d), Normal(0, 1).to_event(1)",
    closed_form_kl=True,
)
REGISTRY.add_column(
    "prior",
    "KL(q || p) under analytic",
    lambda e: "closed form (Gaussian guides)" if e.trait("closed_form_kl") else "sampled",
)


def register_prior(
    name: str,
    factory: Callable[..., Prior],
    *,
    params: tuple[Param, ...] = (),
    doc: str,
    replace: bool = False,
    closed_form_kl: bool = False,
    **traits: Any,
) -> None:
    """Add a prior: ``factory(latent_dim=d, **params)`` returns a :class:`Prior`.

    Once registered, ``VAE(..., prior="name:key=value")`` builds it and ``--help``, ``available_priors()``
    and the user guide's table list it. ``closed_form_kl``: whether the Gaussian guides have a closed-form
    ``KL(q || p)`` with it.
    """
    register(
        "prior",
        name,
        factory,
        params=params,
        doc=doc,
        replace=replace,
        closed_form_kl=closed_form_kl,
        **traits,
    )


def available_priors() -> dict[str, str]:
    """Registered prior names with one-line descriptions and their parameters."""
    return REGISTRY.describe("prior")


def make_prior(spec: str | Prior, latent_dim: int) -> Prior:
    """Build a prior from a spec such as ``"standard_normal"``; a :class:`Prior` passes through."""
    if isinstance(spec, Prior):
        return spec
    if not isinstance(spec, str):
        raise ArgumentTypeError(f"prior must be a string or a Prior; got {type(spec).__name__}")
    made = REGISTRY.build("prior", spec, latent_dim=latent_dim)
    if not isinstance(made, Prior):
        raise ArgumentTypeError(
            f"prior {spec!r}: its registered factory returned {type(made).__name__}, "
            "not a ppl_vae.priors.Prior"
        )
    return made
