"""The comparison harness: same split and initialisation per seed, tidy tables, paired differences, CLI."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import ppl_vae as pv
from ppl_vae.analysis.compare import TABLE_COLUMNS, compare, compare_runs, run_comparison
from ppl_vae.analysis.methods import Method
from ppl_vae.analysis.paired import DataMismatch, paired_differences
from ppl_vae.cli import main

SMALL = {"latent_dim": 4, "hidden_dims": (32,), "n_samples": 300, "device": "cpu"}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*k-hat.*", category=UserWarning)
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def small_comparison():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*k-hat.*", category=UserWarning)
        return run_comparison(
            ["trace", "iwae:k=3"],
            "digits",
            seeds=[0, 1],
            epochs=2,
            num_samples=30,
            keep_models=True,
            **SMALL,
        )


def test_table_has_one_finite_row_per_method_and_seed(small_comparison):
    table = small_comparison.table
    assert list(table.columns) == TABLE_COLUMNS
    assert list(zip(table["method"], table["seed"], strict=True)) == [
        ("trace", 0),
        ("iwae:k=3", 0),
        ("trace", 1),
        ("iwae:k=3", 1),
    ]
    numeric = table.drop(
        columns=[
            "method",
            "model",
            "guide",
            "objective",
            "test_accuracy",
            "test_ais_log_likelihood",
        ]
    ).astype(float)
    assert np.isfinite(numeric.to_numpy()).all() and table["test_accuracy"].isna().all()
    assert set(table["model"]) == {"vae"} and set(table["guide"]) == {"meanfield"}
    assert (table["test_iw_log_likelihood"] >= table["test_elbo"]).all()
    assert np.allclose(table["gap"], table["test_iw_log_likelihood"] - table["test_elbo"])
    assert (table["num_samples"] == 30).all() and (table["epochs"] == 2).all()
    points = small_comparison.points
    assert len(points) == 4 * 360 and (points["iw_log_likelihood"] >= points["elbo"] - 1e-9).all()
    assert set(small_comparison.curves["epoch"]) == {1, 2}


def test_every_method_of_a_seed_starts_from_the_same_weights_and_data():
    result = run_comparison(
        ["trace", "analytic", "iwae:k=2"],
        "digits",
        seeds=[0, 1],
        epochs=0,
        num_samples=2,
        keep_models=True,
        **SMALL,
    )
    states = {key: model.state_dict() for key, model in result.models.items()}
    for seed in (0, 1):
        ref = states[("trace", seed)]
        for method in ("analytic", "iwae:k=2"):
            assert all(torch.equal(ref[k], v) for k, v in states[(method, seed)].items())
            assert result.fingerprints[(method, seed)] == result.fingerprints[("trace", seed)]
    assert not torch.equal(
        states[("trace", 0)]["encoder.net.0.weight"], states[("trace", 1)]["encoder.net.0.weight"]
    )
    # untrained identical models evaluated with the same estimator seed: identical numbers
    t = result.table.set_index(["method", "seed"])
    assert (
        t.loc[("trace", 0), "test_iw_log_likelihood"]
        == t.loc[("analytic", 0), "test_iw_log_likelihood"]
    )


def test_paired_differences_by_hand():
    rng = np.random.default_rng(0)
    rows = []
    for seed in (0, 1, 2):
        base = rng.normal(size=50)
        for method, shift in (("a", 0.0), ("b", 0.1 + 0.05 * seed)):
            rows.append(
                pd.DataFrame(
                    {
                        "method": method,
                        "seed": seed,
                        "point": np.arange(50),
                        "iw_log_likelihood": base + shift + rng.normal(0, 0.01, 50),
                        "elbo": base,
                    }
                )
            )
    points = pd.concat(rows, ignore_index=True)
    paired = paired_differences(points, "a")
    per_seed = paired[(paired["metric"] == "iw_log_likelihood") & (paired["level"] == "seed")]
    d0 = (
        points.query("method == 'b' and seed == 0")["iw_log_likelihood"].to_numpy()
        - points.query("method == 'a' and seed == 0")["iw_log_likelihood"].to_numpy()
    )
    first = per_seed.iloc[0]
    assert first["mean_diff"] == pytest.approx(d0.mean())
    assert first["se_points"] == pytest.approx(d0.std(ddof=1) / math.sqrt(50))
    overall = paired[(paired["metric"] == "iw_log_likelihood") & (paired["level"] == "all")].iloc[0]
    means = per_seed["mean_diff"].to_numpy()
    assert overall["mean_diff"] == pytest.approx(means.mean())
    assert overall["se_seeds"] == pytest.approx(means.std(ddof=1) / math.sqrt(3))
    assert overall["n_seeds"] == 3 and overall["n_points"] == 150
    assert overall["mean_diff"] == pytest.approx(0.15, abs=0.01)
    elbo = paired[(paired["metric"] == "elbo")]
    assert np.allclose(elbo["mean_diff"], 0.0)


def test_paired_table_of_a_run(small_comparison):
    paired = small_comparison.paired()
    assert set(paired["method"]) == {"iwae:k=3"} and set(paired["reference"]) == {"trace"}
    assert len(paired) == 2 * 3  # two metrics x (two seeds + overall)
    assert (
        paired["mean_diff"].notna().all()
        and (paired[paired["level"] == "seed"]["se_points"] > 0).all()
    )
    assert small_comparison.paired("iwae:k=3")["method"].unique().tolist() == ["trace"]


def test_pairing_runs_on_different_data_is_refused(small_comparison):
    fps = dict(small_comparison.fingerprints)
    fps[("iwae:k=3", 1)] = dict(fps[("iwae:k=3", 1)], n_train=999)
    with pytest.raises(DataMismatch, match="n_train: 999 vs 300"):
        paired_differences(small_comparison.points, "trace", fingerprints=fps)


def test_compare_runs_refuses_runs_with_different_splits():
    from ppl_vae.runs import train_run

    a = train_run(
        None,
        dataset="digits",
        objective="trace",
        latent_dim=2,
        hidden_dims=(16,),
        epochs=1,
        n_samples=200,
        progress=False,
        device="cpu",
    )
    b = train_run(
        None,
        dataset="digits",
        objective="analytic",
        latent_dim=2,
        hidden_dims=(16,),
        epochs=1,
        n_samples=250,
        progress=False,
        device="cpu",
    )
    with pytest.raises(DataMismatch, match="n_train"):
        compare_runs([a, b], num_samples=5)
    c = train_run(
        None,
        dataset="digits",
        objective="analytic",
        latent_dim=2,
        hidden_dims=(16,),
        epochs=1,
        n_samples=200,
        progress=False,
        device="cpu",
    )
    ok = compare_runs([a, c], num_samples=5)
    assert ok.table["method"].tolist() == ["trace", "analytic"] and len(ok.paired()) == 2 * 2


def test_save_writes_csvs_netcdf_and_plot(small_comparison, tmp_path):
    from ppl_vae.diagnostics.psis import arviz as _arviz

    paths = small_comparison.save(tmp_path)
    assert pd.read_csv(paths["table"]).shape == (4, len(TABLE_COLUMNS))
    assert set(pd.read_csv(paths["paired"])["level"]) == {"seed", "all"}
    idata = _arviz().from_netcdf(paths["netcdf"])
    assert set(idata.groups()) >= {"points", "curves", "summary"}
    assert idata.points["iw_log_likelihood"].dims == ("method", "seed", "point")
    assert list(idata.points["method"].values) == ["trace", "iwae:k=3"]
    assert idata.curves["test_elbo"].shape == (2, 2, 2)
    assert idata.summary["kl_per_dim"].shape == (2, 2, 4)
    assert paths["plot"].stat().st_size > 10_000


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"methods": ["trace", "nope"]}, "unknown objective 'nope'; choose one of"),
        ({"methods": ["iwae:k=0"]}, "k must be an integer >= 1"),
        ({"methods": "trace"}, "methods must be a non-empty list"),
        ({"methods": ["trace", "trace:particles=1"]}, "same method .* more than once"),
        ({"methods": ["hvae/fullrank/trace"]}, "guide families are for 'vae' and 'linear'"),
        ({"methods": ["vae/meanfield/trace/x"]}, "write 'objective', 'guide/objective'"),
        ({"methods": ["mlp/trace"]}, "neither a model .* nor a guide"),
        ({"methods": ["trace"], "seeds": []}, "seeds must be a non-empty list"),
        ({"methods": ["trace"], "num_samples": 1}, "num_samples must be an integer >= 2"),
        ({"methods": ["trace"], "reference": "analytic"}, "is not among the methods"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        compare(dataset="digits", epochs=1, **kwargs)


def test_cli_compare_writes_both_tables(tmp_path, capsys):
    out = tmp_path / "cmp"
    rc = main(
        [
            "compare",
            "--dataset",
            "digits",
            "--methods",
            "trace",
            "analytic",
            "iwae:k=5",
            "--seeds",
            "0",
            "1",
            "--epochs",
            "2",
            "--num-samples",
            "20",
            "--hidden-dims",
            "64",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    table = pd.read_csv(out / "comparison" / "comparison.csv")
    assert len(table) == 6 and set(table["method"]) == {"trace", "analytic", "iwae:k=5"}
    required = [
        "method",
        "seed",
        "test_elbo",
        "test_iw_log_likelihood",
        "gap",
        "khat_share_above_0.7",
        "active_units",
        "kl_per_dim_mean",
        "reconstruction_error",
        "train_seconds",
        "seconds_per_epoch",
    ]
    assert all(c in table.columns for c in required)
    text = ["method", "model", "guide", "objective", "test_accuracy", "test_ais_log_likelihood"]
    assert np.isfinite(table.drop(columns=text).to_numpy(dtype=float)).all()
    assert (table["test_iw_log_likelihood"] >= table["test_elbo"]).all()
    paired = pd.read_csv(out / "comparison" / "paired.csv")
    assert {"mean_diff", "se_points", "se_seeds"} <= set(paired.columns) and len(
        paired
    ) == 2 * 2 * 3
    assert (out / "comparison" / "comparison.nc").is_file()
    assert (out / "comparison" / "comparison.png").is_file()
    assert "paired differences" in capsys.readouterr().out


def test_cli_compare_unknown_method_exits_2_listing_valid_ones(tmp_path, capsys):
    rc = main(["compare", "--methods", "trace", "iwea:k=5", "--out", str(tmp_path / "x")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "unknown objective 'iwea'" in err and "iwae - " in err and "analytic - " in err
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------- methods: model, guide, objective
@pytest.mark.parametrize(
    "text, parts, label",
    [
        ("iwae:k=5", ("vae", "meanfield", "iwae:k=5"), "iwae:k=5"),
        (
            "iaf:n=2/iwae:k=5,grad=dreg",
            ("vae", "iaf:n=2", "iwae:k=5,grad=dreg"),
            "vae/iaf:n=2/iwae:k=5,grad=dreg",
        ),
        (
            "vae/iaf/iwae:k=5,grad=dreg",
            ("vae", "iaf:n=2", "iwae:k=5,grad=dreg"),
            "vae/iaf:n=2/iwae:k=5,grad=dreg",
        ),
        ("hvae/trace", ("hvae", "meanfield", "trace"), "hvae/meanfield/trace"),
        (
            " vae:nets=conv / fullrank / analytic ",
            ("vae:nets=conv", "fullrank", "analytic"),
            "vae:nets=conv/fullrank/analytic",
        ),
        (
            "m2:labelled=0.05/enum",
            ("m2:labelled=0.05", "meanfield", "enum"),
            "m2:labelled=0.05/meanfield/enum",
        ),
    ],
)
def test_a_method_is_model_guide_and_objective(text, parts, label):
    m = Method.parse(text)
    assert (m.model, m.guide, m.objective) == parts and m.label == label == str(m)
    assert (
        Method.parse(m.label) == m
        and Method.parse(dict(zip(("model", "guide", "objective"), parts, strict=True))) == m
    )
    assert pv.Method(*parts) == m


def test_grid_starts_each_family_from_the_same_weights_and_shares_what_fits():
    methods = [
        "analytic",
        "iwae:k=3",
        "fullrank/analytic",
        "iaf:n=2/iwae:k=3,grad=dreg",
        "hvae:latent=4-2,hidden1=16,hidden2=8/trace",
        "m2:labelled=0.2/enum",
    ]
    result = run_comparison(
        methods, "digits", seeds=[0], epochs=0, num_samples=2, keep_models=True, **SMALL
    )
    labels = [
        "analytic",
        "iwae:k=3",
        "vae/fullrank/analytic",
        "vae/iaf:n=2/iwae:k=3,grad=dreg",
        "hvae:latent=4-2,hidden1=16,hidden2=8/meanfield/trace",
        "m2:labelled=0.2/meanfield/enum",
    ]
    assert result.methods == labels
    state = {label: result.models[(label, 0)].state_dict() for label in labels}
    assert all(
        torch.equal(state["analytic"][k], v) for k, v in state["iwae:k=3"].items()
    )  # same family
    for other in labels[
        2:4
    ]:  # other guide families: the decoder and the encoder's first layer are shared
        for key in ("decoder.net.0.weight", "decoder.net.2.bias", "encoder.net.0.weight"):
            assert torch.equal(state[other][key], state["analytic"][key]), (other, key)
        assert not torch.equal(
            state[other]["encoder.net.2.bias"][:4], state["analytic"]["encoder.net.2.bias"][:4]
        )
    shared = result.settings["shared_init"]
    assert (
        "decoder.net.0.weight" in shared["0:vae/fullrank"]
        and "encoder.net.2.weight" not in shared["0:vae/fullrank"]
    )
    table = result.table.set_index("method")
    assert table.loc["m2:labelled=0.2/meanfield/enum", "test_accuracy"] >= 0
    assert table["test_accuracy"].notna().sum() == 1
    assert list(table["model"]) == ["vae"] * 4 + [
        "hvae:latent=4-2,hidden1=16,hidden2=8",
        "m2:labelled=0.2",
    ]


@pytest.mark.filterwarnings("ignore::ppl_vae.guides.SampledKLWarning")
def test_one_command_answers_iaf_against_iwae_with_dreg():
    """Does an IAF guide help more than IWAE-5 with DReG on this model? One call, one paired table."""
    result = run_comparison(
        ["iaf:n=2/analytic", "iwae:k=5,grad=dreg"],
        "digits",
        seeds=[0],
        epochs=50,
        num_samples=20,
        time_budget=0.01,
        test_points=50,
        **SMALL,
    )
    assert (result.table["epochs"] == 1).all()  # the budget stops each run after its first epoch
    assert (result.table["n_test"] == 50).all()
    paired = result.paired()
    row = paired[(paired["metric"] == "iw_log_likelihood") & (paired["level"] == "all")].iloc[0]
    assert row["method"] == "iwae:k=5,grad=dreg" and row["reference"] == "vae/iaf:n=2/analytic"
    assert np.isfinite(row["mean_diff"]) and row["se_points"] > 0
    assert result.settings["time_budget"] == 0.01 and result.settings["test_points"] == 50


def test_estimator_is_passed_through_to_evaluate():
    with pytest.raises(ValueError, match="estimator"):
        run_comparison(
            ["trace"], "digits", seeds=[0], epochs=0, num_samples=2, estimator="bogus", **SMALL
        )


@pytest.mark.filterwarnings("ignore::ppl_vae.guides.SampledKLWarning")
def test_cli_compare_takes_model_guide_objective(tmp_path, capsys):
    out = tmp_path / "grid"
    rc = main(
        [
            "compare",
            "--dataset",
            "digits",
            "--methods",
            "analytic",
            "fullrank/analytic",
            "iaf:n=2/iwae:k=3,grad=dreg",
            "--epochs",
            "3",
            "--time-budget",
            "0.01",
            "--num-samples",
            "5",
            "--n-samples",
            "200",
            "--latent-dim",
            "3",
            "--hidden-dims",
            "16",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    table = pd.read_csv(out / "comparison" / "comparison.csv")
    assert list(table["method"]) == [
        "analytic",
        "vae/fullrank/analytic",
        "vae/iaf:n=2/iwae:k=3,grad=dreg",
    ]
    assert (
        list(table["guide"]) == ["meanfield", "fullrank", "iaf:n=2"]
        and (table["epochs"] == 1).all()
    )
    capsys.readouterr()
    for bad, message in (
        ("hvae/fullrank/trace", "guide families are for 'vae'"),
        ("gmm/trace", "neither a model"),
    ):
        rc = main(["compare", "--methods", bad, "--out", str(tmp_path / "x")])
        err = capsys.readouterr().err
        assert rc == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
