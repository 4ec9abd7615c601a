"""``iwae:k=K`` on rows with holes is the MIWAE bound (Mattei & Frellsen, 2019):

    L_K = E[log 1/K sum_k p(x_obs | z_k) p(z_k) / q(z_k | x_obs)] <= log p(x_obs),

with the built-in VAE's masked likelihood (only observed cells scored) and no new code path: the
objective is the importance-weighted bound of the program ``model(x, mask)``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import pytest
import torch

import ppl_vae as pv
from ppl_vae.objectives import parse_objective
from tests.programs.exact import make_linear_vae, mcar


@pytest.fixture(scope="module")
def holes():
    vae = make_linear_vae()
    torch.manual_seed(4)
    x = vae.marginal().sample((40,)).detach()
    mask = mcar(40, 5, 0.4, seed=4)
    filled = torch.where(mask, x, torch.zeros(()))
    with torch.no_grad():
        exact = vae.exact_observed_log_likelihood(filled, mask)
    return vae, filled, mask, exact


def iwae_loss(model, guide, k, *args, seed=0):
    pyro.set_rng_seed(seed)
    with torch.no_grad():
        return float(parse_objective(f"iwae:k={k}").loss(model, guide, *args))


def test_the_iwae_objective_on_masked_rows_is_log_p_x_obs_under_the_exact_posterior(holes):
    """With q(z | x_obs) the exact posterior every weight equals p(x_obs): the bound is exact for any K."""
    vae, x, mask, exact = holes

    def exact_guide(x, mask):
        loc, cov = vae.exact_observed_posterior(x, mask)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(loc, covariance_matrix=cov))

    for k in (1, 7):
        loss = iwae_loss(vae.model, exact_guide, k, x, mask)
        assert loss == pytest.approx(-float(exact.sum()), rel=1e-5)
    # the same rows with every cell observed: another number (the mask is what is scored)
    full = iwae_loss(vae.model, vae.exact_guide, 3, x)
    assert abs(full + float(exact.sum())) > 10


def test_the_miwae_bound_rises_with_k_and_stays_below_log_p_x_obs(holes):
    vae, x, mask, exact = holes
    reps = 30
    bounds = {}
    for k in (1, 10, 100):
        values = [-iwae_loss(vae.model, vae.guide, k, x, mask, seed=s) for s in range(reps)]
        bounds[k] = (np.mean(values), np.std(values, ddof=1) / np.sqrt(reps))
    truth = float(exact.sum())
    assert bounds[1][0] < bounds[10][0] < bounds[100][0]
    assert bounds[100][0] < truth + 3 * bounds[100][1]
    assert bounds[100][0] - bounds[1][0] > 5 * (bounds[1][1] + bounds[100][1])


def test_training_sees_observed_cells_only():
    """The built-in table VAE: the iwae loss and every gradient are the same whatever the fill of the
    missing cells (the likelihood masks them; the encoder sees the mask and masked features)."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=60),
            "b": rng.lognormal(size=60),
            "n": rng.poisson(3, size=60),
            "c": rng.choice(["x", "y", "z"], size=60),
        }
    )
    frame = frame.mask(rng.random(frame.shape) < 0.3)
    data = pv.load_dataset(frame, seed=0, test_fraction=0.0001)
    torch.manual_seed(0)
    vae = pv.VAE(data.meta.input_dim, 2, (16,), likelihood="auto", schema=data.schema)
    x, mask = data.train, data.train_mask
    other = torch.where(mask, x, x.amax(0).expand_as(x))  # another (in-support) fill
    assert not torch.equal(other, x)
    losses, grads = [], []
    for rows in (x, other):
        vae.zero_grad()
        pyro.set_rng_seed(1)
        loss = parse_objective("iwae:k=5").loss(vae.model, vae.guide, rows, mask)
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append(torch.cat([p.grad.flatten() for p in vae.parameters() if p.grad is not None]))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    torch.testing.assert_close(grads[0], grads[1])


def test_compare_on_a_table_with_holes_reports_the_missing_fraction():
    rng = np.random.default_rng(1)
    z = rng.normal(size=120)
    frame = pd.DataFrame(
        {"a": z + 0.3 * rng.normal(size=120), "b": 2 * z, "c": -z + rng.normal(size=120)}
    )
    hole = rng.random(frame.shape) < 0.3
    hole[hole.all(1), 0] = False
    data = pv.load_dataset(frame.mask(hole), seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small K, tiny model
        table = pv.compare(["iwae:k=3"], data, seeds=[0], epochs=1, num_samples=20)
    missing = float((~data.test_mask).float().mean())
    assert table["missing_fraction"].iloc[0] == pytest.approx(missing)
    assert missing > 0.1
