"""The Pyro programs: shapes, closed-form KL, the exact linear-Gaussian likelihood, likelihood checks."""

from __future__ import annotations

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from ppl_vae.likelihoods import make_likelihood
from ppl_vae.models import VAE, LinearGaussianVAE, build_model, standard_normal_kl


def test_model_and_guide_sites_and_shapes(binary_x):
    vae = VAE(12, 3, (16,))
    guide_tr = poutine.trace(vae.guide).get_trace(binary_x)
    model_tr = poutine.trace(poutine.replay(vae.model, trace=guide_tr)).get_trace(binary_x)
    z = guide_tr.nodes["z"]
    assert z["value"].shape == (40, 3)
    assert z["fn"].has_rsample, "the guide must be reparameterised"
    assert model_tr.nodes["x"]["is_observed"]
    assert [f.name for f in model_tr.nodes["z"]["cond_indep_stack"]] == ["data"]
    assert model_tr.nodes["z"]["fn"].event_shape == (3,)
    assert model_tr.nodes["x"]["fn"].event_shape == (12,)


def test_reparameterisation_is_mu_plus_sigma_eps(binary_x):
    vae = VAE(12, 3, (16,))
    torch.manual_seed(3)
    z = poutine.trace(vae.guide).get_trace(binary_x).nodes["z"]["value"]
    loc, scale = vae.encode(binary_x)
    torch.manual_seed(3)
    eps = torch.randn(40, 3)
    torch.testing.assert_close(z, loc + scale * eps)
    z.sum().backward()  # gradients flow through the sample to the encoder
    assert vae.encoder.net[0].weight.grad is not None


def test_closed_form_kl_equals_monte_carlo():
    g = torch.Generator().manual_seed(1)
    loc, scale = torch.randn(5, 3, generator=g), torch.rand(5, 3, generator=g) + 0.3
    closed = standard_normal_kl(loc, scale).sum(-1)  # nats per point
    q = torch.distributions.Normal(loc, scale)
    z = q.sample((200_000,))
    p = torch.distributions.Normal(0.0, 1.0)
    mc = (q.log_prob(z) - p.log_prob(z)).sum(-1)
    se = mc.std(0) / mc.shape[0] ** 0.5
    assert ((mc.mean(0) - closed).abs() < 4 * se + 1e-3).all(), (mc.mean(0), closed, se)
    # and it is what Pyro's TraceMeanField_ELBO finds for our guide/prior pair
    torch.testing.assert_close(
        closed, torch.distributions.kl_divergence(
            torch.distributions.Independent(q, 1),
            torch.distributions.Independent(torch.distributions.Normal(torch.zeros(5, 3), 1.0), 1)))


def test_analytic_elbo_has_lower_variance_than_trace_elbo(binary_x):
    torch.manual_seed(0)
    vae = VAE(12, 3, (16,))
    with pyro.validation_enabled(False), torch.no_grad():
        trace = torch.tensor([Trace_ELBO().loss(vae.model, vae.guide, binary_x) for _ in range(300)])
        analytic = torch.tensor([TraceMeanField_ELBO().loss(vae.model, vae.guide, binary_x) for _ in range(300)])
    # same bound in expectation ...
    assert abs(trace.mean() - analytic.mean()) < 4 * (trace.var() / 300 + analytic.var() / 300).sqrt()
    # ... with less noise when the KL is exact
    assert analytic.var() < trace.var()


def test_linear_gaussian_exact_log_likelihood_matches_multivariate_normal():
    torch.manual_seed(0)
    lg = LinearGaussianVAE(6, 2, noise_scale=0.5)
    x = torch.randn(30, 6)
    w, b = lg.weight.detach(), lg.bias.detach()
    mvn = torch.distributions.MultivariateNormal(b, covariance_matrix=w @ w.T + 0.25 * torch.eye(6))
    torch.testing.assert_close(lg.exact_log_likelihood(x).detach(), mvn.log_prob(x))


def test_exact_posterior_guide_makes_the_elbo_exact():
    torch.manual_seed(0)
    lg = LinearGaussianVAE(5, 2)
    x = torch.randn(20, 5)
    with torch.no_grad():
        elbo = -Trace_ELBO().loss(lg.model, lg.exact_guide, x)
        exact = float(lg.exact_log_likelihood(x).sum())
    assert abs(elbo - exact) < 1e-3


@pytest.mark.parametrize("spec,x,fix", [
    ("bernoulli", torch.full((3, 4), 0.5), "binarize"),
    ("continuous_bernoulli", torch.full((3, 4), 1.5), "gaussian"),
])
def test_likelihood_support_errors_name_the_fix(spec, x, fix):
    vae = VAE(4, 2, (8,), likelihood=spec)
    with pytest.raises(ValueError, match=fix):
        vae.check_data(x)


def test_data_checks_shape_nan_empty():
    vae = VAE(4, 2, (8,), likelihood="gaussian")
    with pytest.raises(ValueError, match=r"shape \(N, 4\).*\(3, 5\)"):
        vae.check_data(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="flatten"):
        vae.check_data(torch.zeros(3, 2, 2))
    bad = torch.zeros(5, 4)
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite.*first bad row is 3"):
        vae.check_data(bad)
    with pytest.raises(ValueError, match="empty"):
        vae.check_data(torch.zeros(0, 4))


def test_likelihood_specs_round_trip_and_errors():
    assert make_likelihood("gaussian:scale=0.1", 3).spec == "gaussian:scale=0.1"
    assert make_likelihood("gaussian", 3).log_scale.requires_grad
    with pytest.raises(ValueError, match="unknown likelihood.*bernoulli"):
        make_likelihood("poisson", 3)
    with pytest.raises(ValueError, match="positive"):
        make_likelihood("gaussian:scale=-1", 3)


def test_build_model_round_trip():
    vae = VAE(10, 3, (7, 5), likelihood="continuous_bernoulli", activation="tanh")
    again = build_model(vae.config)
    assert again.config == vae.config
    again.load_state_dict(vae.state_dict())
    x = torch.rand(4, 10)
    torch.testing.assert_close(again.reconstruct(x), vae.reconstruct(x))


def test_prior_tensors_follow_x_dtype():
    vae = VAE(4, 2, (8,), likelihood="gaussian").double()
    x = torch.randn(3, 4, dtype=torch.float64)
    tr = poutine.trace(vae.model).get_trace(x)
    assert tr.nodes["z"]["value"].dtype == torch.float64
