r"""Amortised variational families q(z | x): mean-field, full-rank Gaussian, inverse autoregressive flow.

Each family is an ``nn.Module`` whose :meth:`~AmortisedGuide.dist` maps a batch ``x: (N, D)`` to a
reparameterised distribution over ``z`` with batch shape ``(N,)`` and event shape ``(d,)``; a model's
guide samples it inside the data plate::

    pyro.module("encoder", self.encoder)
    with pyro.plate("data", len(x)):
        pyro.sample("z", self.encoder.dist(x))

==============  =========================================================  ==========================
spec            q(z | x)                                                   KL(q || N(0, I))
==============  =========================================================  ==========================
``meanfield``   N(mu(x), diag sigma(x)^2) (``Normal(...).to_event(1)``)    closed form, per dimension
``fullrank``    N(mu(x), L(x) L(x)^T), L lower triangular with a           closed form (registered
                positive diagonal (``MultivariateNormal(loc, scale_tril)``)  here, see below)
``iaf:n=K``     K inverse autoregressive flow steps on a mean-field base   none: sampled
                (Kingma et al., 2016), amortised through a context h(x)
==============  =========================================================  ==========================

**Full rank.** ``KL(N(m, L L^T) || N(mu, diag s^2)) = 1/2 [sum_ij L_ij^2 / s_i^2 + sum_i (m_i - mu_i)^2 / s_i^2
- d + 2 sum_i log s_i - 2 sum_i log L_ii]``, registered with :func:`torch.distributions.kl.register_kl` for
``(MultivariateNormal, Independent(Normal))`` (torch and Pyro register only the reverse pair), so the
``analytic`` objective (``TraceMeanField_ELBO``) finds a closed form instead of silently sampling it.

**IAF.** With ``eps ~ N(mu(x), diag sigma(x)^2)`` and context ``h(x)`` from the same encoder, step t maps
``y = s_t * y + (1 - s_t) * m_t``, ``(m_t, logit s_t) = MADE_t(y, h)`` (the numerically stable form of
Kingma et al.'s eq. 14, Pyro's ``AffineAutoregressive(stable=True)``), with the variable order reversed
between steps. ``log q(z | x) = log N(eps) - sum_t sum_i log s_t,i``; sampling and scoring a sample
are one pass (the transform caches its input), scoring another point inverts the flow (d passes per
step). No closed-form KL exists: the ``analytic`` objective falls back to a sampled KL for this site
and says so once (a :class:`SampledKLWarning`). The mean of q has no closed form either:
diagnostics use a Monte Carlo mean.

**Traits** (the registry entry's declarations, read elsewhere instead of the family's name):
``closed_form_kl`` (the analytic objective's KL), ``encoder_outputs`` (the memory check's encoder width),
``mixture_component`` (q at a batch of inputs is a batched Gaussian that ``MixtureSameFamily`` can hold:
the VampPrior's components; True for mean-field and full rank, False for the flow).

References:
    Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling (2016), Improving Variational Inference
    with Inverse Autoregressive Flow, NeurIPS.
    Germain, Gregor, Murray & Larochelle (2015), MADE: Masked Autoencoder for Distribution Estimation.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import pyro.distributions as dist
import torch
from pyro.distributions.transforms import AffineAutoregressive
from torch import nn
from torch.distributions import Independent, MultivariateNormal, Normal, register_kl
from torch.nn import functional as F

from .errors import UserError
from .nets import MADE, GaussianEncoder, make_encoder_net
from .registry import REGISTRY, Param, format_spec, register

__all__ = [
    "GUIDES",
    "AmortisedGuide",
    "EncoderBody",
    "FullRankGuide",
    "IAFGuide",
    "IAFPosterior",
    "MeanFieldGuide",
    "SampledKLWarning",
    "encoder_outputs",
    "format_guide",
    "make_guide",
    "parse_guide",
]

#: Guide families and their parameters (name -> {parameter: default}; None: chosen from the latent
#: size): a live view of the registry's ``guide`` entries.
GUIDES: Mapping[str, dict[str, Any]] = REGISTRY.view("guide", lambda e: e.defaults())

#: Draws of z for a Monte Carlo mean/std where q has no closed form (the flow).
MEAN_DRAWS = 64


class SampledKLWarning(UserWarning):
    """The analytic objective met a guide family with no closed-form KL; that KL term is sampled."""


# ============================================================================ specs
def parse_guide(spec: object) -> tuple[str, dict[str, Any]]:
    """``"iaf:n=2,hidden=64"`` -> ``("iaf", {"n": 2, "hidden": 64, "context": None})``; errors name what is valid."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(
            f"guide must be a string such as {', '.join(map(repr, REGISTRY.names('guide')))}; "
            f"got {spec!r}"
        )
    parsed = REGISTRY.parse("guide", spec)
    return parsed.name, parsed.values


