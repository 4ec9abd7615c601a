"""The Pyro programs: shapes, closed-form KL, the exact linear-Gaussian likelihood, likelihood checks."""

from __future__ import annotations

import math
import warnings

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
        closed,
        torch.distributions.kl_divergence(
            torch.distributions.Independent(q, 1),
            torch.distributions.Independent(torch.distributions.Normal(torch.zeros(5, 3), 1.0), 1),
        ),
    )


def test_analytic_elbo_has_lower_variance_than_trace_elbo(binary_x):
    torch.manual_seed(0)
    vae = VAE(12, 3, (16,))
    with pyro.validation_enabled(False), torch.no_grad():
        trace = torch.tensor(
            [Trace_ELBO().loss(vae.model, vae.guide, binary_x) for _ in range(300)]
        )
        analytic = torch.tensor(
            [TraceMeanField_ELBO().loss(vae.model, vae.guide, binary_x) for _ in range(300)]
        )
    # same bound in expectation ...
    assert (
        abs(trace.mean() - analytic.mean()) < 4 * (trace.var() / 300 + analytic.var() / 300).sqrt()
    )
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


@pytest.mark.parametrize(
    "spec,x,fix",
    [
        ("bernoulli", torch.full((3, 4), 0.5), "binarize"),
        ("continuous_bernoulli", torch.full((3, 4), 1.5), "gaussian"),
    ],
)
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
    with pytest.raises(ValueError, match="non-finite.*the first is row 3"):
        vae.check_data(bad)
    with pytest.raises(ValueError, match="empty"):
        vae.check_data(torch.zeros(0, 4))


def test_likelihood_specs_round_trip_and_errors():
    assert make_likelihood("gaussian:scale=0.1", 3).spec == "gaussian:scale=0.1"
    assert make_likelihood("gaussian", 3).log_scale.requires_grad
    with pytest.raises(ValueError, match="unknown likelihood.*bernoulli"):
        make_likelihood("laplace", 3)  # (poisson is registered since issue 20)
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


# ============================================================================ conv nets
pytestmark_khat = pytest.mark.filterwarnings("ignore:k-hat from num_samples")


@pytestmark_khat
def test_conv_vae_infers_square_images_and_trains_on_digits(digits):
    import ppl_vae as pv

    torch.manual_seed(0)
    vae = VAE(64, 4, (32,), nets="conv")
    assert (
        vae.image_shape == (1, 8, 8)
        and vae.config["nets"] == "conv"
        and "image_shape" not in vae.config
    )
    history = pv.fit(vae, digits, "analytic", epochs=2, batch_size=128, lr=3e-3, progress=False)
    assert history[-1]["test_elbo"] > history[0]["test_elbo"]
    report = pv.evaluate(vae, digits.test[:100], 20, seed=0)
    assert (
        report.summary["iw_mean"] >= report.summary["elbo_mean"]
        and report.summary["kl_per_dim"] is not None
    )
    again = build_model(vae.config)
    again.load_state_dict(vae.state_dict())
    torch.testing.assert_close(again.reconstruct(digits.test[:5]), vae.reconstruct(digits.test[:5]))


@pytest.mark.parametrize("guide", ["meanfield", "fullrank", "iaf:n=2"])
def test_conv_nets_on_28x28_and_explicit_shapes(guide):
    import ppl_vae as pv

    torch.manual_seed(0)
    vae = VAE(784, 3, (16,), nets="conv", guide=guide)
    x = (torch.rand(6, 784) > 0.5).float()
    assert vae.decoder(torch.randn(2, 6, 3)).shape == (2, 6, 784)  # importance samples broadcast
    assert pv.log_weights(vae, x, num_samples=4).shape == (6, 4)
    rgb = VAE(3 * 5 * 7, 2, (8,), nets="conv", image_shape=(3, 5, 7), likelihood="gaussian")
    assert rgb.config["image_shape"] == [3, 5, 7] and build_model(rgb.config).image_shape == (
        3,
        5,
        7,
    )
    assert rgb.decoder(torch.randn(4, 2)).shape == (4, 105)
    with pytest.raises(ValueError, match="not a square.*image_shape"):
        VAE(60, 2, nets="conv")
    with pytest.raises(ValueError, match=r"holds 48 values but input_dim is 64"):
        VAE(64, 2, nets="conv", image_shape=(3, 4, 4))
    with pytest.raises(ValueError, match="nets must be one of"):
        VAE(64, 2, nets="cnn")


