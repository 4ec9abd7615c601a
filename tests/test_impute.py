"""Truth tests for log p(x_obs), SNIS imputation and SIR draws on models with exact answers.

A linear-Gaussian model with MCAR holes gives the exact marginal over observed cells and the exact
``p(x_mis | x_obs)``; a 1-D-latent model of two categorical columns gives ``p(c_mis | c_obs)`` by
quadrature. Tolerances come from the estimators' own standard errors, which are themselves checked.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import ppl_vae as pv
from ppl_vae.errors import DataError, ProgramError
from ppl_vae.estimators.impute import impute_cells
from tests.programs.exact import MaskedLinear, make_linear_vae, mcar


@pytest.fixture(scope="module")
def linear():
    vae = make_linear_vae()
    torch.manual_seed(0)
    x = vae.marginal().sample((200,)).detach()
    mask = mcar(200, 5, 0.3, seed=0)
    filled = torch.where(mask, x, torch.zeros(()))
    with torch.no_grad():
        exact_lp = vae.exact_observed_log_likelihood(filled, mask)
        mean, cov = vae.exact_conditional(filled, mask)
    return vae, filled, mask, exact_lp, mean, cov


@pytest.fixture(scope="module")
def imputed(linear):
    vae, x, mask, *_ = linear
    return impute_cells(MaskedLinear(vae, 0.3, 1.2), x, mask, num_samples=2000, multiple=40, seed=0)


def test_iw_log_px_obs_is_within_002_nats_of_the_exact_marginal_per_row(linear):
    vae, x, mask, exact, *_ = linear
    k = 8000
    lw = pv.log_weights(MaskedLinear(vae, 0.1, 1.1), (x[:100], mask[:100]), k, seed=1)
    iw = lw.logsumexp(1) - math.log(k)
    w = torch.softmax(lw.double(), 1)
    se = (w.square().sum(1) - 1 / k).clamp_min(0).sqrt()  # delta method: sqrt(1/ESS - 1/K)
    err = (iw - exact[:100]).double()
    assert float(se.max()) < 0.005  # so 0.02 nats is a 4-s.e. bound on every row
    assert float(err.abs().max()) < 0.02
    assert 0.75 < float((err / se).std()) < 1.3  # the s.e. is honest
    # a model that scored the filled zeros would be off by nats, not hundredths
    full = vae.exact_log_likelihood(x[:100]).detach()
    assert float((full - exact[:100]).abs().mean()) > 0.5


def test_snis_mean_equals_the_exact_conditional_mean_within_monte_carlo_error(linear, imputed):
    _, x, mask, _, mean, _ = linear
    missing = ~mask
    z = ((imputed.mean - mean) / imputed.se)[missing].double()
    assert float(z.abs().max()) < 4.5
    assert 0.85 < float(z.std()) < 1.15  # the reported s.e. matches the actual error
    assert torch.equal(imputed.mean[mask], x[mask])  # observed cells untouched
    assert bool((imputed.se[mask] == 0).all()) and bool(imputed.ess[mask].isnan().all())
    assert float(imputed.ess[missing].min()) > 300
    assert bool((imputed.ess[missing] <= imputed.row_ess[:, None].expand_as(mask)[missing]).all())


def test_predictive_sd_equals_the_exact_conditional_sd(linear, imputed):
    _, _, mask, _, _, cov = linear
    missing = ~mask
    exact_sd = cov.diagonal(dim1=1, dim2=2).sqrt()[missing]
    ratio = imputed.sd[missing] / exact_sd
    assert float((ratio - 1).abs().max()) < 0.05
    assert float(ratio.mean() - 1) == pytest.approx(0.0, abs=0.01)


def test_log_px_from_the_imputation_weights_matches_the_exact_marginal(linear, imputed):
    _, _, _, exact, *_ = linear
    z = ((imputed.log_px - exact) / imputed.log_px_se).double()
    assert float(z.abs().max()) < 4.5
    assert 0.75 < float(z.std()) < 1.3


def test_sir_draws_have_the_exact_conditional_covariance(linear, imputed):
    """Rows sharing a mask pattern share the conditional covariance (Gaussian): pool their residuals."""
    _, _, mask, _, mean, cov = linear
    patterns, which, counts = torch.unique(mask, dim=0, return_inverse=True, return_counts=True)
    checked = 0
    for i, pattern in enumerate(patterns):
        m = (~pattern).nonzero().flatten()
        rows = (which == i).nonzero().flatten()
        if len(m) < 2 or len(rows) < 4:
            continue
        res = (imputed.draws[:, rows][..., m] - mean[rows][:, m]).reshape(-1, len(m)).double()
        sample_cov = res.T @ res / len(res)
        exact = cov[rows[0]][m][:, m].double()
        # Wishart s.e. of each element, with the draws' effective number cut by resampling duplicates
        n_eff = len(res) / (1 + imputed.draws.shape[0] / float(imputed.row_ess[rows].min()))
        se = ((exact.square() + exact.diag()[:, None] * exact.diag()[None, :]) / n_eff).sqrt()
        assert bool(((sample_cov - exact).abs() < 4.5 * se).all()), (sample_cov, exact)
        checked += 1
    assert checked >= 3


def test_sir_draws_keep_observed_cells_and_follow_the_seed(linear, imputed):
    vae, x, mask, *_ = linear
    assert imputed.draws.shape == (40, *x.shape)
    assert bool((imputed.draws[:, mask] == x[mask]).all())
    again = impute_cells(
        MaskedLinear(vae, 0.3, 1.2), x[:20], mask[:20], num_samples=2000, multiple=40, seed=0
    )
    torch.testing.assert_close(again.mean, imputed.mean[:20])
    other = impute_cells(
        MaskedLinear(vae, 0.3, 1.2), x[:20], mask[:20], num_samples=2000, multiple=3, seed=5
    )
    assert not torch.equal(other.mean, again.mean)


# ------------------------------------------------------------------------------ categorical
class TwoCategoricals:
    """z ~ N(0, 1); two categorical columns with 3 levels each, one-hot rows ``x: (N, 2, 3)``,
    ``p(c_j = l | z) = softmax(a_jl z + b_jl)``. The guide: the quadrature posterior of z given the
    observed column(s), its s.d. widened by 1.3."""

    a = torch.tensor([[2.0, 0.0, -2.0], [-1.5, 1.0, 1.5]])
    b = torch.tensor([[0.0, 0.5, 0.0], [0.3, -0.2, 0.0]])
    grid = torch.linspace(-9, 9, 6001)

    def logits(self, z):
        return self.a * z[..., None, None] + self.b

    def model(self, x, mask):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0]), 1.0))
            cells = dist.OneHotCategorical(logits=self.logits(z)).mask(mask[..., 0])
            pyro.sample("x", cells.to_event(1), obs=x)

    def posterior_grid(self, x, mask):
        lp = dist.Normal(0.0, 1.0).log_prob(self.grid)[:, None]  # (G, 1)
        logp = torch.log_softmax(self.logits(self.grid), -1)  # (G, 2, 3)
        lik = torch.einsum("gjl,njl->gnj", logp, x)  # (G, N, 2)
        lp = lp + (lik * mask[..., 0]).sum(-1)
        return torch.softmax(lp, 0), logp.exp()  # (G, N), (G, 2, 3)

    def guide(self, x, mask):
        w, _ = self.posterior_grid(x, mask)
        m = (w * self.grid[:, None]).sum(0)
        s = ((w * (self.grid[:, None] - m) ** 2).sum(0)).sqrt()
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(m, 1.3 * s))

    def exact_probabilities(self, x, mask):
        w, probs = self.posterior_grid(x, mask)
        return torch.einsum("gn,gjl->njl", w, probs)


def test_categorical_imputation_matches_quadrature():
    prog = TwoCategoricals()
    g = torch.Generator().manual_seed(3)
    z = torch.randn(300, generator=g)
    levels = torch.distributions.Categorical(logits=prog.logits(z)).sample()
    x = torch.nn.functional.one_hot(levels, 3).float()
    hole = torch.rand(300, generator=g) < 0.5  # one of the two columns missing in every row
    observed = torch.stack([~hole, hole], 1)
    mask = observed[..., None].expand(-1, -1, 3).clone()
    first = torch.nn.functional.one_hot(torch.zeros(300, 2, dtype=torch.long), 3).float()
    filled = torch.where(
        mask, x, first
    )  # a missing block holds a valid level (Pyro checks the support)
    out = impute_cells(prog, filled, mask, num_samples=1000, seed=0)
    exact = prog.exact_probabilities(filled, mask)
    missing = ~mask
    zscore = ((out.mean - exact) / out.se)[missing].double()
    assert float(zscore.abs().max()) < 4.5
    assert 0.8 < float(zscore.std()) < 1.2
    # the most probable level agrees with quadrature wherever the top two differ by > 5 s.e.
    col = (~observed).float().argmax(1)
    rows = torch.arange(300)
    est, ex, se = out.mean[rows, col], exact[rows, col], out.se[rows, col]
    top2 = ex.topk(2, -1).values
    clear = (top2[:, 0] - top2[:, 1]) > 5 * se.max(-1).values
    assert int(clear.sum()) > 100
    assert torch.equal(est.argmax(-1)[clear], ex.argmax(-1)[clear])
    # the imputed block's probabilities sum to one; an observed block is the data
    torch.testing.assert_close(out.mean[rows, col].sum(-1), torch.ones(300))
    assert torch.equal(out.mean[mask], filled[mask])


# ------------------------------------------------------------------------------ refusals
class Unmasked(MaskedLinear):
    """Takes the mask but scores every cell: the filled zeros count as data."""

    def model(self, x, mask):
        vae = self.vae
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            loc = z @ vae.weight.T + vae.bias
            pyro.sample("x", dist.Normal(loc, 0.5).to_event(1), obs=x)


class Dependent(MaskedLinear):
    """Observes the row with a full-covariance Gaussian: cells dependent given z."""

    def model(self, x, mask):
        vae = self.vae
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            loc = z @ vae.weight.T + vae.bias
            cov = 0.25 * torch.eye(5) + 0.1
            pyro.sample("x", dist.MultivariateNormal(loc, cov).mask(mask.all(-1)), obs=x)


def test_a_model_that_scores_missing_cells_is_refused(linear):
    vae, x, mask, *_ = linear
    with pytest.raises(ProgramError, match=r"scores the missing cells.*\.mask\(mask\)"):
        impute_cells(Unmasked(vae), x, mask, num_samples=10)


def test_dependent_cells_are_refused(linear):
    vae, x, mask, *_ = linear
    with pytest.raises(ProgramError, match="MultivariateNormal.*product over cells"):
        impute_cells(Dependent(vae), x, mask, num_samples=10)


def test_rows_with_nothing_observed_and_bad_masks_are_refused(linear):
    vae, x, mask, *_ = linear
    empty = mask.clone()
    empty[7] = False
    with pytest.raises(DataError, match="no observed cell, first row 7"):
        impute_cells(MaskedLinear(vae), x, empty, num_samples=10)
    with pytest.raises(DataError, match="bool tensor"):
        impute_cells(MaskedLinear(vae), x, mask.float(), num_samples=10)
    with pytest.raises(ProgramError, match="site='nope' is not an observed site"):
        impute_cells(MaskedLinear(vae), x, mask, num_samples=10, site="nope")


def test_ais_log_px_obs_matches_the_exact_marginal(linear):
    """AIS on the masked program (its HMC targets p(z | x_obs)): within its own s.e. of the exact marginal."""
    vae, x, mask, exact, *_ = linear
    prog = MaskedLinear(vae, 0.5, 1.5)  # a poorer start than IW's: the annealing has work to do
    out = pv.ais_log_likelihood(
        prog, (x[:30], mask[:30]), num_steps=50, num_chains=8, seed=0, return_diagnostics=True
    )
    err = (out.log_likelihood - exact[:30]).double()
    z = err / out.se.double()
    assert float(z.abs().max()) < 4.5 and 0.6 < float(z.std()) < 1.5  # within its own honest s.e.
    assert (
        abs(float(err.mean())) < 4 * float(out.se.double().square().mean().sqrt()) / 30**0.5 + 0.01
    )


class NormalWithoutVariance(dist.Normal):
    @property
    def variance(self):
        raise NotImplementedError


class NoVariance(MaskedLinear):
    """The same model with a distribution that gives no variance: it is estimated from draws."""

    def model(self, x, mask):
        vae = self.vae
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            loc = z @ vae.weight.T + vae.bias
            scale = vae.noise_variance().sqrt().expand_as(loc)
            pyro.sample("x", NormalWithoutVariance(loc, scale).mask(mask).to_event(1), obs=x)


def test_predictive_sd_from_draws_when_the_site_has_no_variance(linear):
    vae, x, mask, _, _, cov = linear
    out = impute_cells(NoVariance(vae, 0.3, 1.2), x, mask, num_samples=2000, seed=3)
    missing = ~mask
    ratio = out.sd[missing] / cov.diagonal(dim1=1, dim2=2).sqrt()[missing]
    assert float((ratio - 1).abs().max()) < 0.1 and abs(float(ratio.mean()) - 1) < 0.02
