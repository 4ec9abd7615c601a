"""Programs with structure beyond one local latent: a global latent with ``pyro.param`` guide parameters,
per-pixel latents in a plate nested in the data plate, and the semi-supervised M2 with an enumerated label."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.distributions import constraints
from torch import nn
from torch.nn import functional as F

from .vaes import bernoulli_logits_lp, normal_lp


# ------------------------------------------------------------------------------ a global latent outside the plate
class GlobalBiasVAE(nn.Module):
    """x_n ~ Bernoulli(logits = decoder(z_n) + b) with one global bias vector ``b ~ N(0, I)`` outside the data
    plate; the guide has q(b) = N(b_loc, b_scale) with ``pyro.param`` s (a positive constraint on the scale)."""

    def __init__(self, d: int = 64, z_dim: int = 2, hidden: int = 32) -> None:
        super().__init__()
        self.d, self.z_dim = d, z_dim
        self.dec = nn.Sequential(nn.Linear(z_dim, hidden), nn.Tanh(), nn.Linear(hidden, d))
        self.enc = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, 2 * z_dim))

    def _q(self, x):
        loc, raw = self.enc(x).chunk(2, -1)
        return loc, F.softplus(raw) + 1e-4

    def model(self, x):
        pyro.module("dec", self.dec)
        b = pyro.sample("bias", dist.Normal(x.new_zeros(self.d), 1.0).to_event(1))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], self.z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.dec(z) + b).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("enc", self.enc)
        b_loc = pyro.param("b_loc", lambda: x.new_zeros(self.d))
        b_scale = pyro.param(
            "b_scale", lambda: x.new_full((self.d,), 0.1), constraint=constraints.positive
        )
        pyro.sample("bias", dist.Normal(b_loc, b_scale).to_event(1))
        with pyro.plate("data", x.shape[0]):
            loc, scale = self._q(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def torch_log_weights_given_bias(self, x, bias, *, k, generator):
        """log p(x_n, z | b) - log q(z | x_n) at a fixed global bias (what ``fix_globals`` evaluates)."""
        loc, scale = self._q(x)
        z = loc + scale * torch.randn((k,) + loc.shape, generator=generator)
        return (
            normal_lp(z, torch.zeros_like(z), torch.ones_like(z))
            + bernoulli_logits_lp(x, self.dec(z) + bias)
            - normal_lp(z, loc, scale)
        )


# ------------------------------------------------------------------------------ per-pixel latents, nested plates
class PixelLatentModel(nn.Module):
    """Per-pixel latents: z_nj ~ N(0, 1), x_nj ~ N(a_j z_nj + c_j, s^2), the data plate at dim -2 and the pixel
    plate at dim -1; the guide q(z_nj | x_nj) = N(u_j x_nj + v_j, w_j^2) from ``pyro.param`` s.

    The exact marginal is x_nj ~ N(c_j, a_j^2 + s^2), so log p(x_n) is known per point."""

    def __init__(self, d: int = 16, s: float = 0.5) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.register_buffer("a", 0.5 + torch.rand(d, generator=g))
        self.register_buffer("c", torch.randn(d, generator=g))
        self.d, self.s = d, s

    def model(self, x):
        with pyro.plate("data", x.shape[0], dim=-2), pyro.plate("pixels", self.d, dim=-1):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(self.a * z + self.c, self.s), obs=x)

    def guide(self, x):
        u = pyro.param("u", lambda: torch.zeros(self.d))
        v = pyro.param("v", lambda: torch.zeros(self.d))
        w = pyro.param("w", lambda: torch.ones(self.d), constraint=constraints.positive)
        with pyro.plate("data", x.shape[0], dim=-2), pyro.plate("pixels", self.d, dim=-1):
            pyro.sample("z", dist.Normal(u * x + v, w))

    def exact_log_likelihood(self, x):
        return dist.Normal(self.c, (self.a**2 + self.s**2).sqrt()).log_prob(x).sum(-1)

    def exact_guide_params(self):
        """The exact posterior, per pixel: a Gaussian with mean u x + v and sd w."""
        var = 1.0 / (1.0 + self.a**2 / self.s**2)
        u = var * self.a / self.s**2
        return u, -u * self.c, var.sqrt()


# ------------------------------------------------------------------------------ M2, semi-supervised
class M2(nn.Module):
    """Kingma et al. (2014) M2 in the style of Pyro's ``examples/vae/ss_vae_M2.py``, on one batch form
    ``(x, y)`` with ``y = -1`` where the label is missing: y observed where given (``obs_mask``), enumerated
    where not (``infer={"enumerate": "parallel"}``, summed out by ``TraceEnum_ELBO``); q(y | x) a classifier;
    the alpha-weighted classification term on labelled rows as a ``pyro.factor`` in the model."""

    def __init__(
        self, d: int = 64, classes: int = 10, z_dim: int = 4, hidden: int = 64, alpha: float = 10.0
    ) -> None:
        super().__init__()
        self.classes, self.z_dim, self.alpha = classes, z_dim, alpha
        self.encoder_y = nn.Sequential(
            nn.Linear(d, hidden), nn.Softplus(), nn.Linear(hidden, classes)
        )
        self.encoder_z = nn.Sequential(
            nn.Linear(d + classes, hidden), nn.Softplus(), nn.Linear(hidden, 2 * z_dim)
        )
        self.decoder = nn.Sequential(
            nn.Linear(z_dim + classes, hidden), nn.Softplus(), nn.Linear(hidden, d)
        )

    def _onehot(self, y):
        return F.one_hot(y, self.classes).to(torch.get_default_dtype())

    def model(self, x, y):
        pyro.module("ss_vae", self)
        labelled = y >= 0
        with pyro.plate("data"):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], self.z_dim), 1.0).to_event(1))
            prior = dist.Categorical(logits=x.new_zeros(x.shape[0], self.classes))
            ys = pyro.sample(
                "y", prior, obs=y.clamp(min=0), obs_mask=labelled, infer={"enumerate": "parallel"}
            )
            yy = self._onehot(ys)
            zz = z.expand(yy.shape[:-1] + (self.z_dim,))
            pyro.sample(
                "x", dist.Bernoulli(logits=self.decoder(torch.cat([zz, yy], -1))).to_event(1), obs=x
            )
            classify = dist.Categorical(logits=self.encoder_y(x)).log_prob(y.clamp(min=0))
            pyro.factor("classification", self.alpha * classify * labelled)

    def guide(self, x, y):
        pyro.module("ss_vae", self)
        labelled = y >= 0
        with pyro.plate("data"):
            with poutine.mask(mask=~labelled):
                guess = pyro.sample(
                    "y_unobserved",
                    dist.Categorical(logits=self.encoder_y(x)),
                    infer={"enumerate": "parallel"},
                )
            ys = torch.where(labelled, y.clamp(min=0), guess)
            yy = self._onehot(ys)
            xx = x.expand(yy.shape[:-1] + x.shape[-1:])
            loc, raw = self.encoder_z(torch.cat([xx, yy], -1)).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, F.softplus(raw) + 1e-4).to_event(1))

    @torch.no_grad()
    def entropy(self, x) -> float:
        """Mean entropy of q(y | x) over the rows of x (log 10 = 2.303 for a uniform classifier)."""
        return float(dist.Categorical(logits=self.encoder_y(x)).entropy().mean())

    @torch.no_grad()
    def accuracy(self, x, y) -> float:
        return float((self.encoder_y(x).argmax(-1) == y).float().mean())

    def torch_log_weights(self, x, y, *, k, generator):
        """Unlabelled rows (y = -1): y ~ q(y | x), z ~ q(z | x, y); log p(x, y, z) - log q(y, z | x)."""
        assert bool((y < 0).all()), "the reference sampler is for unlabelled rows"
        logits_y = self.encoder_y(x)
        q_y = dist.Categorical(logits=logits_y)
        ys = torch.multinomial(q_y.probs, k, replacement=True, generator=generator).T  # (k, n)
        yy = self._onehot(ys)
        loc, raw = self.encoder_z(torch.cat([x.expand(k, -1, -1), yy], -1)).chunk(2, -1)
        scale = F.softplus(raw) + 1e-4
        z = loc + scale * torch.randn(loc.shape, generator=generator)
        log_p = (
            normal_lp(z, torch.zeros_like(z), torch.ones_like(z))
            - math.log(self.classes)
            + bernoulli_logits_lp(x, self.decoder(torch.cat([z, yy], -1)))
        )
        return log_p - q_y.log_prob(ys) - normal_lp(z, loc, scale)