# ============================================================================ two stochastic layers
def test_hierarchical_vae_burda_sizes_and_its_analytic_elbo_is_the_elbo(binary_x):
    from ppl_vae.models import ConditionalNormal, HierarchicalVAE

    big = HierarchicalVAE(784)
    assert (
        big.latent_dims == (100, 50)
        and big.hidden_dims == ((200, 200), (100, 100))
        and big.activation == "tanh"
    )
    torch.manual_seed(0)
    hvae = HierarchicalVAE(12, (3, 2), ((16,), (8,)))
    tr = poutine.trace(hvae.guide).get_trace(binary_x)
    model_tr = poutine.trace(poutine.replay(hvae.model, trace=tr)).get_trace(binary_x)
    assert isinstance(model_tr.nodes["z1"]["fn"], ConditionalNormal)
    with pytest.raises(NotImplementedError):  # no closed form: z2 was drawn given z1
        torch.distributions.kl_divergence(tr.nodes["z1"]["fn"], model_tr.nodes["z1"]["fn"])
    with pyro.validation_enabled(False), torch.no_grad():
        trace = torch.tensor(
            [Trace_ELBO().loss(hvae.model, hvae.guide, binary_x) for _ in range(300)]
        )
        analytic = torch.tensor(
            [TraceMeanField_ELBO().loss(hvae.model, hvae.guide, binary_x) for _ in range(300)]
        )
    se = (trace.var() / 300 + analytic.var() / 300).sqrt()
    assert abs(trace.mean() - analytic.mean()) < 4 * se  # the same bound (closed form for z2 only)


@pytestmark_khat
@pytest.mark.parametrize("objective", ["analytic", "iwae:k=3"])
def test_hierarchical_vae_trains_and_goes_through_the_estimators(objective, digits):
    import ppl_vae as pv
    from ppl_vae.models import HierarchicalVAE

    torch.manual_seed(0)
    hvae = HierarchicalVAE(64, (8, 4), ((64,), (32,)))
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*mean field.*"
        )  # Pyro's ordering check (see hierarchical.py)
        history = pv.fit(hvae, digits, objective, epochs=3, batch_size=128, lr=3e-3, progress=False)
    assert history[-1]["test_elbo"] > history[0]["test_elbo"]
    report = pv.evaluate(hvae, digits.test[:100], 20, seed=0)
    s = report.summary
    assert s["latent_dim"] == 12 and s["iw_mean"] >= s["elbo_mean"] and s["kl_per_dim"] is None
    again = build_model(hvae.config)
    again.load_state_dict(hvae.state_dict())
    assert again.config == hvae.config and again.sample(3).shape == (3, 64)


# ============================================================================ M2
@pytestmark_khat
def test_m2_learns_to_classify_under_enum_and_reports_accuracy(digits):
    import ppl_vae as pv
    from ppl_vae.models import SemiSupervisedVAE

    torch.manual_seed(0)
    m2 = SemiSupervisedVAE(64, 10, 4, (64,), labelled_fraction=0.1)
    (y,) = m2.dataset_inputs(digits, "train")
    assert (y >= 0).sum() == round(0.1 * len(y)) and ((y == -1) | (y == digits.train_labels)).all()
    assert (m2.dataset_inputs(digits, "test")[0] == -1).all()  # the test bound is log p(x)
    history = pv.fit(m2, digits, "enum", epochs=25, batch_size=128, lr=3e-3, progress=False)
    entropy = m2.classifier_entropy(digits.test)
    accuracy = history[-1][
        "test_accuracy"
    ]  # recorded by fit through the model's epoch_metrics hook
    assert history[-1]["classifier_entropy"] == pytest.approx(entropy)
    print(
        f"\nM2, 10% labels, enum, 25 epochs: test accuracy {accuracy:.3f}, entropy of q(y|x) {entropy:.2f} "
        f"(log 10 = {math.log(10):.2f})"
    )
    assert entropy < 0.5 * math.log(10) and accuracy > 0.6
    assert accuracy == m2.accuracy(digits.test, digits.test_labels)
    report = pv.evaluate(m2, digits.test[:100], 50, seed=0)
    assert (
        report.summary["discrete_sites"] == ["y"]
        and report.summary["iw_mean"] >= report.summary["elbo_mean"]
    )
    again = build_model(m2.config)
    again.load_state_dict(m2.state_dict())
    assert again.accuracy(digits.test, digits.test_labels) == accuracy


def test_m2_trains_under_trace_and_analytic_is_refused(digits):
    import ppl_vae as pv
    from ppl_vae.models import SemiSupervisedVAE

    torch.manual_seed(0)
    m2 = SemiSupervisedVAE(64, 10, 4, (32,), labelled_fraction=0.2, alpha=5.0)
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # no fast path for a discrete guide site; Pyro on the enumerate flag
        history = pv.fit(m2, digits, "trace", epochs=3, batch_size=128, lr=3e-3, progress=False)
    assert history[-1]["test_elbo"] > history[0]["test_elbo"]
    for objective in ("analytic", "iwae:k=3"):
        with pytest.raises(ValueError, match="'y'.*(no rsample|discrete)"):
            pv.fit(m2, digits, objective, epochs=1, progress=False)
    # tensors: (x, y) with -1 for unlabelled rows
    x, y = digits.train[:64], digits.train_labels[:64].clone()
    y[::2] = -1
    pv.fit(m2, (x, y), "enum", epochs=1, progress=False)
    with pytest.raises(ValueError, match="class indices"):
        m2.check_labels(torch.tensor([0, 12]))
