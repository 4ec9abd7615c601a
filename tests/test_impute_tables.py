"""pv.impute and pv.score on a table through the data layer's schema: original units, levels, counts."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import ppl_vae as pv
from ppl_vae.analysis.imputation import SchemaFeatures
from ppl_vae.errors import DataError


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    n = 240
    z = rng.normal(size=n)
    full = pd.DataFrame(
        {
            "height": 170 + 8 * z + rng.normal(scale=3, size=n),
            "income": np.exp(3 + 0.5 * z + rng.normal(scale=0.3, size=n)),
            "visits": rng.poisson(np.exp(1 + 0.4 * z)),
            "group": np.where(z + rng.normal(scale=0.5, size=n) > 0, "high", "low"),
            "colour": rng.choice(["red", "green", "blue"], size=n),
        },
        index=pd.Index([f"p{i}" for i in range(n)], name="person"),
    )
    holes = full.mask(rng.random(full.shape) < 0.25)
    data = pv.load_dataset(holes, seed=0, standardize=True, test_fraction=0.25)
    torch.manual_seed(0)
    vae = pv.VAE(data.meta.input_dim, 2, (32,), likelihood="auto", schema=data.schema)
    pv.fit(vae, data, "iwae:k=5", epochs=20, batch_size=64, progress=False)
    return vae, data, holes


def test_a_completed_table_in_the_users_terms(fitted):
    vae, data, holes = fitted
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = pv.impute(vae, holes, num_samples=400, multiple=4, seed=0)
    done = out.completed
    observed = holes.notna().to_numpy()
    assert done.index.equals(holes.index) and list(done.columns) == list(holes.columns)
    for c in holes.columns:  # observed cells are the user's own values, exactly
        pd.testing.assert_series_equal(done[c][holes[c].notna()], holes[c][holes[c].notna()])
    assert not done.isna().any().any()
    assert set(done["colour"]) <= {"red", "green", "blue"} and set(done["group"]) <= {"high", "low"}
    assert (done["income"] > 0).all() and (done["visits"] >= 0).all()
    assert np.array_equal(out.missing.to_numpy(), ~observed)
    for t in out.tables:  # draws: counts are integers, levels strings
        assert pd.api.types.is_integer_dtype(t["visits"]) and t["visits"].notna().all()
        assert set(t["colour"]) <= {"red", "green", "blue"}
        pd.testing.assert_series_equal(
            t["height"][holes["height"].notna()], holes["height"].dropna()
        )
    # level probabilities of imputed cells: rows of imputed cells, summing to one, argmax = imputed level
    probs = out.probabilities["colour"]
    assert probs.index.equals(holes.index[holes["colour"].isna()])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    assert (probs.idxmax(axis=1) == done.loc[probs.index, "colour"]).all()
    assert np.isnan(out.sd["colour"]).all() and np.isfinite(out.se.loc[probs.index, "colour"]).all()


def test_original_units_means_agree_with_draws_within_their_errors(fitted):
    """E[x | x_obs] from the likelihood's mean (log-normal: exp(mu + s^2/2), not the median) equals the
    SNIS average of draws mapped to original units, within the two estimates' standard errors."""
    vae, data, holes = fitted
    x, mask = data.test, data.test_mask

    class FromDraws(SchemaFeatures):
        def __call__(self, mean, var, sample):
            return super().__call__(None, None, sample)

    from ppl_vae.estimators.impute import impute_cells

    exact = impute_cells(vae, x, mask, (), 3000, features=SchemaFeatures(data.schema), seed=1)
    drawn = impute_cells(vae, x, mask, (), 3000, features=FromDraws(data.schema), seed=2)
    for name in ("height", "income", "visits"):
        j = data.schema.position(name)
        hole = ~mask[:, j]
        if not hole.any():
            continue
        diff = exact.mean[hole, j] - drawn.mean[hole, j]
        se = (exact.se[hole, j] ** 2 + drawn.se[hole, j] ** 2).sqrt()
        assert float((diff / se).abs().max()) < 4.5, name
        sd_ratio = exact.sd[hole, j] / drawn.sd[hole, j]
        assert float((sd_ratio - 1).abs().median()) < 0.1, name


def test_score_new_rows_against_the_runs_schema(fitted):
    vae, data, holes = fitted
    new = holes.iloc[:30].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = pv.score(vae, new, num_samples=300)
    assert out.rows.index.equals(new.index)
    assert out.rows["n_observed"].tolist() == new.notna().sum(axis=1).tolist()
    odd = new.copy()
    odd.loc[odd.index[0], "height"] = 400.0  # far outside what the model has seen
    odd.loc[odd.index[0], "income"] = 1e5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ranked = pv.score(vae, odd, num_samples=300).rows
    assert ranked.loc[odd.index[0], "log_px"] < out.rows["log_px"].min()
    unseen = new.copy()
    unseen.loc[unseen.index[2], "colour"] = "purple"
    with pytest.raises(DataError, match="purple"):
        pv.score(vae, unseen)
    with pytest.raises(DataError, match="'visits'"):
        pv.score(vae, new.drop(columns="visits"))
