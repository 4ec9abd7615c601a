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
            program, x, num_samples=40, seed=rep, statistics=["mean", "variance", "correlation"]
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
    # mean, variance, zero fraction per column, one correlation (no column has levels), two sources
    assert len(check.table) == 2 * (3 * 2 + 1) and check.posterior.shape == (20, 25, 2)
    with pytest.raises(pv.errors.ArgumentTypeError, match="statistics"):
        pv.predictive_check(pv.Program(model, guide), x, statistics=["median"])
    with pytest.raises(pv.errors.ArgumentTypeError, match="num_samples"):
        pv.predictive_check(pv.Program(model, guide), x, num_samples=1)


def _independent_program(probs: torch.Tensor):
    """Column 0 ~ N(z, 0.5), column 1 ~ N(0, 1) independent of z, column 2 ~ Categorical(probs)."""

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            a = dist.Normal(z, 0.5).sample()
            b = dist.Normal(torch.zeros_like(z), 1.0).sample()
            c = dist.Categorical(probs).sample(z.shape).to(x.dtype)
            loc = torch.stack([a, b, c], -1)
            pyro.sample("obs", dist.Normal(loc, 1e-3).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    return pv.Program(model, guide)


def test_frequency_and_correlation_terms_against_a_hand_computation() -> None:
    gen = torch.Generator().manual_seed(0)
    n = 200
    a = torch.randn(n, generator=gen)
    b = 0.9 * a + 0.3 * torch.randn(n, generator=gen)  # strongly correlated with a
    c = torch.multinomial(torch.tensor([0.8, 0.1, 0.1]), n, replacement=True, generator=gen)
    x = torch.stack([a, b, c.float()], -1)
    program = _independent_program(torch.tensor([1 / 3, 1 / 3, 1 / 3]))
    table = pv.predictive_check(program, x, num_samples=40, seed=0, levels={2: 3}).table
    post = table[table.source == "posterior"]
    freq = post[post.statistic == "frequency"]
    assert freq["term"].tolist() == ["2=0", "2=1", "2=2"]
    np.testing.assert_allclose(freq["observed"], [(c == k).float().mean() for k in range(3)])
    assert freq["extreme"].all()  # 0.8, 0.1, 0.1 observed against 1/3 replicated
    right = _independent_program(torch.tensor([0.8, 0.1, 0.1]))
    again = pv.predictive_check(right, x, num_samples=40, seed=0, levels={2: 3}).table
    assert not again.loc[again.statistic == "frequency", "extreme"].any()
    corr = post[post.statistic == "correlation"].set_index("term")
    assert list(corr.index) == ["0~1", "0~2", "1~2"]
    expected = np.corrcoef(x[:, 0].numpy(), x[:, 1].numpy())[0, 1]
    np.testing.assert_allclose(corr.loc["0~1", "observed"], expected, rtol=1e-10)
    assert corr.loc["0~1", "extreme"]  # replicated columns 0 and 1 are independent
    assert not corr.loc["0~2", "extreme"]  # and so are the data's columns 0 and 2
    assert abs(corr.loc["0~1", "replicated_mean"]) < 0.1


def test_levels_from_a_table_schema_and_constant_columns() -> None:
    import pandas as pd

    gen = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "size": gen.normal(size=80),
            "colour": gen.choice(["red", "green", "blue"], size=80),
            "flag": gen.choice([True, False], size=80),
        }
    )
    data = pv.load_dataset(frame, seed=0)
    vae = pv.VAE(input_dim=len(data.schema), latent_dim=2, likelihood="auto", schema=data.schema)
    table = pv.predictive_check(vae, data.train, num_samples=10, seed=0).table
    freq = table[(table.statistic == "frequency") & (table.source == "prior")]
    levels = {c.name: c.levels for c in data.schema}
    names = [f"colour={v}" for v in levels["colour"]] + [f"flag={v}" for v in levels["flag"]]
    assert set(levels["colour"]) == {"red", "green", "blue"}
    assert freq["term"].tolist() == names
    assert set(table.loc[table.statistic == "mean", "term"]) == {"size", "colour", "flag"}
    # a column constant in the data: its correlations are undefined, not extreme
    x = torch.randn(30, 3)
    x[:, 2] = 1.0
    lg = pv.LinearGaussianVAE(input_dim=3, latent_dim=1)
    corr = pv.predictive_check(lg, x, num_samples=10, statistics=["correlation"]).table
    undefined = corr[corr.term.isin(["0~2", "1~2"])]
    assert undefined["p_value"].isna().all() and not undefined["extreme"].any()
    # missing cells: a pair's correlation uses the rows where both cells are observed
    x[:6, 0] = float("nan")
    corr = pv.predictive_check(lg, x, num_samples=10, statistics=["correlation"]).table
    expected = np.corrcoef(x[6:, 0].numpy(), x[6:, 1].numpy())[0, 1]
    np.testing.assert_allclose(corr.loc[corr.term == "0~1", "observed"], expected, rtol=1e-6)
    with pytest.raises(pv.errors.ArgumentTypeError, match="levels"):
        pv.predictive_check(lg, x, num_samples=10, levels={5: 3})


def test_correlations_of_many_columns_use_the_most_variable_ones() -> None:
    """Beyond MAX_PAIR_COLUMNS columns the pairs are those of the most variable columns (blank pixels,
    whose correlations are undefined, are left out)."""
    from ppl_vae.analysis.ppc import MAX_PAIR_COLUMNS

    gen = torch.Generator().manual_seed(0)
    d = MAX_PAIR_COLUMNS + 10
    x = torch.randn(40, d, generator=gen)
    x[:, :10] *= 0.01  # ten nearly constant columns
    lg = pv.LinearGaussianVAE(input_dim=d, latent_dim=1)
    table = pv.predictive_check(lg, x, num_samples=4, statistics=["correlation"]).table
    post = table[table.source == "posterior"]
    assert len(post) == MAX_PAIR_COLUMNS * (MAX_PAIR_COLUMNS - 1) // 2
    assert set(post["column"]) | set(post["other"]) == set(range(10, d))
    row = post[(post.column == 10) & (post.other == 11)]
    expected = np.corrcoef(x[:, 10].numpy(), x[:, 11].numpy())[0, 1]
    np.testing.assert_allclose(row["observed"], expected, rtol=1e-6)
