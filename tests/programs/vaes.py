"""VAEs in Pyro's idioms: the example VAE, a conv VAE on images, a conditional VAE, an IAF guide,
unsized and subsampled data plates."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.transforms import affine_autoregressive
from torch import nn
from torch.nn import functional as F

LOG_2PI = math.log(2 * math.pi)


def normal_lp(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Plain-torch log N(z | loc, scale^2) summed over the last dim."""
    return (-0.5 * ((z - loc) / scale) ** 2 - scale.log() - 0.5 * LOG_2PI).sum(-1)


def bernoulli_probs_lp(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return (x * p.log() + (1 - x) * (1 - p).log()).flatten(start_dim=-x.dim() + 1).sum(-1)


def bernoulli_logits_lp(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    return (
        (-F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none"))
        .flatten(start_dim=-x.dim() + 1)
        .sum(-1)
    )


# ------------------------------------------------------------------------------ Pyro's examples/vae/vae.py
class Encoder(nn.Module):
    def __init__(self, d_in: int, z_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.d_in = d_in
        self.fc1 = nn.Linear(d_in, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, z_dim)
        self.fc22 = nn.Linear(hidden_dim, z_dim)
        self.softplus = nn.Softplus()

    def forward(self, x):
        x = x.reshape(-1, self.d_in)
        hidden = self.softplus(self.fc1(x))
        return self.fc21(hidden), torch.exp(self.fc22(hidden))


class Decoder(nn.Module):
    def __init__(self, d_out: int, z_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(z_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, d_out)
        self.softplus = nn.Softplus()

    def forward(self, z):
        hidden = self.softplus(self.fc1(z))
        return torch.sigmoid(self.fc21(hidden))


class PyroExampleVAE(nn.Module):
    """Pyro's ``examples/vae/vae.py`` (sites ``latent``/``obs``, Bernoulli on probabilities), sized for digits."""

    def __init__(self, d: int = 64, z_dim: int = 8, hidden_dim: int = 64) -> None:
        super().__init__()
        self.d = d
        self.encoder = Encoder(d, z_dim, hidden_dim)
        self.decoder = Decoder(d, z_dim, hidden_dim)
        self.z_dim = z_dim

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z_loc = torch.zeros(x.shape[0], self.z_dim, dtype=x.dtype, device=x.device)
            z_scale = torch.ones(x.shape[0], self.z_dim, dtype=x.dtype, device=x.device)
            z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            loc_img = self.decoder.forward(z)
            pyro.sample(
                "obs",
                dist.Bernoulli(loc_img, validate_args=False).to_event(1),
                obs=x.reshape(-1, self.d),
            )
            return loc_img

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_scale = self.encoder.forward(x)
            pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))

    def torch_log_weights(self, x, *, k, generator):
        loc, scale = self.encoder(x)
        z = loc + scale * torch.randn((k,) + loc.shape, generator=generator)
        p = self.decoder(z).clamp(1e-7, 1 - 1e-7)
        return (
            normal_lp(z, torch.zeros_like(z), torch.ones_like(z))
            + bernoulli_probs_lp(x, p)
            - normal_lp(z, loc, scale)
        )


# ------------------------------------------------------------------------------ a conv VAE on (N, 1, 8, 8)
class ConvVAE(nn.Module):
    """Images stay images: ``x: (N, 1, 8, 8)``, a conv encoder, a transposed-conv decoder, Bernoulli logits."""

    def __init__(self, z_dim: int = 4) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.enc = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(8 * 4 * 4, 2 * z_dim),
        )
        self.dec_fc = nn.Linear(z_dim, 8 * 4 * 4)
        self.dec = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose2d(8, 8, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 1, 3, padding=1),
        )

    def decode(self, z):
        h = self.dec_fc(z)
        batch = h.shape[:-1]
        out = self.dec(h.reshape(-1, 8, 4, 4))
        return out.reshape(batch + (1, 8, 8))

    def encode(self, x):
        loc, raw = self.enc(x).chunk(2, -1)
        return loc, F.softplus(raw) + 1e-4

    def model(self, x):
        pyro.module("conv_decoder", self)
        with pyro.plate("images", x.shape[0]):
            z = pyro.sample(
                "code", dist.Normal(x.new_zeros(x.shape[0], self.z_dim), 1.0).to_event(1)
            )
            pyro.sample("pixels", dist.Bernoulli(logits=self.decode(z)).to_event(3), obs=x)

    def guide(self, x):
        pyro.module("conv_decoder", self)
        with pyro.plate("images", x.shape[0]):
            loc, scale = self.encode(x)
            pyro.sample("code", dist.Normal(loc, scale).to_event(1))

    def torch_log_weights(self, x, *, k, generator):
        loc, scale = self.encode(x)
        z = loc + scale * torch.randn((k,) + loc.shape, generator=generator)
        return (
            normal_lp(z, torch.zeros_like(z), torch.ones_like(z))
            + bernoulli_logits_lp(x, self.decode(z))
            - normal_lp(z, loc, scale)
        )


# ------------------------------------------------------------------------------ a conditional VAE on (x, y)
class ConditionalVAE(nn.Module):
    """``model(x, y)``: p(z | y) = N(prior_net(y), I) and p(x | z, y) (a CVAE in the style of Pyro's
    ``examples/cvae``); the guide q(z | x, y); the data plate unsized, as in that example."""

    def __init__(self, d: int = 64, classes: int = 10, z_dim: int = 4, hidden: int = 64) -> None:
        super().__init__()
        self.classes, self.z_dim = classes, z_dim
        self.prior_net = nn.Linear(classes, z_dim)
        self.dec = nn.Sequential(
            nn.Linear(z_dim + classes, hidden), nn.ReLU(), nn.Linear(hidden, d)
        )
        self.enc = nn.Sequential(
            nn.Linear(d + classes, hidden), nn.ReLU(), nn.Linear(hidden, 2 * z_dim)
        )

    def _onehot(self, y):
        return F.one_hot(y, self.classes).to(torch.get_default_dtype())

    def dataset_inputs(self, dataset, split):
        """The program contract's hook: with a Dataset, the labels are this program's second argument."""
        return (dataset.train_labels if split == "train" else dataset.test_labels,)

    def _q(self, x, y):
        loc, raw = self.enc(torch.cat([x, self._onehot(y)], -1)).chunk(2, -1)
        return loc, F.softplus(raw) + 1e-4

    def _logits(self, z, y):
        yy = self._onehot(y).expand(z.shape[:-1] + (self.classes,))
        return self.dec(torch.cat([z, yy], -1))

    def model(self, x, y):
        pyro.module("cvae", self)
        with pyro.plate("data"):
            prior_loc = self.prior_net(self._onehot(y))
            z = pyro.sample("z", dist.Normal(prior_loc, torch.ones_like(prior_loc)).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self._logits(z, y)).to_event(1), obs=x)

    def guide(self, x, y):
        pyro.module("cvae", self)
        with pyro.plate("data"):
            loc, scale = self._q(x, y)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def torch_log_weights(self, x, y, *, k, generator):
        loc, scale = self._q(x, y)
        z = loc + scale * torch.randn((k,) + loc.shape, generator=generator)
        prior_loc = self.prior_net(self._onehot(y))
        return (
            normal_lp(z, prior_loc, torch.ones_like(prior_loc))
            + bernoulli_logits_lp(x, self._logits(z, y))
            - normal_lp(z, loc, scale)
        )


