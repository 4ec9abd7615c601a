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
``mog:k=K``            sum_k w_k N(m_k, diag s_k^2), all learned      sampled (a SampledKLWarning says so)
``vamp:k=K``           1/K sum_k q(z | u_k), K learned pseudo-inputs  sampled (a SampledKLWarning says so)
=====================  ===========================================  =======================================

The VampPrior needs the VAE's encoder: the VAE passes it explicitly, ``prior.dist(x, encoder)`` and
``prior.sample(n, ..., encoder=encoder)`` (no reference kept in the prior, so the state dict holds the
pseudo-inputs once and the encoder once). An entry with the trait ``needs_encoder`` is built with the
encoder's input width (``input_width=``), the size of a pseudo-input.

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

import warnings
from collections.abc import Callable
from typing import Any, Protocol

import pyro.distributions as dist
import torch
from torch import nn

from .errors import ArgumentTypeError, UserError
from .guides import SampledKLWarning
from .registry import REGISTRY, Param, register

__all__ = [
    "MixturePrior",
    "Prior",
    "StandardNormalPrior",
    "VampPrior",
    "available_priors",
    "make_prior",
    "register_prior",
    "warn_sampled_kl",
]


class Encoder(Protocol):
    """What a prior may ask of the VAE's encoder: q(z | inputs) for a batch of encoder inputs."""

    def dist(self, inputs: torch.Tensor) -> dist.TorchDistribution: ...


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

    def dist(self, x: torch.Tensor, encoder: Encoder | None = None) -> dist.TorchDistribution:
        """p(z) for the ``len(x)`` points of the batch ``x`` (tensors made from ``x``); ``encoder``: the
        VAE's, for a prior defined through it (the VampPrior)."""
        raise NotImplementedError

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        encoder: Encoder | None = None,
    ) -> torch.Tensor:
        """``n`` draws of z, ``(n, d)``, on ``device``."""
        raise NotImplementedError


class StandardNormalPrior(Prior):
    """``N(0, I_d)`` as ``Normal(0, 1).to_event(1)``: the pair with a Gaussian guide has a closed-form KL."""

    name = "standard_normal"

    def dist(self, x: torch.Tensor, encoder: Encoder | None = None) -> dist.TorchDistribution:
        n = x.shape[0]
        return dist.Normal(
            x.new_zeros(n, self.latent_dim), x.new_ones(n, self.latent_dim)
        ).to_event(1)

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        encoder: Encoder | None = None,
    ) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=generator, device=device)


def _mixture(logits: torch.Tensor, components: dist.TorchDistribution, n: int) -> Any:
    """``MixtureSameFamily`` with batch shape ``(n,)`` from K components of event shape ``(d,)``."""
    k = logits.shape[-1]
    return dist.MixtureSameFamily(
        dist.Categorical(logits=logits.expand(n, k)),
        components.expand(torch.Size([n, k])),
    )


class MixturePrior(Prior):
    """A learned mixture of K diagonal Gaussians, ``sum_k w_k N(m_k, diag s_k^2)``.

    The means start spread out (standard normal draws), the scales at 1 and the weights equal; all three
    are trained with the networks (weights as logits, scales as log-scales). Examples:

    >>> import torch
    >>> from ppl_vae.priors import make_prior
    >>> prior = make_prior("mog:k=3", latent_dim=2)
    >>> prior.dist(torch.zeros(5, 4)).batch_shape, prior.spec
    (torch.Size([5]), 'mog:k=3')
    """

    name = "mog"

    def __init__(self, latent_dim: int, k: int = 10) -> None:
        super().__init__(latent_dim)
        self.k = k
        self.loc = nn.Parameter(torch.randn(k, latent_dim))
        self.log_scale = nn.Parameter(torch.zeros(k, latent_dim))
        self.logits = nn.Parameter(torch.zeros(k))

    @property
    def spec(self) -> str:
        return str(REGISTRY.parse("prior", f"mog:k={self.k}"))

    def components(self) -> dist.TorchDistribution:
        """The K Gaussians, batch shape ``(K,)``, event ``(d,)``."""
        return dist.Normal(self.loc, self.log_scale.exp()).to_event(1)

    def dist(self, x: torch.Tensor, encoder: Encoder | None = None) -> dist.TorchDistribution:
        return _mixture(self.logits, self.components(), x.shape[0])

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        encoder: Encoder | None = None,
    ) -> torch.Tensor:
        idx = torch.multinomial(self.logits.softmax(-1), n, replacement=True, generator=generator)
        eps = torch.randn(n, self.latent_dim, generator=generator, device=self.loc.device)
        z = self.loc[idx] + self.log_scale.exp()[idx] * eps
        return z.to(device) if device is not None else z


