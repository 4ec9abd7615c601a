"""Variational autoencoders written as Pyro programs.

The generative model and the amortised guide (Kingma & Welling, 2014;
Rezende et al., 2014) are, for a batch ``x: (N, D)``::

    model:  z_n ~ p(z) = N(0, I_d),     x_n | z_n ~ p(x | decoder(z_n))     (plate "data";
                                         another prior of :mod:`ppl_vae.priors` with ``prior=``)
    guide:  z_n ~ q(z | x_n)            (a family of :mod:`ppl_vae.guides`, mean-field by default:
                                         N(mu(x_n), diag sigma(x_n)^2), z = mu + sigma * eps)

Both are plain Pyro functions (bound methods) with the data plate as the
right-most batch dimension, the latent site ``"z"`` and the observed site
``"x"``. The prior is an ``Independent(Normal)`` with event shape ``(d,)``, and so is
the mean-field guide, so ``TraceMeanField_ELBO`` finds the closed-form
``KL(q || p) = 1/2 sum_j (sigma_j^2 + mu_j^2 - 1 - log sigma_j^2)`` instead of
falling back to a sampled KL; a full-rank guide has its closed form registered in
:mod:`ppl_vae.guides`; an IAF guide has none (the KL is sampled, and the analytic objective says so).

``guide=`` chooses the family (``"meanfield"``, ``"fullrank"``, ``"iaf:n=K"``), ``nets=`` the networks
(``"mlp"`` or ``"conv"`` for images; data stay rows ``(N, C*H*W)``).

**Tables and missing values** (:mod:`ppl_vae.models.tables`): ``VAE(len(data.schema), likelihood="auto",
schema=data.schema)`` gives every column its family (:class:`~ppl_vae.likelihoods.TableLikelihood`, log p(x)
in the data's units); both programs take a mask as an optional second input, ``model(x, mask=None)`` and
``guide(x, mask=None)``, which ``dataset_inputs`` supplies for data with missing cells: the likelihood
scores observed cells only. :meth:`VAE.sample` draws from ``p(x | z)`` (``mean=True``: the means), and
``sample_frame`` / ``reconstruct_frame`` return DataFrames in the user's terms.

:class:`LinearGaussianVAE` is probabilistic PCA / factor analysis written the
same way: ``x = W z + b + noise`` with diagonal Gaussian noise, whose marginal
``x ~ N(b, W W^T + diag(s^2))`` gives the exact ``log p(x)`` that the
estimators in :mod:`ppl_vae.diagnostics` are tested against (Tipping & Bishop, 1999).

Networks are registered with ``pyro.module`` under the names ``"encoder"`` and
``"decoder"``; :func:`ppl_vae.train.fit` scopes Pyro's parameter store so that
two models can live in one process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ..errors import DataError, UserError
from ..guides import canonical_guide, make_guide
from ..likelihoods import GaussianLikelihood, Likelihood, TableLikelihood
from ..nets import check_nets, check_sizes, image_shape_for, make_decoder
from ..priors import Prior, make_prior
from ..registry import REGISTRY, Entry
from .registry import PURE_PROGRAMS, register_model
from .tables import ColumnShares, TableInputs, build_likelihood, likelihood_config

__all__ = ["VAE", "LinearGaussianVAE", "standard_normal_kl"]


@register_model
class VAE(TableInputs, ColumnShares, nn.Module):
    """A VAE as a Pyro ``model``/``guide`` pair with an amortised guide family and MLP or conv networks.

    Args:
        input_dim: D, the size of one flattened observation.
        latent_dim: d, the size of the latent code.
        hidden_dims: widths of the encoder's hidden layers; the decoder mirrors them (with
            ``nets="conv"``: the dense layers after the convolutions).
        likelihood: ``"bernoulli"`` (data in {0, 1}), ``"continuous_bernoulli"``
            (data in [0, 1]), ``"gaussian"`` (learned scale) or ``"gaussian:scale=s"``, any registered
            spec (``available_likelihoods()``); with ``schema``: ``"auto"``, one spec for every column, or
            ``{column: spec}`` (:class:`~ppl_vae.likelihoods.TableLikelihood`).
        activation: hidden-layer non-linearity (``"relu"``, ``"tanh"``, ...).
        guide: ``"meanfield"`` (default), ``"fullrank"`` or ``"iaf:n=K"`` (see :mod:`ppl_vae.guides`).
        nets: ``"mlp"`` (default) or ``"conv"`` (images; see :mod:`ppl_vae.nets`).
        image_shape: ``(C, H, W)`` of a row for ``nets="conv"``; default one channel of a square image
            (``input_dim=64 -> (1, 8, 8)``).
        prior: p(z), a spec of :mod:`ppl_vae.priors` (default ``"standard_normal"``) or a
            :class:`~ppl_vae.priors.Prior`.
        schema: a table's :class:`~ppl_vae.data.schema.Schema` (``data.schema``): one family per column.
        mask_inputs: the encoder also sees the mask (default: True for a table with missing cells).

    Examples:
        >>> import torch
        >>> import ppl_vae as pv
        >>> _ = torch.manual_seed(0)
        >>> x = torch.bernoulli(torch.full((20, 6), 0.5), generator=torch.Generator().manual_seed(0))
        >>> vae = pv.VAE(input_dim=6, latent_dim=2, hidden_dims=(8,))
        >>> vae.config["latent_dim"], vae.config["likelihood"]
        (2, 'bernoulli')
        >>> pv.elbo(vae.model, vae.guide, x, seed=0).shape  # model and guide are plain Pyro functions
        torch.Size([20])
    """

    def __init__(
        self,
        input_dim: int,
        latent_dim: int = 2,
        hidden_dims: Sequence[int] = (256,),
        likelihood: str | Likelihood | Mapping[str, str] = "bernoulli",
        activation: str = "relu",
        guide: str = "meanfield",
        nets: str = "mlp",
        image_shape: Sequence[int] | None = None,
        prior: str | Prior = "standard_normal",
        schema: Any = None,
        mask_inputs: bool | None = None,
    ) -> None:
        super().__init__()
        hidden_dims = check_sizes(input_dim, latent_dim, hidden_dims)
        self.input_dim = input_dim
        self.latent_dim = latent_dim
        self.hidden_dims = hidden_dims
        self.activation = activation
        self.nets = check_nets(nets)
        self.image_shape = (
            image_shape_for(input_dim, image_shape)
            if self.nets == "conv"
            else (None if image_shape is None else image_shape_for(input_dim, image_shape))
        )
        self.guide_spec = canonical_guide(guide)
        self.likelihood = build_likelihood(likelihood, input_dim, schema)
        table = isinstance(self.likelihood, TableLikelihood)
        if table and self.nets == "conv":
            raise UserError("nets='conv' is for images; a table's VAE uses nets='mlp'")
        default_mask = isinstance(self.likelihood, TableLikelihood) and bool(
            self.likelihood.schema.has_missing
        )
        self.mask_inputs = default_mask if mask_inputs is None else bool(mask_inputs)
        if self.nets == "conv" and self.mask_inputs:
            raise UserError(
                "mask_inputs=True needs nets='mlp' (the conv encoder takes images only)"
            )
        self.encoder = make_guide(
            self.guide_spec,
            self.encoder_width(),
            latent_dim,
            hidden_dims,
            activation,
            self.nets,
            self.image_shape,
        )
        self.decoder = make_decoder(
            self.nets,
            latent_dim,
            self.likelihood.out_dim(),
            hidden_dims,
            activation,
            self.image_shape,
            input_dim,
        )
        self.prior = make_prior(prior, latent_dim, input_width=self.encoder_width())
        if self.prior_needs_encoder and not self.guide_entry.trait("mixture_component", False):
            fit = " or ".join(
                repr(e.name) for e in REGISTRY.entries("guide") if e.trait("mixture_component")
            )
            raise UserError(
                f"prior {self.prior.spec!r} is a mixture of the guide's q at its pseudo-inputs, which "
                f"needs a batched Gaussian guide (a family with the trait mixture_component): use "
                f"guide={fit}, not {guide!r}"
            )

    # ------------------------------------------------------------------ Pyro programs
    def model(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """p(z) p(x | z) for a batch ``x: (N, D)``; ``z: (N, d)`` (``(K, N, d)`` under a particle plate).
        With ``mask: (N, D)`` bool, only the observed cells are scored: ``p(x_obs | z)``."""
        pyro.module("decoder", self.decoder)
        pyro.module("likelihood", self.likelihood)
        pyro.module("prior", self.prior)
        with pyro.plate("data", x.shape[0], dim=-1, device=x.device):  # type: ignore[arg-type]  # Pyro annotates str
            z = pyro.sample("z", self.prior_dist(x))
            pyro.sample("x", self.observation(self.decoder(z), mask), obs=x)

    def guide(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """q(z | x), reparameterised, for ``x: (N, D)``: the guide family's distribution (default
        ``N(mu(x), diag sigma(x)^2)``) of the encoder's input (:meth:`encoder_input`)."""
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0], dim=-1, device=x.device):  # type: ignore[arg-type]  # Pyro annotates str
            pyro.sample("z", self.encoder.dist(self.encoder_input(x, mask)))

    @property
    def guide_entry(self) -> Entry:
        """The registry entry of the guide family (its traits: ``closed_form_kl``, ``mixture_component``)."""
        return REGISTRY.parse("guide", self.guide_spec).entry

    @property
    def prior_needs_encoder(self) -> bool:
        """Whether p(z) is defined through the encoder (the VampPrior's registry trait)."""
        entry = REGISTRY.get("prior", self.prior.name)
        return entry is not None and bool(entry.trait("needs_encoder"))

    def prior_dist(self, x: torch.Tensor) -> dist.TorchDistribution:
        """p(z) for the batch ``x``; a prior defined through the encoder (``needs_encoder``) is given it
        explicitly, so the prior keeps no reference to it (a user's ``dist(x)`` keeps working)."""
        if self.prior_needs_encoder:
            return self.prior.dist(x, self.encoder)
        return self.prior.dist(x)

    # ------------------------------------------------------------------ plain-torch helpers
    def encode(
        self, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and marginal standard deviations of q(z | x), each ``(N, d)``, for ``x: (N, D)``
        (the posterior parameters of the mean-field guide; a Monte Carlo estimate for a flow)."""
        return self.encoder(self.encoder_input(x, mask))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mean of ``p(x | z)`` in data space, ``(..., D)`` for ``z: (..., d)``."""
        return self.likelihood.mean(self.decoder(z))

    def decoder_outputs(self, x: torch.Tensor, mask: torch.Tensor | None, k: int) -> torch.Tensor:
        """The decoder's output at ``k`` draws ``z ~ q(z | x)``: ``(k, N, out_dim)``."""
        return self.decoder(self.encoder.dist(self.encoder_input(x, mask)).sample((k,)))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Decode the posterior mean: ``x: (N, D) -> (N, D)``."""
        loc, _ = self.encode(x, mask)
        return self.decode(loc)

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, mean: bool = False
    ) -> torch.Tensor:
        """``n`` draws of ``p(x) = E_z p(x | z)``, ``z ~ p(z)`` (default ``N(0, I)``): ``(n, D)`` in model
        space. ``mean=True``: the means of ``p(x | z)`` instead (what earlier versions returned)."""
        device = next(self.parameters()).device
        if self.prior_needs_encoder:
            z = self.prior.sample(n, generator=generator, device=device, encoder=self.encoder)
        else:
            z = self.prior.sample(n, generator=generator, device=device)
        out = self.decoder(z)
        return self.likelihood.mean(out) if mean else self.likelihood.sample(out, generator)

    @property
    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this model (JSON-able); see :func:`~ppl_vae.models.build_model`.
        ``guide``, ``nets`` and ``image_shape`` appear when they differ from the defaults."""
        config = {
            "class": type(self).__name__,
            "input_dim": self.input_dim,
            "latent_dim": self.latent_dim,
            "hidden_dims": list(self.hidden_dims),
            "likelihood": likelihood_config(self.likelihood),
            "activation": self.activation,
        }
        return {**config, **self._family_config()}

    def _family_config(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.guide_spec != "meanfield":
            extra["guide"] = self.guide_spec
        if self.prior.spec != "standard_normal":
            extra["prior"] = self.prior.spec
        if self.nets != "mlp":
            extra["nets"] = self.nets
        side = int(self.input_dim**0.5)
        square = side * side == self.input_dim and self.image_shape == (1, side, side)
        if self.image_shape is not None and (self.nets != "conv" or not square):
            extra["image_shape"] = list(self.image_shape)
        if self.mask_inputs != (
            isinstance(self.likelihood, TableLikelihood)
            and bool(self.likelihood.schema.has_missing)
        ):
            extra["mask_inputs"] = self.mask_inputs
        return extra

    def extra_repr(self) -> str:
        return (
            f"D={self.input_dim}, d={self.latent_dim}, likelihood={self.likelihood.spec!r}, "
            f"guide={self.guide_spec!r}, nets={self.nets!r}"
        )


@register_model
class LinearGaussianVAE(VAE):
    """Probabilistic PCA as a VAE: ``x = W z + b + e``, ``e ~ N(0, diag s^2)``, with a linear guide.

    The marginal is Gaussian, ``x ~ N(b, W W^T + diag(s^2))``, so ``log p(x)`` and the
    posterior ``p(z | x) = N(S W^T diag(s^-2) (x - b), S)`` with
    ``S = (I + W^T diag(s^-2) W)^-1`` are known exactly. The default guide is
    mean-field (diagonal), so it is *not* the exact posterior unless ``S`` is diagonal;
    ``guide="fullrank"`` (linear in x, like the exact posterior) can be, and
    :meth:`exact_guide` samples the exact posterior.

    Args:
        input_dim: D.
        latent_dim: d.
        noise_scale: fix the noise scale s (same for every dimension); ``None`` learns one per dimension.
        guide: ``"meanfield"`` (default), ``"fullrank"`` or ``"iaf:n=K"``, with a linear encoder.

    Examples:
        >>> import torch
        >>> import ppl_vae as pv
        >>> _ = torch.manual_seed(0)
        >>> lg = pv.LinearGaussianVAE(input_dim=3, latent_dim=1)
        >>> x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
        >>> lg.exact_log_likelihood(x).shape  # probabilistic PCA: log p(x) in closed form
        torch.Size([4])
    """

    def __init__(
        self,
        input_dim: int,
        latent_dim: int = 2,
        noise_scale: float | None = None,
        guide: str = "meanfield",
    ) -> None:
        super().__init__(
            input_dim,
            latent_dim,
            hidden_dims=(),
            likelihood=GaussianLikelihood(input_dim, scale=noise_scale),
            activation="relu",
            guide=guide,
        )
        self.noise_scale = noise_scale

    def freeze_decoder(self) -> LinearGaussianVAE:
        """Fix ``W``, ``b`` and the noise scale (only the guide trains): returns ``self``.

        With the decoder trained too, the prior's rotation symmetry lets even a mean-field guide reach
        the exact posterior (Lucas et al., 2019); with it fixed at a ``W`` whose posterior is correlated,
        what a richer guide buys shows."""
        for p in [*self.decoder.parameters(), *self.likelihood.parameters()]:
            p.requires_grad_(False)
        self.frozen = True
        return self.train(self.training)

    def train(self, mode: bool = True) -> LinearGaussianVAE:
        super().train(mode)
        if getattr(
            self, "frozen", False
        ):  # a fixed decoder stays in eval mode (Pyro warns about frozen
            self.decoder.train(False)  # parameters of modules in training mode)
            self.likelihood.train(False)
        return self

    @property
    def weight(self) -> torch.Tensor:
        """W: (D, d)."""
        return self._linear().weight

    @property
    def bias(self) -> torch.Tensor:
        """b: (D,)."""
        return self._linear().bias

    def _linear(self) -> nn.Linear:
        layer = cast(nn.Sequential, self.decoder.net)[0]
        if not isinstance(layer, nn.Linear):
            raise TypeError(f"a LinearGaussianVAE's decoder is one nn.Linear; got {layer!r}")
        return layer

    def noise_variance(self) -> torch.Tensor:
        """s^2: (D,)."""
        return cast(GaussianLikelihood, self.likelihood).scale() ** 2

    def marginal(self) -> dist.MultivariateNormal:
        """The exact marginal ``p(x) = N(b, W W^T + diag(s^2))``."""
        w = self.weight
        cov = w @ w.T + torch.diag(self.noise_variance())
        return dist.MultivariateNormal(self.bias, covariance_matrix=cov)

    def exact_log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x)`` in nats per data point: ``x: (N, D) -> (N,)``."""
        x = self.check_data(x)
        return self.marginal().log_prob(x)

    def exact_posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact posterior mean ``(N, d)`` and covariance ``(d, d)`` (shared by all points)."""
        w, prec_noise = self.weight, 1.0 / self.noise_variance()
        eye = torch.eye(self.latent_dim, dtype=w.dtype, device=w.device)
        cov = torch.linalg.inv(eye + w.T @ (prec_noise[:, None] * w))
        cov = 0.5 * (cov + cov.T)
        loc = ((x - self.bias) * prec_noise) @ w @ cov
        return loc, cov

    # ------------------------------------------------------------------ missing cells (MCAR/MAR)
    def _patterns(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Check ``mask: (N, D)`` (True = observed) against ``x`` and group the rows by their pattern."""
        if not isinstance(mask, torch.Tensor) or mask.shape != x.shape or mask.dtype != torch.bool:
            raise DataError(
                f"mask must be a bool tensor of the shape of x {tuple(x.shape)} (True = observed); got "
                f"{type(mask).__name__} {tuple(getattr(mask, 'shape', ()))}"
            )
        empty = (~mask.any(1)).nonzero().flatten()
        if len(empty):
            raise DataError(
                f"{len(empty)} row(s) have no observed cell, first row {int(empty[0])}: log p(x_obs) and "
                "imputation need at least one observed value per row; drop those rows"
            )
        return torch.unique(mask, dim=0, return_inverse=True)

    def exact_observed_log_likelihood(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x_obs)`` per row (nats), the marginal ``N(b_o, C_oo)`` over the observed cells,
        ``C = W W^T + diag(s^2)``: ``x: (N, D)`` (missing cells any finite value), ``mask: (N, D)`` bool
        (True = observed) ``-> (N,)``."""
        x = self.check_data(x)
        patterns, which = self._patterns(x, mask)
        marginal = self.marginal()
        cov, loc = marginal.covariance_matrix, marginal.loc
        out = x.new_empty(len(x))
        for i, pattern in enumerate(patterns):
            rows, o = which == i, pattern.nonzero().flatten()
            part = dist.MultivariateNormal(loc[o], covariance_matrix=cov[o][:, o])
            out[rows] = part.log_prob(x[rows][:, o])
        return out

    def exact_conditional(
        self, x: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The exact ``p(x_mis | x_obs)`` per row: its mean with observed cells kept, ``(N, D)``, and its
        covariance ``(N, D, D)``, zero in every observed row and column.

        ``E[x_m | x_o] = b_m + C_mo C_oo^-1 (x_o - b_o)``, ``Cov = C_mm - C_mo C_oo^-1 C_om``, with
        ``C = W W^T + diag(s^2)`` (the Gaussian conditioning formulas; Bishop 2006, eq. 2.81-2.82)."""
        x = self.check_data(x)
        patterns, which = self._patterns(x, mask)
        marginal = self.marginal()
        cov, loc = marginal.covariance_matrix, marginal.loc
        mean, out_cov = x.clone(), x.new_zeros(len(x), x.shape[1], x.shape[1])
        for i, pattern in enumerate(patterns):
            r = (which == i).nonzero().flatten()
            o, m = pattern.nonzero().flatten(), (~pattern).nonzero().flatten()
            if len(m) == 0:
                continue
            gain = torch.linalg.solve(cov[o][:, o], cov[o][:, m]).T  # C_mo C_oo^-1: (|m|, |o|)
            mean[r[:, None], m] = loc[m] + (x[r][:, o] - loc[o]) @ gain.T
            cond = cov[m][:, m] - gain @ cov[o][:, m]
            out_cov[r[:, None, None], m[:, None], m] = 0.5 * (cond + cond.T)
        return mean, out_cov

    def exact_observed_posterior(
        self, x: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact ``p(z | x_obs)`` per row: mean ``(N, d)`` and covariance ``(N, d, d)``.

        ``S_n = (I + W^T diag(m_n / s^2) W)^-1``, ``mu_n = S_n W^T diag(m_n / s^2) (x_n - b)``: only the
        observed cells ``m_n`` inform z."""
        x = self.check_data(x)
        self._patterns(x, mask)
        w, prec = self.weight, mask.to(x.dtype) / self.noise_variance()  # (N, D)
        eye = torch.eye(self.latent_dim, dtype=w.dtype, device=w.device)
        precision = eye + torch.einsum("ji,nj,jk->nik", w, prec, w)
        cov = torch.linalg.inv(precision)
        cov = 0.5 * (cov + cov.transpose(-1, -2))
        loc = torch.einsum("nij,nj->ni", cov, ((x - self.bias) * prec) @ w)
        return loc, cov

    def exact_guide(self, x: torch.Tensor) -> None:
        """A guide that samples the exact posterior ``p(z | x)`` (full covariance)."""
        n = x.shape[0]
        with pyro.plate("data", n, dim=-1, device=x.device):  # type: ignore[arg-type]  # Pyro annotates str
            loc, cov = self.exact_posterior(x)
            pyro.sample("z", dist.MultivariateNormal(loc, covariance_matrix=cov.expand(n, -1, -1)))

    @property
    def config(self) -> dict[str, Any]:
        config = {
            "class": type(self).__name__,
            "input_dim": self.input_dim,
            "latent_dim": self.latent_dim,
            "noise_scale": self.noise_scale,
        }
        if self.guide_spec != "meanfield":
            config["guide"] = self.guide_spec
        return config


PURE_PROGRAMS.update({VAE.model, VAE.guide})


def standard_normal_kl(loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Closed-form ``KL(N(loc, diag scale^2) || N(0, I))`` per dimension (nats).

    ``1/2 (scale^2 + loc^2 - 1 - log scale^2)``, same shape as ``loc``.
    """
    return 0.5 * (scale.pow(2) + loc.pow(2) - 1.0 - 2.0 * scale.log())