def format_guide(name: str, params: Mapping[str, Any]) -> str:
    """The canonical spec: parameters at their defaults left out, except those an entry always shows
    (the number of flow steps: ``"iaf"`` -> ``"iaf:n=2"``)."""
    return format_spec(REGISTRY.entry("guide", name), params)


def canonical_guide(spec: str) -> str:
    return format_guide(*parse_guide(spec))


def _positive(values: dict[str, Any], text: str) -> None:
    for key, value in values.items():
        if value is not None and value < 1:
            raise UserError(f"guide {text!r}: {key} must be a positive integer; got {value}")


# ============================================================================ families
class AmortisedGuide(nn.Module):
    """Base class: ``dist(x)`` is q(z | x) with batch shape ``(N,)`` and event shape ``(d,)``.

    ``forward(x) -> (loc, scale)``: the mean and marginal standard deviations of q, ``(N, d)`` each
    (what plots and ``VAE.encode`` show; Monte Carlo for a flow).
    """

    spec: str = ""
    latent_dim: int

    def dist(self, x: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.dist(x)
        try:
            return q.mean, q.variance.sqrt()
        except NotImplementedError:
            z = q.rsample((MEAN_DRAWS,))
            return z.mean(0), z.std(0)


class MeanFieldGuide(GaussianEncoder):
    """``N(mu(x), diag sigma(x)^2)`` as ``Normal(loc, scale).to_event(1)``: today's VAE encoder, same weights."""

    spec = "meanfield"

    def dist(self, x: torch.Tensor) -> dist.TorchDistribution:
        loc, scale = self(x)
        return dist.Normal(loc, scale).to_event(1)


class FullRankGuide(AmortisedGuide):
    """``MultivariateNormal(mu(x), scale_tril=L(x))``: the encoder outputs ``d + d(d+1)/2`` numbers; the
    diagonal of L is ``softplus(raw) + min_scale``, the strict lower triangle is unconstrained.

    The output layer's weights and biases for the strict lower triangle start at zero: q starts diagonal
    (a mean-field Gaussian) and learns its correlations (a random start gives every point a random
    correlated q, which on MNIST trained measurably slower).
    """

    spec = "fullrank"

    def __init__(self, net: nn.Module, latent_dim: int, min_scale: float = 1e-4) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.min_scale = min_scale
        self.net = net
        last = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
        with torch.no_grad():
            last.weight[2 * latent_dim :].zero_()
            last.bias[2 * latent_dim :].zero_()
        rows, cols = torch.tril_indices(latent_dim, latent_dim, offset=-1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    @staticmethod
    def outputs(latent_dim: int) -> int:
        return latent_dim + latent_dim * (latent_dim + 1) // 2

    def params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``loc: (..., d)`` and ``scale_tril: (..., d, d)``."""
        d = self.latent_dim
        out = self.net(x)
        loc, diag, lower = out[..., :d], out[..., d : 2 * d], out[..., 2 * d :]
        tril = out.new_zeros(tuple(out.shape[:-1]) + (d, d))
        tril[..., self.rows, self.cols] = lower
        tril = tril + torch.diag_embed(F.softplus(diag) + self.min_scale)
        return loc, tril

    def dist(self, x: torch.Tensor) -> dist.TorchDistribution:
        loc, tril = self.params(x)
        return dist.MultivariateNormal(loc, scale_tril=tril)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, tril = self.params(x)
        return loc, tril.pow(2).sum(-1).sqrt()


class IAFPosterior(dist.TransformedDistribution):
    """q(z | x) of an IAF guide: a mean-field base through conditioned affine autoregressive steps.

    A subclass only so that ``kl_divergence`` can say, once, that no closed form exists for it."""


class IAFGuide(AmortisedGuide):
    """K inverse autoregressive flow steps on a mean-field base (Kingma et al., 2016).

    The encoder outputs ``2 d + c`` numbers: the base's ``loc`` and raw scale and a context ``h(x): (c,)``
    that every step's :class:`~ppl_vae.nets.MADE` sees. Steps alternate the natural and the reversed
    variable order.
    """

    def __init__(
        self,
        net: nn.Module,
        latent_dim: int,
        steps: int,
        hidden: int,
        context: int,
        min_scale: float = 1e-4,
        spec: str = "iaf",
    ) -> None:
        super().__init__()
        self.latent_dim, self.context_dim, self.min_scale = latent_dim, context, min_scale
        self.spec = spec
        self.net = net
        order = torch.arange(latent_dim)
        self.made = nn.ModuleList(
            MADE(latent_dim, context, [hidden], order if t % 2 == 0 else order.flip(0))
            for t in range(steps)
        )

    @staticmethod
    def outputs(latent_dim: int, context: int) -> int:
        return 2 * latent_dim + context

    def dist(self, x: torch.Tensor) -> dist.TorchDistribution:
        d = self.latent_dim
        out = self.net(x)
        loc, raw, h = out[..., :d], out[..., d : 2 * d], out[..., 2 * d :]
        base = dist.Normal(loc, F.softplus(raw) + self.min_scale).to_event(1)
        steps = [
            AffineAutoregressive(_WithContext(cast(MADE, made), h), stable=True)
            for made in self.made
        ]
        return IAFPosterior(base, steps)


class _WithContext:
    """``MADE_t(y, h)`` with the context ``h`` bound, as ``AffineAutoregressive`` calls its network (it
    also reads ``.permutation``, for the inverse)."""

    def __init__(self, made: MADE, context: torch.Tensor) -> None:
        self.made, self.context, self.permutation = made, context, made.permutation

    def __call__(self, y: torch.Tensor) -> Any:
        return self.made(y, context=self.context)


@dataclass(frozen=True)
class EncoderBody:
    """What a guide family's factory is given besides its own parameters: the sizes and the networks."""

    input_dim: int
    latent_dim: int
    hidden_dims: Sequence[int] = (256,)
    activation: str = "relu"
    nets: str = "mlp"
    image_shape: Sequence[int] | None = None

    def net(self, out: int) -> nn.Module:
        """The encoder body (MLP or conv) with ``out`` outputs."""
        return make_encoder_net(
            self.nets, self.input_dim, self.hidden_dims, out, self.activation, self.image_shape
        )


def make_guide(
    spec: str,
    input_dim: int,
    latent_dim: int,
    hidden_dims: Sequence[int] = (256,),
    activation: str = "relu",
    nets: str = "mlp",
    image_shape: Sequence[int] | None = None,
) -> AmortisedGuide | MeanFieldGuide:
    """Build a guide family from its spec, with an encoder body (``nets``: MLP or conv) of the right width.

    The family is a registry entry (``REGISTRY.entry("guide", name)``): its factory gets the spec's
    parameters and ``body=`` an :class:`EncoderBody`."""
    parsed = REGISTRY.parse("guide", spec)
    body = EncoderBody(input_dim, latent_dim, hidden_dims, activation, nets, image_shape)
    return parsed.build(body=body)


def _meanfield(*, body: EncoderBody) -> MeanFieldGuide:
    return MeanFieldGuide(
        body.input_dim,
        body.latent_dim,
        body.hidden_dims,
        body.activation,
        net=None if body.nets == "mlp" else body.net(2 * body.latent_dim),
    )


def _fullrank(*, body: EncoderBody) -> FullRankGuide:
    return FullRankGuide(body.net(FullRankGuide.outputs(body.latent_dim)), body.latent_dim)


def _iaf_sizes(latent_dim: int, hidden: int | None, context: int | None) -> tuple[int, int]:
    """The MADE width and the context size of an IAF guide (None: chosen from the latent size)."""
    return hidden or max(4 * latent_dim, 32), context or max(latent_dim, 16)


def _iaf(n: int, hidden: int | None, context: int | None, *, body: EncoderBody) -> IAFGuide:
    d = body.latent_dim
    width, size = _iaf_sizes(d, hidden, context)
    spec = format_guide("iaf", {"n": n, "hidden": hidden, "context": context})
    return IAFGuide(body.net(IAFGuide.outputs(d, size)), d, n, width, size, spec=spec)


register(
    "guide",
    "meanfield",
    _meanfield,
    doc="N(mu(x), diag sigma(x)^2), Normal(...).to_event(1)",
    closed_form_kl=True,
    mixture_component=True,
    encoder_outputs=lambda d, params: 2 * d,
)
register(
    "guide",
    "fullrank",
    _fullrank,
    doc="N(mu(x), L(x) L(x)^T), MultivariateNormal(loc, scale_tril), L lower triangular",
    closed_form_kl=True,
    mixture_component=True,
    encoder_outputs=lambda d, params: FullRankGuide.outputs(d),
)
register(
    "guide",
    "iaf",
    _iaf,
    params=(
        Param("n", 2, int, "flow steps", shown=True),
        Param("hidden", None, int, "MADE hidden width (default max(4 d, 32))"),
        Param("context", None, int, "size of the context h(x) (default max(d, 16))"),
    ),
    doc="n inverse autoregressive flow steps on a mean-field base, Kingma et al. 2016",
    check=_positive,
    closed_form_kl=False,
    mixture_component=False,
    encoder_outputs=lambda d, params: IAFGuide.outputs(
        d, _iaf_sizes(d, params.get("hidden"), params.get("context"))[1]
    ),
)
REGISTRY.add_column(
    "guide",
    "KL to N(0, I) under analytic",
    lambda e: (
        "closed form" if e.trait("closed_form_kl") else "sampled (a SampledKLWarning says so once)"
    ),
)


def encoder_outputs(spec: str, latent_dim: int) -> int:
    """How many numbers the encoder of guide ``spec`` outputs per point (for memory estimates)."""
    parsed = REGISTRY.parse("guide", spec)
    return int(parsed.entry.trait("encoder_outputs")(latent_dim, parsed.values))


# ============================================================================ KL registrations
@register_kl(MultivariateNormal, Independent)
def _kl_mvn_diag_normal(q: MultivariateNormal, p: Independent) -> torch.Tensor:
    """Closed-form ``KL(N(m, L L^T) || N(mu, diag s^2))`` (see the module docstring); anything else: no closed form."""
    base = p.base_dist
    if not (type(base) in (Normal, dist.Normal) and p.reinterpreted_batch_ndims == 1):
        raise NotImplementedError
    tril = q.scale_tril
    var_p = base.scale.pow(2)
    trace = (tril.pow(2).sum(-1) / var_p).sum(-1)
    maha = ((q.loc - base.loc).pow(2) / var_p).sum(-1)
    log_det = 2 * base.scale.log().sum(-1) - 2 * tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return 0.5 * (trace + maha - q.event_shape[0] + log_det)


_SAID: set[str] = set()


@register_kl(IAFPosterior, torch.distributions.Distribution)
def _kl_iaf(q: IAFPosterior, p: torch.distributions.Distribution) -> torch.Tensor:
    """No closed form: say so once per process, then let the caller sample the KL."""
    if "iaf" not in _SAID:
        _SAID.add("iaf")
        warnings.warn(
            "no closed-form KL(q || p) exists for an IAF guide: the 'analytic' objective uses a sampled "
            "KL for that site (log q(z | x) - log p(z) at the drawn z), as 'trace' does",
            SampledKLWarning,
            stacklevel=3,
        )
    raise NotImplementedError


def gaussian_gap(cov: torch.Tensor) -> float:
    """``KL(q* || N(m, S))`` for the best diagonal Gaussian q* under ``KL(q || p)`` (precisions ``diag(S^-1)``):
    ``1/2 (sum_i log (S^-1)_ii + log det S)`` nats: the ELBO gap a mean-field guide cannot close."""
    prec = torch.linalg.inv(cov)
    return 0.5 * float(torch.log(torch.diagonal(prec)).sum() + torch.logdet(cov))