class VampPrior(Prior):
    """The VampPrior (Tomczak & Welling, 2018): ``p(z) = 1/K sum_k q(z | u_k)``, K learned pseudo-inputs.

    The pseudo-inputs ``u_k`` live in the encoder's input space (``input_width``: a row, plus its mask
    when the encoder sees one) and start at small random values; the encoder is the VAE's, passed in by
    the caller (``dist(x, encoder)``), so p(z) moves with q during training as the paper's does. The
    guide family must give q a batch of K components (``meanfield`` or ``fullrank``; a flow's q is not
    a batched distribution, and the VAE refuses that pair).
    """

    name = "vamp"

    def __init__(self, latent_dim: int, k: int = 50, *, input_width: int) -> None:
        super().__init__(latent_dim)
        self.k = k
        self.pseudo_inputs = nn.Parameter(0.5 + 0.01 * torch.randn(k, input_width))

    @property
    def spec(self) -> str:
        return str(REGISTRY.parse("prior", f"vamp:k={self.k}"))

    def _components(self, encoder: Encoder | None) -> dist.TorchDistribution:
        if encoder is None:
            raise ArgumentTypeError(
                "the VampPrior is defined through the VAE's encoder: call prior.dist(x, vae.encoder)"
            )
        return encoder.dist(self.pseudo_inputs)

    def dist(self, x: torch.Tensor, encoder: Encoder | None = None) -> dist.TorchDistribution:
        return _mixture(x.new_zeros(self.k), self._components(encoder), x.shape[0])

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        encoder: Encoder | None = None,
    ) -> torch.Tensor:
        q = self._components(encoder)
        idx = torch.randint(self.k, (n,), generator=generator)
        seed = int(torch.randint(2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            z = q.sample()[idx.to(self.pseudo_inputs.device)]
        return z.to(device) if device is not None else z


register(
    "prior",
    "standard_normal",
    StandardNormalPrior,
    doc="N(0, I_d), Normal(0, 1).to_event(1)",
    closed_form_kl=True,
)


def _check_k(values: dict[str, Any], text: str) -> None:
    if values["k"] < 1:
        raise UserError(
            f"prior {text!r}: k must be a positive number of components; got {values['k']}"
        )


register(
    "prior",
    "mog",
    MixturePrior,
    params=(Param("k", 10, int, "number of components K"),),
    check=_check_k,
    doc="learned mixture of K diagonal Gaussians (weights, means, scales)",
    closed_form_kl=False,
)
register(
    "prior",
    "vamp",
    VampPrior,
    params=(Param("k", 50, int, "number of pseudo-inputs K"),),
    check=_check_k,
    doc="VampPrior: 1/K sum_k q(z | u_k), K learned pseudo-inputs through the encoder",
    closed_form_kl=False,
    needs_encoder=True,
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


def make_prior(spec: str | Prior, latent_dim: int, input_width: int | None = None) -> Prior:
    """Build a prior from a spec such as ``"standard_normal"`` or ``"mog:k=10"``; a :class:`Prior` passes
    through. ``input_width``: the encoder's input size, given to entries with the ``needs_encoder``
    trait (the VampPrior's pseudo-inputs)."""
    if isinstance(spec, Prior):
        return spec
    if not isinstance(spec, str):
        raise ArgumentTypeError(f"prior must be a string or a Prior; got {type(spec).__name__}")
    parsed = REGISTRY.parse("prior", spec)
    context: dict[str, Any] = {"latent_dim": latent_dim}
    if parsed.entry.trait("needs_encoder"):
        if input_width is None:
            raise ArgumentTypeError(
                f"prior {spec!r} is defined through an encoder: make_prior(..., input_width=W)"
            )
        context["input_width"] = input_width
    made = parsed.build(**context)
    if not isinstance(made, Prior):
        raise ArgumentTypeError(
            f"prior {spec!r}: its registered factory returned {type(made).__name__}, "
            "not a ppl_vae.priors.Prior"
        )
    return made


_SAID: set[str] = set()


def warn_sampled_kl(prior: Prior, surrogate: str | None) -> bool:
    """Under an ``analytic`` objective, say once per prior name that ``KL(q || p)`` is sampled when the
    prior's registry entry declares no closed form (trait ``closed_form_kl``); True when it is sampled."""
    entry = REGISTRY.get("prior", prior.name)
    closed = entry is not None and bool(entry.trait("closed_form_kl"))
    if surrogate != "analytic" or closed:
        return False
    if prior.name not in _SAID:
        _SAID.add(prior.name)
        warnings.warn(
            f"prior {prior.spec!r} has no closed-form KL(q || p) (its registry entry says "
            "closed_form_kl=False): the 'analytic' objective samples that term (log q(z | x) - log p(z) "
            "at the drawn z), as 'trace' does; pass objective='trace' to say so",
            SampledKLWarning,
            stacklevel=4,  # fit's caller (fit -> _say_sampled_kl -> here)
        )
    return True
