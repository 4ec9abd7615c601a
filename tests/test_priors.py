"""Priors through the registry: the standard normal is the VAE's default, a user's prior is one
registration, trains, and reloads from a checkpoint."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch
from torch import nn

import ppl_vae as pv
from ppl_vae.errors import UserError
from ppl_vae.priors import Prior, StandardNormalPrior, available_priors, make_prior, register_prior
from ppl_vae.registry import REGISTRY, Param


def test_the_standard_normal_is_the_default_and_matches_torch():
    vae = pv.VAE(6, 3, (8,))
    assert isinstance(vae.prior, StandardNormalPrior) and "prior" not in vae.config
    x = torch.zeros(5, 6)
    p = vae.prior.dist(x)
    assert p.batch_shape == (5,) and p.event_shape == (3,)
    z = torch.randn(5, 3)
    want = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(p.log_prob(z), want)
    assert "standard_normal" in available_priors()


class ScaledNormal(Prior):
    """A user's prior: N(0, s^2 I) with a learned log-scale."""

    name = "scaled_normal"

    def __init__(self, latent_dim: int, init: float = 1.0) -> None:
        super().__init__(latent_dim)
        self.init = init
        self.log_scale = nn.Parameter(torch.full((latent_dim,), float(init)).log())

    @property
    def spec(self) -> str:
        return f"scaled_normal:init={self.init:g}"

    def dist(self, x):
        n = x.shape[0]
        scale = self.log_scale.exp().expand(n, self.latent_dim)
        return dist.Normal(x.new_zeros(n, self.latent_dim), scale).to_event(1)

    def sample(self, n, generator=None, device=None):
        eps = torch.randn(n, self.latent_dim, generator=generator, device=device)
        return eps * self.log_scale.exp().to(eps.device)


def test_a_users_prior_is_trained_and_reloads(tmp_path):
    register_prior(
        "scaled_normal",
        ScaledNormal,
        params=(Param("init", 1.0, float, "initial scale"),),
        doc="N(0, s^2 I), s learned",
        replace=True,
    )
    try:
        x = torch.randn(64, 4)
        vae = pv.VAE(4, 2, (8,), likelihood="gaussian", prior="scaled_normal:init=2")
        before = vae.prior.log_scale.detach().clone()
        pv.fit(vae, x, "trace", epochs=2, batch_size=32, seed=0, progress=False)
        assert not torch.equal(before, vae.prior.log_scale.detach())  # trained with the networks
        assert vae.config["prior"] == "scaled_normal:init=2" and vae.sample(3).shape == (3, 4)
        pv.save_checkpoint(tmp_path / "ck", vae)
        back, _ = pv.load_checkpoint(tmp_path / "ck")
        torch.testing.assert_close(back.prior.log_scale, vae.prior.log_scale)
    finally:
        REGISTRY.unregister("prior", "scaled_normal")
    with pytest.raises(UserError, match="unknown prior 'scaled_normal'; choose one of: standard"):
        make_prior("scaled_normal", 2)
