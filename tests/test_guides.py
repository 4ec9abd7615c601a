"""Guide families: full rank reaches the exact posterior, mean-field keeps the gap theory predicts, an IAF bends
to a banana; closed-form KLs where they exist, a sampled one (said once) where not; every family through
the estimators and diagnostics."""

from __future__ import annotations

import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import ppl_vae as pv
from ppl_vae import guides
from ppl_vae.guides import (
    IAFPosterior,
    SampledKLWarning,
    canonical_guide,
    gaussian_gap,
    make_guide,
    parse_guide,
)
from ppl_vae.models import VAE, LinearGaussianVAE, build_model

# A decoder whose exact posterior is strongly correlated (rho about -0.9): only the guide is trained.
W = torch.tensor([[1.0, 0.8], [0.9, 1.0], [0.5, 0.6], [1.2, 1.0], [0.3, 0.1]])


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*k-hat.*", category=UserWarning)
        yield
    torch.set_num_threads(threads)


def fixed_linear_gaussian(guide: str) -> LinearGaussianVAE:
    torch.manual_seed(0)
    lg = LinearGaussianVAE(5, 2, noise_scale=0.5, guide=guide)
    with torch.no_grad():
        lg.weight.copy_(W)
        lg.bias.zero_()
    return lg.freeze_decoder()


@pytest.fixture(scope="module")
def lg_data() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(400, 2, generator=g) @ W.T + 0.5 * torch.randn(400, 5, generator=g)


def paired_shortfall(
    lg: LinearGaussianVAE, x: torch.Tensor, k: int = 200
) -> tuple[float, float, pv.Report]:
    """Mean over points of log p(x) - ELBO (exact minus the estimator's ELBO from K draws) and its SE."""
    report = pv.evaluate(lg, x, k, seed=3)
    d = lg.exact_log_likelihood(x).detach().numpy() - report.points["elbo"].to_numpy()
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))), report


# ----------------------------------------------------------------------------- truth tests
def test_fullrank_guide_reaches_the_exact_log_likelihood(lg_data):
    lg = fixed_linear_gaussian("fullrank")
    pv.fit(lg, lg_data, "trace:grad=stl", epochs=60, batch_size=50, lr=3e-2, progress=False)
    pv.fit(lg, lg_data, "trace:grad=stl", epochs=10, batch_size=50, lr=3e-3, progress=False)
    torch.testing.assert_close(lg.weight.detach(), W)  # the decoder stayed fixed
    shortfall, se, report = paired_shortfall(lg, lg_data)
    assert -4 * se < shortfall < 0.02, (
        shortfall,
        se,
    )  # the ELBO is log p(x), within 0.02 nats per point
    _, cov = lg.exact_posterior(lg_data)
    assert gaussian_gap(cov.detach()) > 0.8  # what mean-field would have lost
    assert report.summary["kl_per_dim"] is None and report.summary["active_units"] == 2
    assert (
        report.summary["gap_mean"] < 0.02
    )  # IW - ELBO: nothing left for importance weighting to add


def test_meanfield_guide_keeps_the_gap_theory_predicts(lg_data):
    lg = fixed_linear_gaussian("meanfield")
    pv.fit(lg, lg_data, "analytic", epochs=60, batch_size=50, lr=3e-2, progress=False)
    pv.fit(lg, lg_data, "analytic", epochs=40, batch_size=50, lr=3e-3, progress=False)
    shortfall, se, report = paired_shortfall(lg, lg_data)
    _, cov = lg.exact_posterior(lg_data)
    theory = gaussian_gap(
        cov.detach()
    )  # KL(best diagonal Gaussian || exact posterior), closed form
    # 4 SE of Monte Carlo error plus 0.015 nats of optimisation slack (the optimum is approached from above)
    assert abs(shortfall - theory) < 4 * se + 0.015, (shortfall, theory, se)
    assert report.summary["kl_per_dim"] is not None and len(report.summary["kl_per_dim"]) == 2
    # importance weighting recovers most of what the mean-field ELBO loses
    assert report.summary["gap_mean"] > 0.5 * theory


