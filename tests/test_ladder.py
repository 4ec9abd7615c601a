"""The estimator ladder (issue 23): on a linear-Gaussian model (exact log p(x)) a good guide stops at IW,
a poor one (shifted, too narrow) moves to AIS, and both land on the exact value within their s.e."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import ppl_vae as pv
from ppl_vae.errors import UserError


class _Fixed:
    """The linear-Gaussian model with a guide at the exact posterior, shifted and rescaled."""

    def __init__(self, lg, shift, widen):
        self.lg, self.shift, self.widen, self.model = lg, shift, widen, lg.model

    def guide(self, x, mask=None):
        loc, cov = self.lg.exact_posterior(x)
        sd = cov.diagonal(dim1=-2, dim2=-1).sqrt().expand_as(loc)
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(loc + self.shift, sd * self.widen).to_event(1))


@pytest.fixture(scope="module")
def linear():
    torch.manual_seed(0)
    lg = pv.LinearGaussianVAE(input_dim=4, latent_dim=1, noise_scale=0.5)
    x = torch.randn(40, 4, generator=torch.Generator().manual_seed(1))
    return lg, x, lg.exact_log_likelihood(x).detach().double().numpy()


def _error(result, exact):
    err = result.points["log_likelihood"].to_numpy() - exact
    return float(err.mean()), result.summary["mc_se"]


@torch.no_grad()
def test_a_good_guide_stops_at_iw_on_the_exact_value(linear):
    lg, x, exact = linear
    res = pv.estimate_log_likelihood(_Fixed(lg, 0.0, 1.3), x, target_se=0.05, k_max=1024)
    assert res.summary["stopped_at"] == {"iw": 40} and res.summary["highest_rung"] == "iw"
    assert set(res.points["reason"]) == {"converged"} and (res.points["se"] <= 0.05).all()
    assert (res.points["khat"] <= 0.7).all() and res.points["iw"].mean() >= res.points[
        "elbo"
    ].mean()
    mean_err, se = _error(res, exact)
    assert abs(mean_err) <= 4 * se + 1e-3, (mean_err, se)


def test_a_poor_guide_moves_to_ais_within_002_nats(linear):
    lg, x, exact = linear
    res = pv.estimate_log_likelihood(
        _Fixed(lg, 0.5, 0.3), x, target_se=0.05, k_max=1024, ais_steps=200, seed=0
    )
    assert res.summary["stopped_at"] == {"ais": 40}
    assert res.summary["reasons"].get("k-hat above threshold", 0) > 20  # too narrow: heavy tails
    mean_err, se = _error(res, exact)
    assert se < 0.02 and abs(mean_err) < 0.02, (mean_err, se)  # the charter's 0.02 nats
    iw_err = float((res.points["iw"].to_numpy() - exact).mean())
    assert iw_err < -0.05  # what IW alone would have reported: biased low


def test_the_exact_guide_stops_at_the_elbo_and_bad_arguments_are_refused(linear):
    lg, x, exact = linear
    res = pv.estimate_log_likelihood(_Fixed(lg, 0.0, 1.0), x[:5], target_se=0.05)
    assert res.summary["stopped_at"] == {"elbo": 5}
    np.testing.assert_allclose(res.points["log_likelihood"], exact[:5], atol=1e-4)
    assert math.isclose(res.summary["log_likelihood_mean"], float(exact[:5].mean()), abs_tol=1e-4)
    with pytest.raises(UserError, match="target_se"):
        pv.estimate_log_likelihood(lg, x, target_se=0)
    with pytest.raises(UserError, match="k_start"):
        pv.estimate_log_likelihood(lg, x, k_start=4)
    with pytest.raises(UserError, match="Tensor"):
        pv.estimate_log_likelihood(lg, [[0.0] * 4])


def test_evaluate_ladder_on_a_run_folder(tmp_path, capsys):
    import json

    from helpers import one_line_error

    from ppl_vae.cli import main

    out = tmp_path / "run"
    quick = ["--dataset", "digits", "--epochs", "1", "--n-samples", "200", "--no-progress"]
    assert (
        main(["train", *quick, "--hidden-dims", "16", "--latent-dim", "2", "--out", str(out)]) == 0
    )
    args = ["evaluate", str(out), "-k", "20", "--max-points", "8", "--no-progress"]
    assert main([*args, "--ladder", "--target-se", "0.5"]) == 0
    assert "ladder (target s.e. 0.5)" in capsys.readouterr().out
    summary = json.loads((out / "evaluation" / "evaluation.json").read_text())
    assert summary["ladder_target_se"] == 0.5 and summary["ladder_highest_rung"] in {"iw", "ais"}
    assert math.isfinite(summary["ladder_log_likelihood_mean"])
    assert main([*args, "--target-se", "0.1", "--force"]) == 2
    assert "add --ladder" in one_line_error(capsys)
