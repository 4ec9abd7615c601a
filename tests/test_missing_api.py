"""pv.impute and pv.score as a user calls them: DataFrames, arrays with NaN, (x, mask); their refusals."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import pytest
import torch

import ppl_vae as pv
from ppl_vae.errors import DataError, ProgramError, UserError
from tests.programs.exact import MaskedLinear, make_linear_vae, mcar


@pytest.fixture(scope="module")
def table():
    vae = make_linear_vae()
    torch.manual_seed(1)
    x = vae.marginal().sample((60,)).detach()
    mask = mcar(60, 5, 0.3, seed=1)
    frame = pd.DataFrame(
        np.where(mask, x.numpy(), np.nan),
        columns=["a", "b", "c", "d", "e"],
        index=pd.Index([f"r{i}" for i in range(60)], name="id"),
    )
    return vae, x, mask, frame


def test_impute_a_dataframe_keeps_observed_cells_names_and_index(table):
    vae, _, mask, frame = table
    before = frame.copy()
    out = pv.impute(MaskedLinear(vae), frame, num_samples=400, multiple=3, seed=0)
    pd.testing.assert_frame_equal(frame, before)  # the input is untouched
    assert out.completed.index.equals(frame.index) and list(out.completed.columns) == list("abcde")
    observed = mask.numpy()
    assert np.array_equal(out.completed.to_numpy()[observed], frame.to_numpy()[observed])
    assert not out.completed.isna().any().any()
    assert out.missing.to_numpy().tolist() == (~observed).tolist()
    for name in ("sd", "se", "ess"):
        part = getattr(out, name).to_numpy()
        assert np.isnan(part[observed]).all() and np.isfinite(part[~observed]).all()
    assert len(out.tables) == 3
    for t in out.tables:
        assert np.array_equal(t.to_numpy()[observed], frame.to_numpy()[observed])
    assert not np.allclose(out.tables[0].to_numpy(), out.tables[1].to_numpy())
    assert out.rows["reliable"].all() and out.summary["n_imputed_cells"] == int((~observed).sum())
    assert out.summary["missing_fraction"]["all"] == pytest.approx(float((~observed).mean()))
    pooled = out.pool(lambda t: (t.a.mean(), t.a.var() / len(t)), dof=59)
    assert pooled.names == ["statistic"] and np.isfinite(pooled.se).all()


def test_impute_agrees_across_input_forms(table):
    vae, x, mask, frame = table
    prog = MaskedLinear(vae)
    from_frame = pv.impute(prog, frame, num_samples=300, seed=2).completed.to_numpy()
    nan = np.where(mask.numpy(), x.numpy(), np.nan)
    from_array = pv.impute(prog, nan, num_samples=300, seed=2).completed.to_numpy()
    from_tensor = pv.impute(prog, torch.from_numpy(nan), num_samples=300, seed=2).completed
    np.testing.assert_allclose(from_frame, from_array, rtol=1e-6)
    np.testing.assert_allclose(from_tensor.to_numpy(), from_array, rtol=1e-6)
    # (x_filled, mask): the fill is the caller's; with this masked program it changes nothing scored
    filled = torch.where(mask, x, torch.zeros(()))
    explicit = pv.impute(prog, (filled, mask), num_samples=300, seed=2).completed.to_numpy()
    np.testing.assert_allclose(explicit, from_array, rtol=1e-4, atol=1e-5)


def test_score_ranks_reliable_rows_and_flags_the_rest(table):
    vae, x, mask, frame = table
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_observed varies
        good = pv.score(MaskedLinear(vae), frame, num_samples=500, seed=0)
    rows = good.rows
    assert rows.index.equals(frame.index) and rows["reliable"].all()
    assert sorted(rows["rank"].tolist()) == list(range(1, 61))
    assert rows.loc[rows["rank"] == 1, "log_px"].item() == rows["log_px"].min()
    exact = vae.exact_observed_log_likelihood(torch.where(mask, x, 0.0), mask).detach().numpy()
    z = (rows["log_px"].to_numpy() - exact) / rows["se"].to_numpy()
    assert np.abs(z).max() < 4.5
    assert (rows["n_observed"].to_numpy() == mask.sum(1).numpy()).all()
    # a guide far too narrow: heavy-tailed weights, k-hat > 0.7; flagged, not ranked
    with (
        pytest.warns(UserWarning, match=r"unreliable log p\(x_obs\).*flagged and left unranked"),
        pytest.warns(UserWarning, match="not on one scale"),
    ):
        bad = pv.score(MaskedLinear(vae, offset=2.0, widen=0.25), frame, num_samples=500, seed=0)
    flagged = ~bad.rows["reliable"]
    assert flagged.sum() > 30
    assert bad.rows.loc[flagged, "rank"].isna().all()
    assert bad.rows.loc[flagged, "reason"].str.contains("k-hat").all()
    assert bad.ranked().tail(int(flagged.sum()))["reliable"].eq(False).all()
    assert len(bad.top(100)) == int((~flagged).sum())


def test_score_complete_rows_calls_a_masked_program_with_an_all_true_mask(table):
    vae, x, _, _ = table
    out = pv.score(MaskedLinear(vae), x, num_samples=300)
    exact = vae.exact_log_likelihood(x).detach().numpy()
    assert np.abs((out.rows["log_px"].to_numpy() - exact) / out.rows["se"].to_numpy()).max() < 4.5
    assert (out.rows["n_observed"] == 5).all() and out.summary["missing_fraction"]["all"] == 0


class PlainVAE:
    """A user's program with no mask argument."""

    def __init__(self, vae):
        self.vae = vae

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.vae.weight.T, 0.5).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))


def test_refusals_name_the_problem_and_the_fix(table):
    vae, x, mask, frame = table
    with pytest.raises(ProgramError, match=r"takes no mask: write model\(x, mask\)"):
        pv.impute(PlainVAE(vae), frame)
    with pytest.raises(ProgramError, match="takes no mask"):
        pv.score(PlainVAE(vae), frame)
    empty = frame.copy()
    empty.loc["r3"] = np.nan
    with pytest.raises(DataError, match="no observed cell, first row 'r3'"):
        pv.impute(MaskedLinear(vae), empty)
    strings = frame.assign(colour=["red"] * 60)
    with pytest.raises(DataError, match=r"non-numeric column\(s\) \['colour'\] and no schema"):
        pv.impute(MaskedLinear(vae), strings)
    with pytest.raises(UserError, match="nothing to impute"):
        pv.impute(MaskedLinear(vae), x)
    with pytest.raises(TypeError, match="DataFrame, a ppl_vae Dataset"):
        pv.impute(MaskedLinear(vae), [1, 2, 3])
    with pytest.raises(UserError, match="max_se must be positive"):
        pv.score(MaskedLinear(vae), frame, max_se=0)
    out = pv.impute(MaskedLinear(vae), frame, num_samples=200)
    with pytest.raises(UserError, match="multiple=M"):
        out.pool(lambda t: (1.0, 1.0))