class Banana(nn.Module):
    """z ~ N(0, I_2), x | z ~ N(z_2 + 1.5 (z_1^2 - 1), 0.3^2): for each x the posterior is a banana."""

    def __init__(self, guide: str) -> None:
        super().__init__()
        self.encoder = make_guide(guide, 1, 2, (32,), "tanh")

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            loc = z[..., 1] + 1.5 * (z[..., 0] ** 2 - 1)
            pyro.sample("x", dist.Normal(loc.unsqueeze(-1), 0.3).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.encoder.dist(x))


def test_iaf_guide_has_a_smaller_gap_than_meanfield_on_a_banana():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(512, 2, generator=g)
    x = (z[:, 1] + 1.5 * (z[:, 0] ** 2 - 1) + 0.3 * torch.randn(512, generator=g)).unsqueeze(-1)
    gaps = {}
    for guide in ("meanfield", "iaf:n=2"):
        torch.manual_seed(0)
        program = Banana(guide)
        pv.fit(program, x, "trace", epochs=120, batch_size=128, lr=3e-3, progress=False)
        report = pv.evaluate(program, x[:256], 200, seed=0)
        gaps[guide] = report.points["gap"].to_numpy()
        if guide != "meanfield":
            assert report.summary["kl_per_dim"] is None and not report.summary["latent_mean_exact"]
    d = gaps["meanfield"] - gaps["iaf:n=2"]  # paired over the same points
    se = d.std(ddof=1) / np.sqrt(len(d))
    print(
        f"\nbanana: IW - ELBO gap meanfield {gaps['meanfield'].mean():.3f}, iaf:n=2 {gaps['iaf:n=2'].mean():.3f} "
        f"nats/point; paired difference {d.mean():.3f} +- {se:.3f}"
    )
    assert d.mean() > 4 * se and d.mean() > 0.1


# ----------------------------------------------------------------------------- KL: closed form or said
def test_fullrank_kl_is_registered_in_closed_form():
    torch.manual_seed(0)
    q = make_guide("fullrank", 4, 3, (8,)).dist(torch.randn(5, 4))
    p = dist.Normal(torch.zeros(5, 3), torch.full((5, 3), 1.5)).to_event(1)
    closed = torch.distributions.kl_divergence(q, p).detach()
    z = q.sample((100_000,))
    mc = q.log_prob(z) - p.log_prob(z)
    se = mc.std(0) / mc.shape[0] ** 0.5
    assert ((mc.mean(0) - closed).abs() < 4 * se).all(), (mc.mean(0), closed, se)
    # a full-rank guide starts diagonal, then learns correlations
    vae = VAE(6, 2, (8,), guide="fullrank")
    tril = vae.encoder.dist(torch.rand(3, 6)).scale_tril.detach()
    assert (tril[:, 1, 0] == 0).all() and (tril.diagonal(dim1=-2, dim2=-1) > 0).all()
    # analytic training of a full-rank guide: no warning about a sampled KL
    with warnings.catch_warnings():
        warnings.simplefilter("error", SampledKLWarning)
        pv.fit(vae, (torch.rand(40, 6) > 0.5).float(), "analytic", epochs=1, progress=False)


def test_analytic_objective_says_once_that_an_iaf_kl_is_sampled(binary_x):
    guides._SAID.clear()
    vae = VAE(12, 2, (8,), guide="iaf:n=2")
    with pytest.warns(SampledKLWarning, match="no closed-form KL.*IAF.*sampled"):
        history = pv.fit(vae, binary_x, "analytic", epochs=2, progress=False)
    assert np.isfinite([r["train_elbo"] for r in history]).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error", SampledKLWarning)
        pv.fit(vae, binary_x, "analytic", epochs=1, progress=False)  # said once


# ----------------------------------------------------------------------------- specs, configs, shapes
@pytest.mark.parametrize(
    "spec, canonical",
    [
        ("meanfield", "meanfield"),
        ("fullrank", "fullrank"),
        ("iaf", "iaf:n=2"),
        ("iaf:n=3,hidden=16", "iaf:n=3,hidden=16"),
    ],
)
def test_guide_specs_are_canonical(spec, canonical):
    assert canonical_guide(spec) == canonical
    assert parse_guide(canonical) == parse_guide(spec)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("bogus", "unknown guide 'bogus'"),
        ("iaf:n=0", "positive integer"),
        ("fullrank:n=2", "has no parameter .n.; valid parameters: none"),
        ("iaf:depth=2", "valid parameters: n, hidden, context"),
        ("iaf:n=2,n=3", "more than once"),
    ],
)
def test_bad_guide_specs_say_what_is_valid(spec, message):
    with pytest.raises(ValueError, match=message):
        VAE(6, 2, (8,), guide=spec)


