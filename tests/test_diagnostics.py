"""Tests of ppl_vae.diagnostics: estimators against exact answers, PSIS, the generic path, the CLI.

Ground truths: the linear-Gaussian VAE (exact log p(x) and posterior) and a 1-D nonlinear
model integrated on a dense grid. Parameters are set by hand, not trained, so the tests
are fast and say exactly which guide they use.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from programs.exact import D, TanhModel, d, inv_softplus, make_linear_vae

import ppl_vae as pv
import ppl_vae.estimators.importance as ev
import ppl_vae.estimators.kernels as kernels


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny: one intra-op thread is as fast, and immune to the OpenMP stalls
    seen on a shared 2-core machine (50x slower element-wise ops when another process is busy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def linear():
    vae = make_linear_vae()
    torch.manual_seed(1)
    x = vae.marginal().sample((3000,)).detach()
    exact = vae.exact_log_likelihood(x).detach()
    return vae, x, exact


@pytest.fixture(scope="module")
def linear_log_weights(linear):
    vae, x, _ = linear
    return ev.log_weights(vae.model, vae.guide, x, 5000, seed=0)


@pytest.fixture(scope="module")
def tanh_case():
    tm = TanhModel()
    x = tm.sample(200)
    return tm, x, pv.quadrature_log_likelihood(tm.model, x, data_plate="points")


def _blocked_iw(lw: torch.Tensor, k: int) -> torch.Tensor:
    """E[IW_k] per point, estimated from (N, K) log weights cut into K/k disjoint blocks."""
    n, total = lw.shape
    blocks = lw[:, : total // k * k].reshape(n, total // k, k)
    return (blocks.logsumexp(-1) - math.log(k)).mean(1)


# ----------------------------------------------------------------------------- linear-Gaussian: exact answers
def test_exact_guide_gives_exact_log_likelihood_for_every_k(linear):
    vae, x, exact = linear
    for k in (1, 10, 100):
        iw = ev.iw_log_likelihood(vae.model, vae.exact_guide, x[:300], k, seed=k)
        assert iw.shape == (300,)
        torch.testing.assert_close(iw, exact[:300], atol=2e-4, rtol=0)


def test_mean_field_guide_orders_elbo_iw_exact(linear, linear_log_weights):
    """ELBO < IW_10 < IW_100 < IW_1000 < exact on average; IW rises with K.

    IW_k for k < 5000 is the mean over disjoint blocks of the same 5000 draws (the estimator
    of E[IW_k] with least noise). With these settings the smallest margin, exact - IW_1000
    (about 0.0012 nats, theory Var(w/p)/2K), is about 3.7 standard errors over 3000 points;
    the others are > 50."""
    vae, x, exact = linear
    lw = linear_log_weights
    elbo = ev.elbo(vae.model, vae.guide, x, 10, seed=1)
    iw = {k: _blocked_iw(lw, k) for k in (10, 100, 1000)}
    means = [elbo.mean()] + [iw[k].mean() for k in (10, 100, 1000)] + [exact.mean()]
    assert all(a < b for a, b in zip(means[:-1], means[1:], strict=True)), [float(m) for m in means]
    assert float(exact.mean() - elbo.mean()) > 1.0  # the guide really is inexact


def test_iw_5000_within_0_02_nats_of_exact(linear, linear_log_weights):
    vae, x, exact = linear
    iw = linear_log_weights.logsumexp(-1) - math.log(5000)
    err = (iw - exact).abs().mean()
    assert err < 0.02, float(err)
    # iw_log_likelihood with the same seed walks the same draws as log_weights (first 200 points)
    direct = ev.iw_log_likelihood(vae.model, vae.guide, x[:200], 5000, seed=0)
    torch.testing.assert_close(direct, iw[:200], atol=1e-5, rtol=0)


def test_elbo_sampled_and_analytic_match_closed_form(linear):
    """For Gaussians, ELBO = log p(x) - KL(q(z|x) || p(z|x)) exactly; both estimators are unbiased."""
    vae, x, exact = linear
    x = x[:400]
    loc_q, scale_q = vae.encode(x)
    loc_p, cov_p = vae.exact_posterior(x)
    q = dist.MultivariateNormal(loc_q, scale_tril=torch.diag_embed(scale_q))
    p = dist.MultivariateNormal(loc_p, covariance_matrix=cov_p.expand(len(x), d, d))
    truth = (exact[:400] - torch.distributions.kl_divergence(q, p)).detach()
    for analytic in (False, True):
        est = ev.elbo(vae.model, vae.guide, x, 500, seed=0, analytic_kl=analytic)
        err = est - truth
        assert abs(float(err.mean())) < 4 * float(err.std()) / math.sqrt(len(x)), (
            analytic,
            float(err.mean()),
        )
        assert float(err.abs().mean()) < 0.4  # per-point s.d. of a 500-draw ELBO here is about 0.25


def test_quadrature_matches_exact_on_2d_latent(linear):
    vae, x, exact = linear
    q = pv.quadrature_log_likelihood(vae.model, x[:20], grid=241)
    torch.testing.assert_close(q, exact[:20], atol=1e-3, rtol=0)


# ----------------------------------------------------------------------------- nonlinear 1-D model
def test_iw_matches_quadrature_on_nonlinear_1d_model(tanh_case):
    tm, x, quad = tanh_case
    iw = ev.iw_log_likelihood(tm.model, tm.guide_with(1.2), x, 5000, seed=0, data_plate="points")
    assert float((iw - quad).abs().mean()) < 0.05
    assert float((iw - quad).abs().max()) < 0.2


def test_khat_flags_too_narrow_guide_and_passes_good_guide(tanh_case):
    tm, x, _ = tanh_case
    narrow = pv.psis_diagnostics(
        ev.log_weights(tm.model, tm.guide_with(0.2), x, 1000, seed=0, data_plate="points")
    )
    good = pv.psis_diagnostics(
        ev.log_weights(tm.model, tm.guide_with(1.2), x, 1000, seed=0, data_plate="points")
    )
    assert narrow.khat.shape == (200,)
    # theory for Gaussians, q 5x narrower than p: k = 1 - 0.2^2 = 0.96; estimates from K=1000 run lower
    assert narrow.share_above(0.7) > 0.6, narrow.share_above(0.7)
    assert np.median(narrow.khat) > 0.7
    assert good.share_above(0.5) < 0.05, good.share_above(0.5)
    assert np.median(good.khat) < 0.3
    assert np.all((good.ess >= 1) & (good.ess <= 1000))
    assert good.ess.mean() > 5 * narrow.ess.mean()


def test_psislw_axis_convention_and_ess():
    """Samples on the last axis: a point with one dominant weight gets ESS ~ 1, a flat one ESS = K."""
    lw = np.zeros((3, 200))
    lw[1, 0] = 50.0
    lw[2] = np.random.default_rng(0).standard_t(1.5, 200) * 3
    diag = pv.psis_diagnostics(lw)
    assert diag.khat.shape == (3,)
    np.testing.assert_allclose(diag.ess[:2], [200.0, 1.0], rtol=1e-6)
    # every weight equal (a program without latents): k-hat undefined, not PSIS's inf; the row is exact
    assert np.isnan(diag.khat[0]) and diag.exact.tolist() == [True, False, False]
    assert diag.reliable(0.7)[0] and diag.share_above(0.7) <= 2 / 3


# ----------------------------------------------------------------------------- generic programs
def test_user_written_model_and_guide_match_builtin_path(linear):
    vae, x, _ = linear
    x = x[:400]
    w, b, s = vae.weight.detach(), vae.bias.detach(), vae.likelihood.scale().detach()

    def my_model(data):
        with pyro.plate("batch", data.shape[0]):
            code = pyro.sample("code", dist.Normal(data.new_zeros(len(data), d), 1.0).to_event(1))
            pyro.sample("pixels", dist.Normal(code @ w.T + b, s).to_event(1), obs=data)

    def my_guide(data):
        loc, scale = vae.encode(data)
        with pyro.plate("batch", data.shape[0]):
            pyro.sample("code", dist.Normal(loc, scale).to_event(1))

    for fn, kwargs in (
        (ev.log_weights, {}),
        (ev.iw_log_likelihood, {}),
        (ev.elbo, {"analytic_kl": True}),
    ):
        ours = fn(my_model, my_guide, x, 50, seed=3, data_plate="batch", **kwargs)
        builtin = fn(vae.model, vae.guide, x, 50, seed=3, **kwargs)
        torch.testing.assert_close(ours, builtin, atol=1e-4, rtol=0)


def test_nested_plate_and_scalar_sites_are_summed_per_point():
    """A model with a second plate inside the data plate (pixels at dim -2, data at dim -1) and
    scalar sites gives the same per-point weights as its event-shaped twin."""
    x = torch.randn(30, 4)

    def plated(data):
        with pyro.plate("data", data.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(data.new_zeros(len(data)), 1.0))
            with pyro.plate("pix", 4, dim=-2):
                pyro.sample("x", dist.Normal(z, 1.0), obs=data.T)

    def evented(data):
        with pyro.plate("data", data.shape[0]):
            z = pyro.sample("z", dist.Normal(data.new_zeros(len(data)), 1.0))
            pyro.sample(
                "x", dist.Normal(z[..., None].expand(z.shape + (4,)), 1.0).to_event(1), obs=data
            )

    def guide(data):
        with pyro.plate("data", data.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(data.mean(-1), 0.5))

    a = ev.log_weights(plated, guide, x, 20, seed=0)
    b = ev.log_weights(evented, guide, x, 20, seed=0)
    torch.testing.assert_close(a, b)
    exact = dist.MultivariateNormal(torch.zeros(4), torch.eye(4) + 1.0).log_prob(x)
    torch.testing.assert_close(
        ev.iw_log_likelihood(plated, guide, x, 4000, seed=0), exact, atol=0.02, rtol=0
    )


def test_chunking_and_seeds(linear):
    vae, x, exact = linear
    x, exact = x[:100], exact[:100]
    a = ev.iw_log_likelihood(vae.model, vae.guide, x, 300, seed=7)
    torch.testing.assert_close(
        ev.iw_log_likelihood(vae.model, vae.guide, x, 300, seed=7), a, atol=0, rtol=0
    )
    assert not torch.equal(ev.iw_log_likelihood(vae.model, vae.guide, x, 300, seed=8), a)
    # odd chunk sizes: the running log-sum-exp over particle chunks equals the one-shot one
    chunks = {"batch_size": 7, "particle_chunk": 64}
    lw = ev.log_weights(vae.model, vae.guide, x, 300, seed=7, **chunks)
    c = ev.iw_log_likelihood(vae.model, vae.guide, x, 300, seed=7, **chunks)
    torch.testing.assert_close(c, lw.logsumexp(-1) - math.log(300), atol=1e-5, rtol=0)
    exact_iw = ev.iw_log_likelihood(vae.model, vae.exact_guide, x, 300, seed=7, **chunks)
    torch.testing.assert_close(exact_iw, exact, atol=2e-4, rtol=0)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    torch.testing.assert_close(
        ev.elbo(vae.model, vae.guide, x, 3, generator=g1),
        ev.elbo(vae.model, vae.guide, x, 3, generator=g2),
    )


def test_callers_rng_and_param_store_are_untouched(linear):
    vae, x, _ = linear
    pyro.clear_param_store()
    pyro.param("mine", torch.ones(2))
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    ev.iw_log_likelihood(vae.model, vae.guide, x[:20], 10)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert set(pyro.get_param_store().keys()) == {"mine"}
    pyro.clear_param_store()


# ----------------------------------------------------------------------------- fast log-density path
def _both_paths(monkeypatch, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` through the fast log-densities and through ``site["fn"].log_prob`` only."""
    fast = fn(*args, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(kernels, "FAST_LOG_PROB", False)
        generic = fn(*args, **kwargs)
    return fast, generic


def _binary(n: int, dim: int, seed: int = 0) -> torch.Tensor:
    return (torch.rand(n, dim, generator=torch.Generator().manual_seed(seed)) < 0.3).float()


def _plated_bernoulli(data):
    """Pixels in a plate at dim -2 (Bernoulli without .to_event: event_dims = 0)."""
    with pyro.plate("data", data.shape[0], dim=-1):
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([data.shape[0]]))
        with pyro.plate("pix", data.shape[1], dim=-2):
            pyro.sample(
                "x",
                dist.Bernoulli(logits=z * torch.linspace(-2, 2, data.shape[1])[:, None]),
                obs=data.T,
            )


