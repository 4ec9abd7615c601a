"""q(z | x) against the true posterior: local refinement (amortisation gap) and NUTS references."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pytest
import torch

import ppl_vae as pv
from ppl_vae.analysis import amortization_gap, gaussian_kl, gaussian_w2, reference_posterior


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def linear() -> tuple[pv.LinearGaussianVAE, torch.Tensor]:
    """A linear-Gaussian VAE with random weights and an untrained (poor) linear encoder."""
    torch.manual_seed(0)
    model = pv.LinearGaussianVAE(5, 2, noise_scale=0.5)
    x = torch.randn(12, 5)
    return model, x


def test_refinement_reaches_the_best_mean_field_gaussian(linear):
    model, x = linear
    gap = amortization_gap(model, x, num_samples=2000, elbo_samples=500, steps=300, lr=0.05, seed=0)
    assert list(gap.index) == list(range(12))
    # the refined ELBO beats the encoder's for every point (same draws, closed-form KL)
    assert (gap["elbo_local"] > gap["elbo_amortized"]).all()
    assert (gap["amortization_gap"] > 0).all()
    assert gap["approximation_gap"].mean() > 0
    assert np.allclose(gap["inference_gap"], gap["approximation_gap"] + gap["amortization_gap"])
    # log p(x) is known exactly here; the IW estimate with the refined q is close to it
    exact = model.exact_log_likelihood(x).detach().numpy()
    assert np.abs(gap["log_px_iw"].to_numpy() - exact).max() < 0.05
    # for a Gaussian posterior N(m, S) the best mean-field Gaussian has mean m and variances 1/diag(S^-1),
    # and its approximation gap is KL(q* || p(z|x)), the same for every point
    _, cov = model.exact_posterior(x)
    cov = cov.detach().numpy()
    q_var = 1.0 / np.diag(np.linalg.inv(cov))
    kl_star = gaussian_kl(np.zeros(2), np.diag(q_var), np.zeros(2), cov)
    assert gap["approximation_gap"].mean() == pytest.approx(kl_star, abs=0.03)
    assert gap.attrs["loss_curve"][-1] < gap.attrs["loss_curve"][0]


def test_refinement_on_a_trained_vae_does_not_touch_the_decoder(digits):
    torch.manual_seed(0)
    vae = pv.VAE(64, 4, (32,))
    pv.fit(vae, digits, "analytic", epochs=2, progress=False)
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    store_before = set(pyro.get_param_store().keys())
    gap = amortization_gap(
        vae, digits.test[:40], num_samples=500, elbo_samples=500, steps=150, lr=0.05
    )
    assert all(torch.equal(before[k], v) for k, v in vae.state_dict().items())
    assert all(p.requires_grad for p in vae.parameters())
    assert set(pyro.get_param_store().keys()) == store_before
    # nothing is clamped: the refinement raises every point's ELBO (closed-form KL, common draws)
    assert (gap["elbo_local"] > gap["elbo_amortized"]).all()
    assert gap["amortization_gap"].mean() > 0 and gap["approximation_gap"].mean() > 0


def test_nuts_recovers_the_exact_gaussian_posterior(linear):
    model, x = linear
    idx = [0, 4, 9]
    ref = reference_posterior(model, x, idx, num_chains=2, num_samples=400, warmup=200, seed=1)
    assert ref.max_r_hat < 1.05 and ref.min_ess_bulk > 100
    loc, cov = model.exact_posterior(x[idx])
    loc, sd = loc.detach().numpy(), np.sqrt(np.diag(cov.detach().numpy()))
    m = ref.moments
    for j, point in enumerate(idx):
        for k in range(2):
            row = m.loc[(point, k)]
            assert abs(row["nuts_mean"] - loc[j, k]) < 4 * row["mcse_mean"], (point, k)
            ess = ref.diagnostics.loc[(point, k), "ess_bulk"]
            # sd of a sample variance is var * sqrt(2 / ESS)
            assert abs(row["nuts_sd"] ** 2 - sd[k] ** 2) < 4 * sd[k] ** 2 * math.sqrt(2 / ess), (
                point,
                k,
            )
    assert ref.idata.posterior["z"].dims == ("chain", "draw", "point", "z_dim")
    assert ref.idata.posterior["z"].shape == (2, 400, 3, 2)
    assert list(ref.distances.index) == idx and (ref.distances["w2"] >= 0).all()
    assert ref.draws(4).shape == (800, 2)
    fig = ref.plot()
    assert len(fig.axes) == 3


def test_reference_posterior_bad_input(linear):
    model, x = linear
    with pytest.raises(
        ValueError,
        match=r"point index 12 is out of range: x has 12 rows, so indices must be in \[0, 11\]",
    ):
        reference_posterior(model, x, [0, 12])
    with pytest.raises(ValueError, match="point index -1 is out of range"):
        reference_posterior(model, x, [-1])
    with pytest.raises(ValueError, match="num_chains must be an integer >= 1"):
        reference_posterior(model, x, [0], num_chains=0)
    with pytest.raises(ValueError, match="distinct"):
        reference_posterior(model, x, [1, 1])
    with pytest.raises(ValueError, match="steps must be an integer >= 0"):
        amortization_gap(model, x, steps=-1)


def test_gaussian_distances():
    m, c = np.array([0.5, -1.0]), np.array([[1.0, 0.3], [0.3, 0.5]])
    assert gaussian_w2(m, c, m, c) == pytest.approx(0.0, abs=1e-6)
    assert gaussian_kl(m, c, m, c) == pytest.approx(0.0, abs=1e-9)
    # 1-D: W2 = sqrt((m1 - m2)^2 + (s1 - s2)^2)
    assert gaussian_w2(
        np.array([0.0]), np.array([[4.0]]), np.array([1.0]), np.array([[1.0]])
    ) == pytest.approx(math.sqrt(2.0))
    p = torch.distributions.MultivariateNormal(torch.tensor(m), torch.tensor(c))
    q = torch.distributions.MultivariateNormal(
        torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)
    )
    assert gaussian_kl(m, c, np.zeros(2), np.eye(2)) == pytest.approx(
        float(torch.distributions.kl_divergence(p, q))
    )