@pytest.mark.parametrize("guide", ["meanfield", "fullrank", "iaf:n=2"])
def test_guides_rebuild_from_config_and_go_through_every_estimator(guide, binary_x):
    torch.manual_seed(0)
    vae = VAE(12, 3, (16,), guide=guide)
    pv.fit(vae, binary_x, "iwae:k=3,grad=dreg", epochs=2, progress=False)
    again = build_model(vae.config)
    again.load_state_dict(vae.state_dict())
    assert again.config == vae.config and (guide == "meanfield") == ("guide" not in vae.config)
    torch.manual_seed(1)
    a = vae.encoder.dist(binary_x).log_prob(vae.encoder.dist(binary_x).sample())
    assert torch.isfinite(a).all() and a.shape == (40,)
    report = pv.evaluate(again, binary_x, 50, seed=0)
    s = report.summary
    assert np.isfinite([s["iw_mean"], s["elbo_mean"], s["khat_median"]]).all()
    assert (report.points["gap"] >= -1e-5).all()
    assert (s["kl_per_dim"] is not None) == (guide == "meanfield")
    assert s["latent_mean_exact"] == (guide != "iaf:n=2")
    elbo = pv.elbo(again, binary_x, num_samples=4)
    iw = pv.iw_log_likelihood(again, binary_x, num_samples=50)
    assert elbo.shape == iw.shape == (40,) and float(iw.mean()) > float(elbo.mean())
    loc, scale = again.encode(binary_x)
    assert loc.shape == scale.shape == (40, 3) and (scale > 0).all()


def test_iaf_is_autoregressive_and_its_density_is_exact():
    torch.manual_seed(0)
    g = make_guide("iaf:n=2", 4, 3, (8,))
    with torch.no_grad():  # a flow far from the identity
        for made in g.made:
            made.layers[-1].weight.normal_()
    q = g.dist(torch.randn(1, 4))
    assert isinstance(q, IAFPosterior)
    # the density of a drawn point (cached) equals that of a fresh copy (inverted): one flow, two paths
    z = q.rsample((5,))
    torch.testing.assert_close(q.log_prob(z), q.log_prob(z.detach().clone()), atol=1e-4, rtol=1e-4)
    # and it integrates to one: importance sampling from N(0, 3^2 I) in 3 dimensions
    prop = dist.Normal(torch.zeros(3), 3.0).to_event(1)
    zs = prop.sample((200_000,)).unsqueeze(1)
    ratio = (q.log_prob(zs).squeeze(1) - prop.log_prob(zs.squeeze(1))).exp().detach()
    assert abs(float(ratio.mean()) - 1.0) < 4 * float(ratio.std()) / 200_000**0.5 + 1e-3


def test_the_vampprior_reads_the_guide_familys_mixture_component_trait_not_its_name():
    """A family registered under a new name is accepted or refused by what it declares."""
    from ppl_vae.errors import UserError
    from ppl_vae.registry import REGISTRY

    meanfield = REGISTRY.entry("guide", "meanfield").factory
    REGISTRY.register("guide", "twin_mixable", meanfield, doc="test", mixture_component=True)
    REGISTRY.register("guide", "twin_plain", meanfield, doc="test")
    try:
        vae = VAE(6, 2, (8,), prior="vamp:k=3", guide="twin_mixable")
        assert vae.prior_dist(torch.zeros(4, 6)).batch_shape == (4,)
        with pytest.raises(UserError, match="trait mixture_component") as err:
            VAE(6, 2, (8,), prior="vamp:k=3", guide="twin_plain")
        assert "'meanfield' or 'fullrank' or 'twin_mixable'" in str(err.value)
        VAE(6, 2, (8,), guide="twin_plain")  # any other prior takes it
    finally:
        REGISTRY.unregister("guide", "twin_mixable")
        REGISTRY.unregister("guide", "twin_plain")