def _mean_guide(data):
    with pyro.plate("data", data.shape[0], dim=-1):
        pyro.sample("z", dist.Normal(data.mean(-1), 0.7))


def test_fast_path_gives_the_generic_numbers(monkeypatch, linear, tanh_case):
    """Same seed, same draws: every estimator agrees with the generic ``log_prob`` path to float rounding,
    for the built-in Bernoulli and Gaussian VAEs, the linear VAE, user programs with other names, event
    dims 0 (a pixel plate), scalar-broadcast priors, and sites left to the generic path (MVN, probs)."""
    torch.manual_seed(0)
    bern = pv.VAE(20, 3, hidden_dims=(16,)).eval()
    gauss = pv.VAE(20, 3, hidden_dims=(16,), likelihood="gaussian").eval()
    xb, xg = _binary(30, 20), torch.randn(30, 20)
    lin, x_lin, _ = linear
    tm, x_tanh, _ = tanh_case

    def probs_model(data):
        with pyro.plate("data", data.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 2.0).expand([data.shape[0], 2]).to_event(1))
            pyro.sample(
                "x",
                dist.Bernoulli(probs=torch.sigmoid(z @ torch.ones(2, data.shape[1]))).to_event(1),
                obs=data,
            )

    def mvn_guide(data):
        with pyro.plate("data", data.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(0.1 * data[:, :2], 0.5 * torch.eye(2)))

    cases = [
        (bern.model, bern.guide, xb),
        (gauss.model, gauss.guide, xg),
        (lin.model, lin.guide, x_lin[:50]),
        (lin.model, lin.exact_guide, x_lin[:50]),
        (pv.Program(tm.model, tm.guide_with(1.2), "points"), None, x_tanh[:50]),
        (_plated_bernoulli, _mean_guide, _binary(30, 6)),
        (probs_model, mvn_guide, _binary(30, 6)),
    ]
    for model, guide, x in cases:
        fast, generic = _both_paths(monkeypatch, ev.log_weights, model, guide, x, 40, seed=2)
        torch.testing.assert_close(fast, generic, rtol=1e-5, atol=1e-5)
    # the fast formulas really are the ones used for the VAEs' sites (x, z in the model; z in the guide)
    taken = []
    original = kernels.fast_log_prob
    monkeypatch.setattr(
        kernels, "fast_log_prob", lambda *args: taken.append(original(*args)) or taken[-1]
    )
    for vae, x in ((bern, xb), (gauss, xg)):
        taken.clear()
        ev.iw_log_likelihood(vae.model, vae.guide, x, 10, seed=0)
        assert taken and all(t is not None for t in taken)
    monkeypatch.setattr(kernels, "fast_log_prob", original)
    iw = _both_paths(monkeypatch, ev.iw_log_likelihood, bern.model, bern.guide, xb, 300, seed=1)
    torch.testing.assert_close(*iw, rtol=1e-6, atol=1e-5)
    for analytic in (False, True):
        el = _both_paths(
            monkeypatch, ev.elbo, bern.model, bern.guide, xb, 3, seed=1, analytic_kl=analytic
        )
        torch.testing.assert_close(*el, rtol=1e-6, atol=1e-5)
    quad = _both_paths(
        monkeypatch, pv.quadrature_log_likelihood, _plated_bernoulli, _binary(5, 6), grid=101
    )
    torch.testing.assert_close(*quad, rtol=1e-6, atol=1e-5)


