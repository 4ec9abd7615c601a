"""pv.predictive_check: calibrated under the data-generating model, extreme under a wrong likelihood."""

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from scipy import stats

import ppl_vae as pv


def _simulate(model: pv.LinearGaussianVAE, n: int, seed: int) -> torch.Tensor:
    """Rows drawn from the model's own prior predictive (the data-generating process)."""
    pyro.set_rng_seed(seed)
    with torch.no_grad():
        trace = poutine.trace(poutine.uncondition(model.model)).get_trace(torch.zeros(n, 4))
    return trace.nodes["x"]["value"].detach()


def test_p_values_calibrated_under_true_model() -> None:
    torch.manual_seed(0)
    lg = pv.LinearGaussianVAE(input_dim=4, latent_dim=2, noise_scale=0.5).eval()
    program = pv.Program(lg.model, lg.exact_guide, owner=lg)
    prior_p, post_p = [], []
    for rep in range(8):
        x = _simulate(lg, 40, seed=100 + rep)
        table = pv.predictive_check(
            program, x, num_samples=40, seed=rep, statistics=["mean", "variance"]
        ).table
        prior_p += list(table.loc[table.source == "prior", "p_value"])
        post_p += list(table.loc[table.source == "posterior", "p_value"])
    # prior predictive p-values are uniform under the true model (two-sided: |U - 1/2| * 2 is uniform)
    assert stats.kstest(prior_p, "uniform").pvalue > 0.01
    # posterior predictive p-values are conservative: few small ones
    assert np.mean(np.array(post_p) < 0.05) <= 0.05


def test_wrong_likelihood_is_extreme() -> None:
    """Gaussian noise of scale 0.1 against over-dispersed counts: the variance check fails everywhere."""
    torch.manual_seed(0)
    lg = pv.LinearGaussianVAE(input_dim=4, latent_dim=1, noise_scale=0.1).eval()
    counts = dist.NegativeBinomial(2.0, probs=0.5).sample((60, 4))
    check = pv.predictive_check(lg, counts, num_samples=40, seed=0)
    var = check.table[(check.table.statistic == "variance") & (check.table.source == "prior")]
    assert var["extreme"].all()
    zero = check.table[
        (check.table.statistic == "zero_fraction") & (check.table.source == "posterior")
    ]
    assert zero["extreme"].all()  # a continuous likelihood never replicates exact zeros


def test_missing_cells_left_out_and_arviz() -> None:
    torch.manual_seed(0)
    lg = pv.LinearGaussianVAE(input_dim=3, latent_dim=1)
    x = torch.randn(30, 3)
    x_nan = x.clone()
    x_nan[:5, 0] = float("nan")
    check = pv.predictive_check(lg, x_nan, num_samples=10, seed=0, statistics=["mean"])
    obs = check.table[(check.table.source == "prior")]["observed"].to_numpy()
    np.testing.assert_allclose(obs, [x[5:, 0].mean(), x[:, 1].mean(), x[:, 2].mean()], rtol=1e-5)
    import arviz as az

    idata = check.to_inference_data()
    assert idata.posterior_predictive["x"].shape == (1, 10, 30, 3)
    axes = az.plot_ppc(idata, num_pp_samples=5)
    assert axes is not None


def test_user_program_and_refusals() -> None:
    def model(x):
        loc = pyro.param("ppc_loc", torch.zeros(2))
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
            pyro.sample("obs", dist.Normal(z, 0.5).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(0.8 * x, 0.45).to_event(1))

    x = torch.randn(25, 2)
    check = pv.predictive_check(pv.Program(model, guide), x, num_samples=20)
    assert len(check.table) == 2 * 3 * 2 and check.posterior.shape == (20, 25, 2)
    with pytest.raises(pv.errors.ArgumentTypeError, match="statistics"):
        pv.predictive_check(pv.Program(model, guide), x, statistics=["median"])
    with pytest.raises(pv.errors.ArgumentTypeError, match="num_samples"):
        pv.predictive_check(pv.Program(model, guide), x, num_samples=1)
