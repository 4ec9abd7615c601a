"""Column likelihoods against scipy.stats in the data's original units, the composite's sum, and the Jacobian
of every transform (issue 20's truth tests)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

import ppl_vae as pv
from ppl_vae.data.schema import Column
from ppl_vae.errors import UserError
from ppl_vae.likelihoods import (
    BernoulliLikelihood,
    CategoricalLikelihood,
    GaussianLikelihood,
    LogNormalLikelihood,
    NegBinomialLikelihood,
    PoissonLikelihood,
    TableLikelihood,
    ZINBLikelihood,
)


def real(transform="identity", mean=5e4, std=1e4):
    shift, scale = (mean, std) if transform == "standardize" else (0.0, 1.0)
    return Column("income", "real", transform, shift, scale, mean=mean, std=std)


def positive(transform="identity", log_mean=-2.0, log_std=3.0):
    shift, scale = (log_mean, log_std) if transform == "log-standardize" else (0.0, 1.0)
    return Column(
        "dose",
        "positive",
        transform,
        shift,
        scale,
        mean=1.0,
        std=2.0,
        log_mean=log_mean,
        log_std=log_std,
    )


def count(mean=40.0, std=30.0):
    return Column("visits", "count", mean=mean, std=std, log_mean=3.0, log_std=1.0)


@pytest.mark.parametrize("transform", ["identity", "standardize"])
def test_gaussian_column_is_a_normal_in_the_columns_units(transform):
    col = real(transform)
    lik = GaussianLikelihood(1, columns=[col])
    with torch.no_grad():
        lik.log_scale.fill_(math.log(0.3))
    x = np.array([1.0, 3e4, 5e4, 7.7e4, 2e5])
    out = torch.tensor([[-2.0], [0.1], [0.0], [1.5], [3.0]])
    v = torch.tensor(col.to_model(x)[:, None], dtype=torch.float32)
    got = lik.log_prob_cells(out, v)[:, 0].detach().double().numpy()
    want = stats.norm.logpdf(x, 5e4 + 1e4 * out[:, 0].numpy(), 1e4 * 0.3)
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("transform", ["identity", "log-standardize"])
def test_lognormal_column_matches_scipy_from_1e_minus_3_to_1e5(transform):
    col = positive(transform)
    lik = LogNormalLikelihood(1, columns=[col])
    with torch.no_grad():
        lik.log_scale.fill_(math.log(0.7))
    x = np.array([1e-3, 0.05, 1.0, 30.0, 1e5])
    out = torch.tensor([[-1.0], [0.0], [0.5], [1.0], [4.0]])
    v = torch.tensor(col.to_model(x)[:, None], dtype=torch.float32)
    got = lik.log_prob_cells(out, v)[:, 0].detach().double().numpy()
    mu = -2.0 + 3.0 * out[:, 0].detach().double().numpy()
    want = stats.lognorm.logpdf(x, s=3.0 * 0.7, scale=np.exp(mu))
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-5)


def test_poisson_matches_scipy_over_counts_up_to_1e5():
    lik = PoissonLikelihood(1, columns=[count(mean=1.0)])
    x = np.array([0.0, 1.0, 7.0, 1e3, 1e5, 1e5])
    rate = np.array([0.5, 1.0, 7.0, 900.0, 1e5, 9e4])
    out = torch.tensor(np.log(rate)[:, None], dtype=torch.float32)
    got = (
        lik.log_prob_cells(out, torch.tensor(x[:, None], dtype=torch.float32))[:, 0]
        .detach()
        .double()
        .numpy()
    )
    np.testing.assert_allclose(
        got,
        stats.poisson.logpmf(x, np.exp(out[:, 0].detach().double().numpy())),
        rtol=1e-6,
        atol=1e-4,
    )


THETAS = [0.1, 1.0, 10.0, 1e3, 1e6, 1e8]
COUNTS = [0.0, 1.0, 5.0, 100.0, 1e4, 1e5]


def _nb_grid():
    x, theta = np.meshgrid(COUNTS, THETAS)
    mu = np.maximum(x * np.exp(np.linspace(-0.5, 0.5, x.size)).reshape(x.shape), 0.3)
    return x.ravel(), theta.ravel(), mu.ravel()


def test_negative_binomial_matches_scipy_where_float32_lgamma_fails():
    x, theta, mu = _nb_grid()
    lik = NegBinomialLikelihood(len(x), columns=[count(mean=1.0)] * len(x))
    with torch.no_grad():
        lik.log_theta.copy_(torch.tensor(np.log(theta)))
    out = torch.tensor(np.log(mu)[None, :], dtype=torch.float32)
    xt = torch.tensor(x[None, :], dtype=torch.float32)
    got = lik.log_prob_cells(out, xt)[0].detach().double().numpy()
    mu32 = np.exp(out[0].detach().double().numpy())  # the mean the float32 output encodes
    want = stats.nbinom.logpmf(x, theta, theta / (theta + mu32))
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-4)
    # the naive float32 computation (torch's NegativeBinomial) is off by nats at large theta: the test bites
    naive = torch.distributions.NegativeBinomial(
        torch.tensor(theta, dtype=torch.float32),
        logits=out[0] - torch.tensor(np.log(theta), dtype=torch.float32),
    ).log_prob(xt[0])
    assert np.max(np.abs(naive.detach().double().numpy() - want)) > 1.0


def test_zinb_is_the_zero_inflated_mixture():
    x, theta, mu = _nb_grid()
    n = len(x)
    lik = ZINBLikelihood(n, columns=[count(mean=1.0)] * n)
    with torch.no_grad():
        lik.log_theta.copy_(torch.tensor(np.log(theta)))
    logit_pi = np.linspace(-3, 2, n)
    out = torch.tensor(np.concatenate([np.log(mu), logit_pi + 2.0])[None, :], dtype=torch.float32)
    got = (
        lik.log_prob_cells(out, torch.tensor(x[None, :], dtype=torch.float32))[0]
        .detach()
        .double()
        .numpy()
    )
    pi = 1 / (1 + np.exp(-logit_pi))
    mu32 = np.exp(out[0, :n].detach().double().numpy())
    nb = stats.nbinom.pmf(x, theta, theta / (theta + mu32))
    lognb = stats.nbinom.logpmf(x, theta, theta / (theta + mu32))
    want = np.where(x == 0, np.log(pi + (1 - pi) * nb), np.log1p(-pi) + lognb)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-4)


def test_bernoulli_and_categorical_columns_match_scipy():
    binary = Column("smoker", "binary", "levels", levels=("no", "yes"), mean=0.3, std=0.46)
    lik = BernoulliLikelihood(1, columns=[binary])
    out = torch.tensor([[-1.0], [0.0], [2.0]])
    x = torch.tensor([[0.0], [1.0], [1.0]])
    p = 1 / (1 + np.exp(-(out[:, 0].numpy() + math.log(0.3 / 0.7))))
    np.testing.assert_allclose(
        lik.log_prob_cells(out, x)[:, 0].detach().numpy(),
        stats.bernoulli.logpmf([0, 1, 1], p),
        rtol=1e-5,
    )
    cols = [
        Column("region", "categorical", "levels", levels=("e", "n", "s")),
        Column("blood", "categorical", "levels", levels=("a", "b", "ab", "o")),
    ]
    cat = CategoricalLikelihood(2, columns=cols)
    out = torch.tensor([[0.1, -0.4, 2.0, 1.0, 0.0, -1.0, 0.3]])
    codes = torch.tensor([[2.0, 3.0]])
    got = cat.log_prob_cells(out, codes)[0].numpy()
    p1 = np.exp(out[0, :3].numpy()) / np.exp(out[0, :3].numpy()).sum()
    p2 = np.exp(out[0, 3:].numpy()) / np.exp(out[0, 3:].numpy()).sum()
    want = [
        stats.multinomial.logpmf([0, 0, 1], 1, p1),
        stats.multinomial.logpmf([0, 0, 0, 1], 1, p2),
    ]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert cat.out_dim() == 7 and cat.features(codes).tolist() == [[0, 0, 1, 0, 0, 0, 1]]


# ---------------------------------------------------------------------------- the composite


def mixed_frame(n=400, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    return pd.DataFrame(
        {
            "pid": [f"P{i:04d}" for i in range(n)],
            "smoker": np.where(z + rng.normal(size=n) > 0.5, "yes", "no"),
            "region": rng.choice(["north", "south", "east"], n),
            "visits": rng.poisson(np.exp(1.5 + 0.5 * z)),
            "dose": np.exp(rng.normal(-3 + z, 1.0)),  # 1e-3 .. 1
            "income": rng.normal(5e4 + 1e4 * z, 5e3),  # 1e5 scale
        }
    )


def test_row_log_p_is_the_sum_of_columns_and_the_same_nats_whether_standardised_or_not():
    frame = mixed_frame()
    raw = pv.load_dataset(frame, seed=0)
    std = pv.load_dataset(frame, seed=0, standardize=True)
    assert raw.schema.same_columns(std.schema) and not torch.equal(raw.train, std.train)
    lik_raw, lik_std = TableLikelihood(raw.schema), TableLikelihood(std.schema)
    lik_std.load_state_dict(lik_raw.state_dict())
    lik_raw, lik_std = lik_raw.double(), lik_std.double()
    out = torch.randn(
        len(raw.train), lik_raw.out_dim(), generator=torch.Generator().manual_seed(1)
    ).double()
    cells = lik_std.log_prob_cells(out, std.train.double())
    row = lik_std.dist(out).log_prob(std.train.double())
    torch.testing.assert_close(row, cells.sum(-1), rtol=0, atol=1e-9)
    # one row in original units, standardised or not (the schema's Jacobian goes with the transform);
    # 1e-5: the two data tensors are float32 roundings of different numbers (income ~5e4: ulp 4e-3)
    torch.testing.assert_close(
        lik_raw.dist(out).log_prob(raw.train.double()), row, rtol=0, atol=1e-5
    )
    # ... and that is the standardised density minus sum_j log sigma_j and the log-normal's log x
    lik_std.blocks[-1].log_scale.data.fill_(math.log(0.8))  # income (gaussian) block
    for name in ("income", "dose"):
        fam, k, osl = lik_std.block(name)
        j = std.schema.position(name)
        c = std.schema[name]
        v = std.train.double()[:, j]
        o = out[:, osl][:, k]
        sigma = fam.scale()[k].double()
        standardised = torch.distributions.Normal(o, sigma).log_prob(v)
        jac = -math.log(c.scale)
        if name == "dose":
            jac = jac - (v * c.scale + c.shift)  # log x
        torch.testing.assert_close(
            fam.log_prob_cells(out[:, osl], std.train.double()[:, [j]])[:, 0]
            if fam.input_dim == 1
            else lik_std.log_prob_cells(out, std.train.double())[:, j],
            standardised + jac,
            rtol=0,
            atol=1e-6,
        )


def test_masked_cells_score_zero_and_the_rest_is_unchanged():
    data = pv.load_dataset(mixed_frame(), seed=0)
    lik = TableLikelihood(data.schema)
    out = torch.randn(len(data.train), lik.out_dim(), generator=torch.Generator().manual_seed(2))
    mask = torch.rand(data.train.shape, generator=torch.Generator().manual_seed(3)) > 0.3
    cells = lik.log_prob_cells(out, data.train)
    got = lik.dist(out, mask).log_prob(data.train)
    torch.testing.assert_close(got, (cells * mask).sum(-1))


def test_family_mapping_refuses_a_column_it_cannot_model_in_one_line():
    data = pv.load_dataset(mixed_frame(), seed=0)
    with pytest.raises(
        UserError,
        match=r"column 'region' is categorical, which likelihood 'poisson' does not model",
    ):
        TableLikelihood(data.schema, {"region": "poisson"})
    with pytest.raises(
        UserError, match=r"column 'region' is categorical.*'gaussian'.*choose one of categorical"
    ):
        TableLikelihood(data.schema, "gaussian")
    with pytest.raises(UserError, match=r"names column\(s\) 'nope'"):
        TableLikelihood(data.schema, {"nope": "gaussian"})
    lik = TableLikelihood(data.schema, {"visits": "zinb", "dose": "gaussian"})
    assert lik.specs["visits"] == "zinb" and lik.specs["dose"] == "gaussian"
    assert TableLikelihood.from_config(lik.config).specs == lik.specs
