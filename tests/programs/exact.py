"""Models with exact answers, shared by the estimator tests (``test_diagnostics``, ``test_ais``).

- ``make_linear_vae``: a 5-D linear-Gaussian VAE whose posterior is strongly correlated (corr -0.85), its
  built-in mean-field guide set by hand to a deliberately inexact q: exact log p(x) in closed form.
- ``TanhModel``: a 1-D-latent nonlinear model, exact log p(x) by quadrature.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

import ppl_vae as pv

D, d = 5, 2


def inv_softplus(y: torch.Tensor) -> torch.Tensor:
    return y + torch.log(-torch.expm1(-y))


def make_linear_vae(offset: float = 0.3, widen: float = 1.1) -> pv.LinearGaussianVAE:
    """A ``LinearGaussianVAE(5, 2)`` with a fixed decoder and its mean-field guide set to the exact
    posterior mean shifted by ``offset`` posterior s.d., the marginal s.d. widened by ``widen``."""
    vae = pv.LinearGaussianVAE(D, d, noise_scale=0.5)
    w = torch.tensor([[1.0, 0.8], [0.6, 1.0], [0.9, 0.5], [0.4, 0.6], [0.7, 0.9]])
    b = torch.tensor([0.1, -0.2, 0.3, 0.0, 0.5])
    with torch.no_grad():
        vae.decoder.net[0].weight.copy_(w)
        vae.decoder.net[0].bias.copy_(b)
        _, cov = vae.exact_posterior(torch.zeros(1, D))
        gain = (w / vae.noise_variance()[:, None]) @ cov  # posterior mean = (x - b) @ gain
        sd = cov.diag().sqrt()
        enc = vae.encoder.net[0]
        enc.weight.zero_()
        enc.bias.zero_()
        enc.weight[:d] = gain.T
        enc.bias[:d] = -(b @ gain) + offset * sd
        enc.bias[d:] = inv_softplus(widen * sd - vae.encoder.min_scale)
    return vae


class TanhModel:
    """z ~ N(0, 1), x | z ~ N(a tanh(2 z + 0.5) + c z, 0.3^2 I), D = 3.

    Site and plate names differ from the VAE's on purpose ("u", "obs", "points")."""

    a = torch.tensor([1.5, -1.0, 0.8])
    c = torch.tensor([0.2, 0.5, -0.3])

    def model(self, x):
        with pyro.plate("points", x.shape[0]):
            u = pyro.sample("u", dist.Normal(x.new_zeros(x.shape[0]), 1.0))
            mean = self.a * torch.tanh(2.0 * u[..., None] + 0.5) + self.c * u[..., None]
            pyro.sample("obs", dist.Normal(mean, 0.3).to_event(1), obs=x)

    def guide(self, x):  # a rough amortised guide: a linear map of x, too wide
        with pyro.plate("points", x.shape[0]):
            pyro.sample("u", dist.Normal(0.3 * x @ torch.tensor([1.0, -0.5, 0.4]), 0.6))

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        u = torch.randn(n, 1, generator=g)
        return (
            self.a * torch.tanh(2.0 * u + 0.5) + self.c * u + 0.3 * torch.randn(n, 3, generator=g)
        )

    def posterior_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and s.d. of u per point by brute force on a grid (for building guides)."""
        u = torch.linspace(-8, 8, 4001)
        mean = self.a * torch.tanh(2.0 * u[:, None, None] + 0.5) + self.c * u[:, None, None]
        lp = dist.Normal(0.0, 1.0).log_prob(u)[:, None] + dist.Normal(mean, 0.3).log_prob(x).sum(-1)
        w = (lp - lp.logsumexp(0)).exp()
        m = (w * u[:, None]).sum(0)
        v = (w * (u[:, None] - m) ** 2).sum(0)
        return m, v.sqrt()

    def guide_with(self, width: float):
        """A guide of the exact posterior mean and ``width`` times the exact posterior s.d."""

        def guide(x):
            m, s = self.posterior_moments(x)
            with pyro.plate("points", x.shape[0]):
                pyro.sample("u", dist.Normal(m, width * s))

        return guide


def mcar(n: int, dim: int, missing: float, seed: int) -> torch.Tensor:
    """An MCAR mask ``(n, dim)``, True = observed, every row with at least one observed cell."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, dim, generator=g) >= missing
    empty = ~mask.any(1)
    mask[empty, torch.randint(0, dim, (int(empty.sum()),), generator=g)] = True
    return mask


class MaskedLinear:
    """A user's program on a table with holes, written with the Pyro idiom: ``model(x, mask)`` observes
    ``Normal(W z + b, s).mask(mask).to_event(1)``, so only observed cells are scored.

    Its parameters are those of a :class:`~ppl_vae.LinearGaussianVAE` (``vae``), whose exact methods give
    ``log p(x_obs)``, ``p(x_mis | x_obs)`` and ``p(z | x_obs)``. The guide is the exact ``p(z | x_obs)``
    with its mean shifted by ``offset`` posterior s.d. and its covariance widened by ``widen**2``: a
    proposal close to, but not, the posterior (the weights vary, and SNIS has error to measure)."""

    def __init__(self, vae: pv.LinearGaussianVAE, offset: float = 0.3, widen: float = 1.2):
        self.vae, self.offset, self.widen = vae, offset, widen

    def model(self, x, mask):
        vae = self.vae
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], d), 1.0).to_event(1))
            loc = z @ vae.weight.T + vae.bias
            scale = vae.noise_variance().sqrt()
            pyro.sample("x", dist.Normal(loc, scale).mask(mask).to_event(1), obs=x)

    def guide(self, x, mask):
        loc, cov = self.vae.exact_observed_posterior(x, mask)
        sd = cov.diagonal(dim1=-2, dim2=-1).sqrt()
        with pyro.plate("data", x.shape[0]):
            pyro.sample(
                "z",
                dist.MultivariateNormal(
                    loc + self.offset * sd, covariance_matrix=self.widen**2 * cov
                ),
            )