def test_blocked_evaluation_matches_one_shot(monkeypatch):
    """Tiny blocks force the blocked sums along the particle dim (K=1000) and along the data dim (K=1)."""
    torch.manual_seed(0)
    vae = pv.VAE(20, 3, hidden_dims=(16,)).eval()
    gauss = pv.VAE(20, 3, hidden_dims=(16,), likelihood="gaussian").eval()
    xb, xg = _binary(25, 20), torch.randn(25, 20)
    one_shot = [
        ev.log_weights(vae.model, vae.guide, xb, 1000, seed=0, batch_size=5),
        ev.log_weights(gauss.model, gauss.guide, xg, 1000, seed=0, batch_size=5),
        ev.elbo(vae.model, vae.guide, xb, 1, seed=0),
    ]
    monkeypatch.setattr(kernels, "_BLOCK_ELEMENTS", 97)
    blocked = [
        ev.log_weights(vae.model, vae.guide, xb, 1000, seed=0, batch_size=5),
        ev.log_weights(gauss.model, gauss.guide, xg, 1000, seed=0, batch_size=5),
        ev.elbo(vae.model, vae.guide, xb, 1, seed=0),
    ]
    for a, b in zip(one_shot, blocked, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-5)


def test_fast_log_prob_site_by_site():
    """Shapes and values of ``_fast_log_prob`` against ``fn.log_prob``, and the cases it leaves alone."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 4, 5, generator=g) * 5
    x = (torch.rand(4, 5, generator=g) < 0.5).float()
    loc, scale = torch.randn(4, 5, generator=g), torch.rand(4, 5, generator=g) + 0.2
    z = torch.randn(7, 4, 5, generator=g)
    handled = [
        (dist.Bernoulli(logits=logits).to_event(1), x),
        (dist.Bernoulli(logits=logits).to_event(2), x),
        (dist.Bernoulli(logits=logits), x),
        (dist.Bernoulli(logits=logits[:, :1]).expand([7, 4, 5]).to_event(1), x),  # broadcast logits
        (dist.Normal(loc, scale).expand([7, 4, 5]).to_event(1), z),  # stride-0 particle dim
        (dist.Normal(loc, scale).to_event(1), z),
        (dist.Normal(0.0, 1.5).expand([4, 5]).to_event(1), z),  # scalar parameters
        (
            dist.Normal(torch.zeros(4, 5), torch.ones(4, 5)).expand([7, 4, 5]).to_event(1),
            z,
        ),  # N(0, I)
        (dist.Normal(torch.zeros(4, 5), torch.ones(4, 5)), z),
        (dist.Normal(loc, scale), z),
        (dist.Normal(loc, scale).to_event(2), z[0]),
    ]
    for fn, value in handled:
        fast = kernels.fast_log_prob(fn, value)
        assert fast is not None, fn
        generic = fn.log_prob(value)
        assert fast.shape == generic.shape, (fn, fast.shape, generic.shape)
        torch.testing.assert_close(fast, generic, rtol=1e-6, atol=1e-5)

    class MyNormal(dist.Normal):
        def log_prob(self, value):
            return super().log_prob(value) + 1.0

    left = [
        (dist.Bernoulli(probs=torch.sigmoid(logits)).to_event(1), x),  # probs, not logits
        (
            dist.Bernoulli(logits=logits).to_event(1),
            x * 0.5,
        ),  # grey values: BCE's extension, generic path
        (dist.Bernoulli(logits=logits).to_event(1), x.long()),  # not a float value
        (dist.MultivariateNormal(loc, scale_tril=torch.eye(5)), z),
        (MyNormal(loc, scale).to_event(1), z),  # overrides log_prob
        (dist.Normal(loc, scale).mask(False).to_event(1), z),
    ]
    for fn, value in left:
        assert kernels.fast_log_prob(fn, value) is None, fn


def test_fast_path_falls_back_for_grey_rows_and_leaves_program_tensors_alone(monkeypatch):
    """Rows past the 16 that validation sees may hold grey levels: that chunk goes to the generic path
    (the numbers of before); and the in-place arithmetic only touches the estimator's own temporaries."""
    seen: dict[str, torch.Tensor] = {}
    w = torch.linspace(-1, 1, 12).reshape(2, 6)

    def model(data):
        with pyro.plate("data", data.shape[0]):
            z = pyro.sample("z", dist.Normal(data.new_zeros(len(data), 2), 1.0).to_event(1))
            seen["logits"] = logits = z @ w
            seen["logits_copy"] = logits.clone()
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=data)

    def guide(data):
        with pyro.plate("data", data.shape[0]):
            loc = 0.1 * data[:, :2]
            seen["loc"], seen["loc_copy"] = loc, loc.clone()
            pyro.sample("z", dist.Normal(loc, 0.5).to_event(1))

    x = _binary(40, 6)
    x[20:] = x[20:] * 0.6 + 0.2  # grey, past the rows checked by validation
    fast, generic = _both_paths(
        monkeypatch, ev.log_weights, model, guide, x, 30, seed=0, batch_size=10
    )
    torch.testing.assert_close(fast, generic, rtol=1e-6, atol=1e-5)
    ev.log_weights(model, guide, x[:10], 30, seed=0)
    assert torch.equal(seen["logits"], seen["logits_copy"]) and torch.equal(
        seen["loc"], seen["loc_copy"]
    )


