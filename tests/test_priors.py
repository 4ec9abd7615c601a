"""Priors through the registry: the standard normal is the VAE's default, a user's prior is one
registration, trains, and reloads from a checkpoint."""

from __future__ import annotations

import math

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from scipy import stats
from torch import nn

import ppl_vae as pv
from ppl_vae.errors import UserError
from ppl_vae.guides import SampledKLWarning
from ppl_vae.priors import (
    Prior,
    StandardNormalPrior,
    available_priors,
    make_prior,
    register_prior,
    warn_sampled_kl,
)
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


# ------------------------------------------------------------------ learned priors (issue 23)
def _binary(n=48, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, d), 0.3), generator=g)


def test_the_mixture_prior_density_matches_a_hand_computation():
    torch.manual_seed(0)
    prior = make_prior("mog:k=3", 2)
    with torch.no_grad():
        prior.logits.copy_(torch.tensor([0.2, -1.0, 0.5]))
        prior.log_scale.copy_(torch.randn(3, 2) * 0.3)
    z = torch.randn(7, 2)
    got = prior.dist(torch.zeros(7, 5)).log_prob(z)
    w = prior.logits.softmax(-1).detach().numpy()
    loc, scale = prior.loc.detach().numpy(), prior.log_scale.exp().detach().numpy()
    dens = sum(
        w[k] * np.prod(stats.norm.pdf(z.numpy(), loc[k], scale[k]), axis=-1) for k in range(3)
    )
    np.testing.assert_allclose(got.detach().numpy(), np.log(dens), rtol=1e-5)
    assert prior.sample(5000).mean(0).sub(torch.tensor(w) @ prior.loc).abs().max() < 0.1


def test_the_vampprior_is_the_mean_of_q_at_its_pseudo_inputs():
    torch.manual_seed(0)
    vae = pv.VAE(6, 2, (8,), prior="vamp:k=4")
    z = torch.randn(5, 2)
    got = vae.prior_dist(torch.zeros(5, 6)).log_prob(z)
    q = [vae.encoder.dist(u[None]) for u in vae.prior.pseudo_inputs]
    want = torch.logsumexp(torch.stack([qk.log_prob(z) for qk in q]), 0) - math.log(4)
    torch.testing.assert_close(got, want)
    assert vae.prior.pseudo_inputs.shape == (4, vae.encoder_width())
    assert vae.sample(3).shape == (3, 6)
    with pytest.raises(UserError, match="meanfield"):
        pv.VAE(6, 2, (8,), prior="vamp:k=4", guide="iaf:n=1")
    with pytest.raises(UserError, match="k must be a positive"):
        make_prior("mog:k=0", 2)


@pytest.mark.parametrize("spec", ["mog:k=3", "vamp:k=4"])
def test_learned_priors_train_and_iw_is_above_the_elbo_and_rises(spec, tmp_path, monkeypatch):
    from ppl_vae import priors as priors_module

    x = _binary()
    vae = pv.VAE(6, 2, (8,), prior=spec)
    before = [p.detach().clone() for p in vae.prior.parameters()]
    monkeypatch.setattr(priors_module, "_SAID", set())
    with pytest.warns(SampledKLWarning, match="closed_form_kl=False"):
        warn_sampled_kl(vae.prior, "analytic")  # once per prior name, from the registry's trait
    assert warn_sampled_kl(vae.prior, "analytic") and not warn_sampled_kl(vae.prior, "trace")
    history = pv.fit(vae, x, "trace", epochs=4, batch_size=16, seed=0, progress=False)
    assert len(history) == 4
    assert any(not torch.equal(b, p) for b, p in zip(before, vae.prior.parameters(), strict=True))
    elbo = pv.elbo(vae, x, num_samples=200, seed=0)
    iw = [pv.iw_log_likelihood(vae, x, num_samples=k, seed=1) for k in (1, 10, 200)]
    se = float(iw[2].std() / math.sqrt(len(x)))
    assert float(iw[2].mean()) >= float(elbo.mean()) - se
    assert float(iw[0].mean()) <= float(iw[1].mean()) + se <= float(iw[2].mean()) + 2 * se
    pv.save_checkpoint(tmp_path / "ck", vae)
    back, _ = pv.load_checkpoint(tmp_path / "ck")
    assert back.config["prior"] == spec and type(back.prior) is type(vae.prior)
    again = pv.iw_log_likelihood(back, x, num_samples=200, seed=1)
    torch.testing.assert_close(again, iw[2])


def test_the_model_spec_names_a_learned_prior_and_analytic_says_it_samples(monkeypatch):
    from ppl_vae import priors
    from ppl_vae.models.names import make_model

    monkeypatch.setattr(priors, "_SAID", set())  # said once per process: start afresh

    vae = make_model("vae:prior=mog:k=4,latent=3", 6)
    assert vae.prior.spec == "mog:k=4" and vae.latent_dim == 3
    x = _binary(32)
    with pytest.warns(SampledKLWarning):
        pv.fit(vae, x, "analytic", epochs=1, seed=0, progress=False)