# ------------------------------------------------------------------------------ an IAF guide
class IAFGuideVAE(nn.Module):
    """A mean-field base amortised by an encoder, pushed through an inverse autoregressive flow
    (``affine_autoregressive``, registered with ``pyro.module``)."""

    def __init__(self, d: int = 64, z_dim: int = 4, hidden: int = 64) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.enc = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, 2 * z_dim))
        self.dec = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, d))
        self.iaf = affine_autoregressive(z_dim, hidden_dims=[16])

    def _base(self, x):
        loc, raw = self.enc(x).chunk(2, -1)
        return loc, F.softplus(raw) + 1e-3

    def model(self, x):
        pyro.module("dec", self.dec)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], self.z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.dec(z)).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("enc", self.enc)
        pyro.module("iaf", self.iaf)
        with pyro.plate("data", x.shape[0]):
            loc, scale = self._base(x)
            base = dist.Normal(loc, scale).to_event(1)
            pyro.sample("z", dist.TransformedDistribution(base, [self.iaf]))

    def torch_log_weights(self, x, *, k, generator):
        loc, scale = self._base(x)
        u = loc + scale * torch.randn((k,) + loc.shape, generator=generator)
        z = self.iaf(u)
        log_q = normal_lp(u, loc, scale) - self.iaf.log_abs_det_jacobian(u, z)
        return (
            normal_lp(z, torch.zeros_like(z), torch.ones_like(z))
            + bernoulli_logits_lp(x, self.dec(z))
            - log_q
        )


# ------------------------------------------------------------------------------ the data plate, unsized / subsampled
class UnsizedPlateVAE(PyroExampleVAE):
    """The example VAE with ``pyro.plate("data")`` (no size), as in Pyro's cvae and M2 examples."""

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data"):
            z = pyro.sample(
                "latent", dist.Normal(x.new_zeros(x.shape[0], self.z_dim), 1.0).to_event(1)
            )
            pyro.sample(
                "obs", dist.Bernoulli(self.decoder(z), validate_args=False).to_event(1), obs=x
            )

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data"):
            z_loc, z_scale = self.encoder(x)
            pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))


class SubsampledPlateVAE(PyroExampleVAE):
    """The mini-batch idiom of Pyro's SVI tutorials: ``pyro.plate("data", N, subsample_size=len(x))``,
    the batch passed in, the full data size declared (Pyro then scales the plate by N / len(x))."""

    def __init__(self, n_full: int, **kw) -> None:
        super().__init__(**kw)
        self.n_full = n_full

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", self.n_full, subsample_size=len(x)):
            z = pyro.sample(
                "latent", dist.Normal(x.new_zeros(x.shape[0], self.z_dim), 1.0).to_event(1)
            )
            pyro.sample(
                "obs", dist.Bernoulli(self.decoder(z), validate_args=False).to_event(1), obs=x
            )

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", self.n_full, subsample_size=len(x)):
            z_loc, z_scale = self.encoder(x)
            pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
