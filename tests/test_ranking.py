"""The model axis of compare and its ranking: true latent size recovered, paired s.e. checked by hand."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import ppl_vae as pv
from ppl_vae.analysis.methods import model_axis
from ppl_vae.cli import main
from ppl_vae.errors import UserError


def _linear_gaussian_data(n: int = 800, dim: int = 6, latent: int = 2) -> pv.Dataset:
    """Rows from x = W z + 0.3 e, z ~ N(0, I_latent): a probabilistic PCA of known dimension."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(dim, latent, generator=g) * 1.5
    x = torch.randn(n, latent, generator=g) @ w.T + 0.3 * torch.randn(n, dim, generator=g)
    return pv.Dataset.from_tensors(x, name="lg2", seed=0)


def test_ranking_recovers_the_true_latent_size_of_linear_gaussian_data():
    data = _linear_gaussian_data()
    models = {f"d={k}": f"linear:latent={k},noise=0.3/fullrank" for k in (1, 2, 4)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # k-hat of the redundant d=4 is flagged
        result = pv.run_comparison(
            models=models,
            dataset=data,
            seeds=[0, 1],
            epochs=100,
            num_samples=100,
            batch_size=64,
            lr=3e-2,
            test_curve=False,
            keep_models=True,
        )
        ranking = result.ranking()
    by = ranking.set_index("model")
    # the smallest model not distinguishable from the best (2 paired s.e.) is the true size
    chosen = min((m for m in by.index if by.loc[m, "within_2se"]), key=lambda m: int(m[2:]))
    assert chosen == "d=2", ranking.to_string()
    assert by.loc["d=1", "diff"] + 2 * by.loc["d=1", "diff_se"] < 0  # too small: clearly worse
    assert set(result.table["method"]) == set(by["method"])  # every cell ran
    # the held-out estimate of d=2 is close to the exact log p(x) of its own fitted model
    assert ranking["n_rows"].nunique() == 1 and ranking["metric"].iloc[0] == "iw_log_likelihood"
    label = by.loc["d=2", "method"]
    with torch.no_grad():
        exact = result.models[(label, 0)].exact_log_likelihood(data.test).numpy()
    iw = result.points.query("method == @label and seed == 0")["iw_log_likelihood"].to_numpy()
    assert 0 <= exact.mean() - iw.mean() < 0.05


def _points(rng: np.random.Generator) -> pd.DataFrame:
    frames = []
    for seed in (0, 1, 2):
        base = rng.normal(-5, 2, size=40)
        for method, shift in (("a", 0.0), ("b", -0.3), ("c", 0.1)):
            frames.append(
                pd.DataFrame(
                    {
                        "method": method,
                        "seed": seed,
                        "point": np.arange(40),
                        "iw_log_likelihood": base + shift + rng.normal(0, 0.2, 40),
                        "khat": rng.uniform(0, 0.8 if method == "b" else 0.5, 40),
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def test_paired_se_equals_an_independent_computation():
    pts = _points(np.random.default_rng(1))
    with pytest.warns(UserWarning, match="unreliable"):
        ranking = pv.rank_models(pts, names={"b": "model b"})
    assert list(ranking["model"]) == ["c", "a", "model b"]
    for method in ("a", "b"):
        per_seed_mean, per_seed_var = [], []
        for seed in (0, 1, 2):
            mine = pts[(pts.method == method) & (pts.seed == seed)].sort_values("point")
            best = pts[(pts.method == "c") & (pts.seed == seed)].sort_values("point")
            d = mine["iw_log_likelihood"].to_numpy() - best["iw_log_likelihood"].to_numpy()
            per_seed_mean.append(d.mean())
            per_seed_var.append(d.var(ddof=1) / len(d))
        row = ranking.set_index("method").loc[method]
        assert row["diff"] == pytest.approx(np.mean(per_seed_mean), abs=1e-12)
        assert row["diff_se"] == pytest.approx(math.sqrt(sum(per_seed_var)) / 3, rel=1e-12)
        assert row["diff_se_seeds"] == pytest.approx(np.std(per_seed_mean, ddof=1) / math.sqrt(3))
        share = (pts.loc[pts.method == method, "khat"] > 0.7).mean()
        assert row["khat_share"] == pytest.approx(share)
    # the same as paired_differences against the best (its pooled per-point s.e.)
    paired = pv.paired_differences(pts, reference="c", metrics=["iw_log_likelihood"])
    overall = paired[paired.level == "all"].set_index("method")
    assert ranking.set_index("method").loc["b", "diff_se"] == pytest.approx(
        overall.loc["b", "se_points"]
    )
    assert bool(ranking.set_index("method").loc["b", "unreliable"])


def test_ranking_refuses_runs_on_different_rows():
    pts = _points(np.random.default_rng(2))
    pts = pts[~((pts.method == "a") & (pts.point == 0))]
    with pytest.raises(UserError, match="same rows"):
        pv.rank_models(pts)


def test_model_axis_crosses_models_with_objectives_and_refuses_mixtures():
    methods, names = model_axis(
        None, {"d=2": "vae:latent=2", "own": lambda: None}, ["analytic", "trace"]
    )
    assert len(methods) == 4 and sorted(set(names.values()))[:2] == ["d=2/analytic", "d=2/trace"]
    with pytest.raises(UserError, match="not both"):
        model_axis(["trace"], {"d=2": "vae:latent=2"}, None)
    with pytest.raises(UserError, match="objectives= goes with models="):
        model_axis(["trace"], None, ["trace"])
    with pytest.raises(UserError, match="no objective"):
        model_axis(None, {"d=2": "vae:latent=2/meanfield/trace"}, None)


def test_cli_compare_models_prints_and_writes_the_ranking(tmp_path, capsys):
    out = tmp_path / "cmp"
    rc = main(
        [
            "compare",
            "--dataset",
            "two_moons",
            "--models",
            "vae:latent=1",
            "vae:latent=2",
            "--seeds",
            "0",
            "1",
            "--epochs",
            "2",
            "--num-samples",
            "20",
            "--hidden-dims",
            "8",
            "--n-samples",
            "200",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "ranking by held-out iw_log_likelihood" in printed
    ranking = pd.read_csv(out / "comparison" / "ranking.csv")
    assert sorted(ranking["model"]) == ["vae:latent=1", "vae:latent=2"]
    assert list(ranking["rank"]) == [1, 2] and ranking["diff"].iloc[0] == 0


def _two_models(row_noise: float, seed_shift: list[float]) -> pd.DataFrame:
    """Model b = model a + a per-seed shift + small per-row noise, on 50 rows per seed."""
    g = np.random.default_rng(0)
    frames = []
    for seed, shift in enumerate(seed_shift):
        a = g.normal(-5.0, 1.0, size=50)
        b = a + shift + row_noise * g.normal(size=50)
        for method, values in (("a", a), ("b", b)):
            frames.append(
                pd.DataFrame(
                    {"method": method, "seed": seed, "point": np.arange(50), "khat": 0.1}
                ).assign(iw_log_likelihood=values)
            )
    return pd.concat(frames, ignore_index=True)


def test_within_2se_uses_the_seed_to_seed_se_when_the_seeds_disagree():
    """Per seed, b - a is nearly constant (a tiny paired row s.e.), but the seeds disagree on it: the
    difference is not resolved, whatever the rows say (the old flag used the row s.e. alone: False)."""
    ranking = pv.rank_models(_two_models(0.001, [-0.30, 0.0, -0.02])).set_index("model")
    b = ranking.loc["b"]
    assert b["diff"] == pytest.approx(-0.32 / 3, abs=1e-3)
    assert b["diff_se"] < 0.001 < 0.05 < b["diff_se_seeds"]
    assert b["diff"] + 2 * b["diff_se"] < 0 <= b["diff"] + 2 * b["diff_se_seeds"]
    assert b["within_2se"]
    # seeds that agree, and one seed (no seed-to-seed s.e.): the row s.e. decides
    agree = pv.rank_models(_two_models(0.001, [-0.10, -0.11, -0.10])).set_index("model")
    assert not agree.loc["b", "within_2se"]
    one = pv.rank_models(_two_models(0.001, [-0.30])).set_index("model")
    assert math.isnan(one.loc["b", "diff_se_seeds"]) and not one.loc["b", "within_2se"]
    best = one[one["rank"] == 1].iloc[0]
    assert math.isnan(best["diff_se_seeds"]) and best["diff_se"] == 0.0  # one seed: no seed s.e.