def test_default_chunks_are_even_and_near_rows_per_call():
    assert ev.chunk_sizes(200, 1000, None, None) == (ev.ROWS_PER_CALL // 1000, 1000)
    n_b, k_c = ev.chunk_sizes(10, 5000, None, None)
    assert n_b == 1 and k_c <= ev.ROWS_PER_CALL and -(-5000 // k_c) == -(-5000 // ev.ROWS_PER_CALL)
    assert ev.chunk_sizes(10, 5000, None, 700) == (min(10, ev.ROWS_PER_CALL // 700), 700)  # kept
    assert ev.chunk_sizes(10, 5000, 3, None) == (3, ev.ROWS_PER_CALL // 3)


# ----------------------------------------------------------------------------- bad input
def test_mismatched_latent_sites_are_named(linear):
    vae, x, _ = linear

    def guide(data):
        with pyro.plate("data", data.shape[0]):
            pyro.sample("w", dist.Normal(data.new_zeros(len(data), d), 1.0).to_event(1))

    with pytest.raises(ValueError, match=r"latent sites do not match.*'z'.*'w'"):
        ev.iw_log_likelihood(vae.model, guide, x[:10], 10)


def test_global_latent_is_refused(linear):
    x = linear[1][:10]

    def model(data):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", data.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0).expand([len(data), D]).to_event(1), obs=data)

    def guide(data):
        pyro.sample("mu", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="outside the data plate"):
        ev.log_weights(model, guide, x, 5)


def test_analytic_kl_needs_rsample_and_a_closed_form(linear):
    vae, x, _ = linear

    def model(data):
        with pyro.plate("data", data.shape[0]):
            z = pyro.sample("z", dist.Normal(data.new_zeros(len(data)), 1.0))
            pyro.sample(
                "x", dist.Normal(z[..., None].expand(z.shape + (D,)), 1.0).to_event(1), obs=data
            )

    def no_rsample(data):
        with pyro.plate("data", data.shape[0]):
            pyro.sample("z", dist.Normal(data.mean(-1), 0.5).has_rsample_(False))

    def student(data):
        loc, scale = vae.encode(data)
        with pyro.plate("data", data.shape[0]):
            pyro.sample("z", dist.StudentT(5.0, loc, scale).to_event(1))

    with pytest.raises(ValueError, match="reparameterised.*analytic_kl=False"):
        ev.elbo(model, no_rsample, x[:10], analytic_kl=True)
    assert ev.elbo(model, no_rsample, x[:10], 2).shape == (10,)  # the sampled KL works
    with pytest.raises(ValueError, match="no closed-form KL"):
        ev.elbo(vae.model, student, x[:10], analytic_kl=True)
    assert ev.elbo(vae.model, student, x[:10], 2).shape == (10,)


def test_khat_needs_two_samples(linear):
    vae, x, _ = linear
    with pytest.raises(ValueError, match="at least 2"):
        pv.psis_diagnostics(torch.zeros(4, 1))
    with pytest.raises(ValueError, match="num_samples >= 2"):
        pv.evaluate(vae, x[:10], num_samples=1)
    with pytest.warns(UserWarning, match="unreliable"):
        pv.psis_diagnostics(torch.randn(4, 10))


def test_wrong_data_dimension(linear):
    vae = linear[0]
    with pytest.raises(ValueError, match=r"shape \(N, 5\)"):
        ev.iw_log_likelihood(vae.model, vae.guide, torch.zeros(4, 7), 5)

    def model(data):  # a user model that only breaks inside its own tensor code
        with pyro.plate("data", data.shape[0]):
            z = pyro.sample("z", dist.Normal(data.new_zeros(len(data), 2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ torch.ones(2, 5), 1.0).to_event(1), obs=data)

    def guide(data):
        with pyro.plate("data", data.shape[0]):
            pyro.sample("z", dist.Normal(data[:, :2], 1.0).to_event(1))

    with pytest.raises(ValueError, match=r"batch shapes \(4, 7\)\) failed"):
        ev.log_weights(model, guide, torch.zeros(4, 7), 5)

    def fragile_model(data):  # runs once, but z[:, None] breaks under a particle dimension
        with pyro.plate("data", data.shape[0]):
            z = pyro.sample("z", dist.Normal(data.new_zeros(len(data)), 1.0))
            pyro.sample(
                "x", dist.Normal(z[:, None], 1.0).expand([len(data), 5]).to_event(1), obs=data
            )

    def scalar_guide(data):
        with pyro.plate("data", data.shape[0]):
            pyro.sample("z", dist.Normal(data.mean(-1), 1.0))

    with pytest.raises(ValueError, match="vectorised over particles"):
        ev.log_weights(fragile_model, scalar_guide, torch.zeros(4, 5), 5)
    with pytest.raises(ValueError, match="num_samples"):
        ev.iw_log_likelihood(vae.model, vae.guide, torch.zeros(4, 5), 0)


def test_quadrature_refuses_high_dimensional_latent():
    vae = pv.LinearGaussianVAE(4, 3, noise_scale=1.0)
    with pytest.raises(ValueError, match="1 or 2 numbers per data point"):
        pv.quadrature_log_likelihood(vae.model, torch.zeros(3, 4))


# ----------------------------------------------------------------------------- collapse measures, Report
def test_collapse_measures():
    vae = pv.VAE(6, 3, hidden_dims=(), likelihood="gaussian:scale=1")
    with torch.no_grad():  # unit 0 follows x, units 1-2 are the prior (collapsed)
        lin = vae.encoder.net[0]
        lin.weight.zero_()
        lin.bias.zero_()
        lin.weight[0, 0] = 1.0
        lin.bias[3:] = inv_softplus(torch.tensor(1.0 - vae.encoder.min_scale))
        lin.bias[3] = inv_softplus(torch.tensor(0.1))
    x = torch.randn(500, 6)
    assert pv.active_units(vae, x) == 1
    kl = pv.kl_per_dimension(vae, x)
    assert kl.shape == (3,)
    assert kl[0] > 1.0 and kl[1:].abs().max() < 1e-3


def test_evaluate_report(tmp_path, linear):
    vae, x, exact = linear
    report = pv.evaluate(vae, x[:300], num_samples=200, seed=0, name="linear")
    pts = report.points
    assert list(pts.columns[:5]) == ["elbo", "iw_log_likelihood", "gap", "khat", "ess"]
    assert len(pts) == 300 and (pts["gap"] >= 0).all()
    s = report.summary
    assert s["iw_mean"] > s["elbo_mean"] and s["gap_se"] > 0
    assert abs(s["iw_mean"] - float(exact[:300].mean())) < 0.05
    assert s["active_units"] == 2 and len(s["kl_per_dim"]) == 2
    assert "reconstruction_mse" in s and s["units"] == "nats per data point"
    assert report.log_weights.shape == (300, 200)
    assert "gap IW - ELBO" in report.summary_frame().index
    paths = report.save(tmp_path)
    assert json.loads(paths["json"].read_text())["n"] == 300
    assert all(p.stat().st_size > 0 for p in paths.values())
    import arviz as az

    idata = az.from_netcdf(str(paths["netcdf"]))
    assert idata.importance["log_weight"].shape == (300, 200)
    np.testing.assert_allclose(idata.points["khat"].values, pts["khat"].to_numpy())


# ----------------------------------------------------------------------------- CLI on a digits run
@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    from ppl_vae.runs import train_run

    out = tmp_path_factory.mktemp("eval") / "run"
    train_run(out, dataset="digits", epochs=2, progress=False, latent_dim=4, hidden_dims=(64,))
    return out


def test_cli_evaluate_digits_run(digits_run, capsys):
    from ppl_vae.cli import main

    assert main(["evaluate", str(digits_run), "--num-samples", "200", "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "IW log p(x), K=200" in printed and "gap IW - ELBO" in printed
    summary = json.loads((digits_run / "evaluation" / "evaluation.json").read_text())
    assert summary["n"] == 360 and summary["num_samples"] == 200
    assert summary["iw_mean"] >= summary["elbo_mean"] and summary["gap_se"] > 0
    for name in ("evaluation.csv", "evaluation.nc", "khat.png", "gap_hist.png"):
        assert (digits_run / "evaluation" / name).stat().st_size > 0


def test_cli_evaluate_compiled_and_eager_agree(digits_run, tmp_path):
    from ppl_vae.cli import main

    summaries = {}
    for mode in ("eager", "compile"):
        out = tmp_path / mode
        assert (
            main(
                [
                    "evaluate",
                    str(digits_run),
                    "-k",
                    "100",
                    "--max-points",
                    "80",
                    "--batch-size",
                    "20",
                    "--fast",
                    mode,
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        summaries[mode] = json.loads((out / "evaluation" / "evaluation.json").read_text())
    for key in ("elbo_mean", "iw_mean", "gap_mean", "khat_median"):
        assert summaries["compile"][key] == pytest.approx(
            summaries["eager"][key], rel=1e-5, abs=1e-4
        ), key


def test_progress_bar_counts_points(linear, capsys):
    vae, x, _ = linear
    ev.iw_log_likelihood(vae.model, vae.guide, x[:50], 20, batch_size=8, progress=True)
    err = capsys.readouterr().err
    assert "log weights, K=20" in err and "/50 " in err, err
    ev.iw_log_likelihood(vae.model, vae.guide, x[:50], 20, batch_size=8)
    assert "log weights" not in capsys.readouterr().err, "no bar unless asked"
