"""A statistician's table: schema inference and its refusals, CSV reading, masks and row labels, and the
built-in VAE on a mixed table with missing cells (issues 20, 21's data layer, 18's reading items)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import one_line_error

import ppl_vae as pv
from ppl_vae.data import infer_schema, split_missing
from ppl_vae.errors import DataError, UserError

pytestmark = pytest.mark.filterwarnings("ignore:.*differ in scale:UserWarning")


def frame(n=60, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "patient": [f"P{i:03d}" for i in range(n)],
            "site": ["A"] * n,
            "notes": [None] * n,
            "smoker": rng.choice(["no", "yes"], n),
            "treated": rng.choice([True, False], n),
            "sex": rng.choice([1, 2], n),
            "region": rng.choice(["north", "south", "east", "west"], n),
            "stage": rng.choice([1, 2, 3], n),
            "visits": rng.poisson(8, n) + np.arange(n) % 15,
            "delta": rng.integers(-30, 30, n),
            "dose": np.exp(rng.normal(-3, 2.0, n)),
            "temp": rng.normal(37, 0.5, n),
        }
    )


def test_inference_rules_name_every_column():
    schema = infer_schema(frame())
    assert schema.types == {
        "smoker": "binary",
        "treated": "binary",
        "sex": "binary",
        "region": "categorical",
        "stage": "categorical",
        "visits": "count",
        "delta": "real",
        "dose": "positive",
        "temp": "real",
    }
    dropped = dict(schema.dropped)
    assert "ID-like" in dropped["patient"] and "names the rows" in dropped["patient"]
    assert dropped["site"].startswith("constant") and dropped["notes"].startswith("empty")
    assert schema.index == "patient"
    assert schema["smoker"].levels == ("no", "yes") and schema["sex"].levels == (1, 2)
    assert schema["region"].levels == ("east", "north", "south", "west")
    text = schema.describe()
    assert (
        "categorical (4 levels: east, north, south, west)" in text and "left out: constant" in text
    )


def test_declared_types_override_and_are_checked_against_the_values():
    f = frame()
    schema = infer_schema(
        f, {"stage": "count", "temp": "positive", "region": "ignore", "delta": "real"}
    )
    assert schema.types["stage"] == "count" and schema.types["temp"] == "positive"
    assert "region" not in schema.names and ("region", "declared 'ignore'") in schema.dropped
    f["visits"] = f["visits"].astype(float)
    f.loc[[4, 9], "visits"] = [-1, 2.5]
    with pytest.raises(
        DataError,
        match=r"column 'visits' is a count, but 2 value\(s\) are not non-negative integers: rows 4, 9 \(values -1.0, 2.5\).*types=\{'visits': 'real'\}",
    ):
        infer_schema(f, {"visits": "count"})
    with pytest.raises(
        DataError, match=r"column 'delta' is positive, but .* <= 0.*types=\{'delta': 'real'\}"
    ):
        infer_schema(frame(), {"delta": "positive"})
    with pytest.raises(
        DataError, match=r"column 'region' is declared binary but has 4 distinct values"
    ):
        infer_schema(frame(), {"region": "binary"})
    with pytest.raises(
        DataError, match=r"types names column 'wieght', which the table does not have"
    ):
        infer_schema(frame(), {"wieght": "real"})
    with pytest.raises(DataError, match=r"types\['temp'\] must be one of real, positive, count"):
        infer_schema(frame(), {"temp": "float"})


def test_a_column_that_fits_no_type_is_one_error_with_rows_and_remedy():
    f = frame()
    f["weight"] = np.round(np.linspace(50, 90, len(f)), 1).astype(object)
    f.loc[[3, 17], "weight"] = ["n/a?", "72kg"]
    with pytest.raises(
        DataError,
        match=r"column 'weight' holds numbers except 2 cell\(s\): rows 3, 17 \(values 'n/a\?', '72kg'\).*empty them",
    ):
        infer_schema(f)
    g = frame(200)
    g["city"] = [f"c{i % 120}" for i in range(200)]
    with pytest.raises(
        DataError,
        match=r"column 'city' has 120 distinct strings in 200 rows.*types=\{'city': 'ignore'\}",
    ):
        infer_schema(g)
    h = frame()
    h.loc[5, "temp"] = np.inf
    with pytest.raises(DataError, match=r"column 'temp' has infinite values at row 5"):
        infer_schema(h)


# ---------------------------------------------------------------------------- reading CSVs


def test_csv_encodings_headers_and_row_labels(tmp_path):
    latin = tmp_path / "latin.csv"
    rows = [
        "André,Besançon,1.5",
        "Zoë,Orléans,2.5",
        "Léa,Nîmes,0.5",
        "Noé,Nîmes,0.7",
        "Inès,Orléans,1.1",
    ]
    latin.write_bytes(("name,ville,score\n" + "\n".join(rows) + "\n").encode("cp1252"))
    with pytest.warns(UserWarning, match=r"is not UTF-8 .*read it as Windows-1252"):
        data = pv.load_dataset(f"csv:{latin}", test_fraction=0.4)
    assert set(data.schema["ville"].levels) == {"Besançon", "Orléans", "Nîmes"}
    assert data.schema.index == "name" and "Zoë" in set(data.train_index) | set(data.test_index)
    utf16 = tmp_path / "u16.csv"
    utf16.write_bytes("a,b\n1,2\n3,4\n5,7\n".encode("utf-16"))
    assert pv.load_dataset(f"csv:{utf16}", test_fraction=0.34).schema.names == ("a", "b")
    (tmp_path / "bin.csv").write_bytes(b"a,b\n1,\x002\n")
    with pytest.raises(DataError, match=r"holds NUL bytes, so it is not a text CSV"):
        pv.load_dataset(f"csv:{tmp_path / 'bin.csv'}")
    years = tmp_path / "years.csv"
    rng = np.random.default_rng(0)
    pd.DataFrame(rng.normal(50, 10, (30, 3)).round(2), columns=["2019", "2020", "2021"]).to_csv(
        years, index=False
    )
    with pytest.warns(
        UserWarning, match=r"first row \(2019, 2020, 2021\) is read as a header of numbers"
    ):
        data = pv.load_dataset(f"csv:{years}")
    assert (
        data.schema.names == ("2019", "2020", "2021") and data.meta.n_train + data.meta.n_test == 30
    )
    as_data = pv.load_dataset(f"csv:{years}", header=False)
    assert as_data.meta.n_train + as_data.meta.n_test == 31 and as_data.meta.load_options == {
        "header": False
    }
    # row labels: the file's data-row numbers, or its ID column
    assert sorted(np.concatenate([data.train_index, data.test_index])) == list(range(30))
    ids = tmp_path / "ids.csv"
    pd.DataFrame({"pid": ["x1", "x2", "x3", "x4", "x5"], "v": [1.5, 2.0, 3.5, 0.5, 1.0]}).to_csv(
        ids, index=False
    )
    data = pv.load_dataset(f"csv:{ids}", test_fraction=0.4)
    assert data.test_index.name == "pid" and set(data.test_index) | set(data.train_index) == {
        "x1",
        "x2",
        "x3",
        "x4",
        "x5",
    }
    values = {"x1": 1.5, "x2": 2.0, "x3": 3.5, "x4": 0.5, "x5": 1.0}
    assert [float(v) for v in data.train[:, 0]] == [values[k] for k in data.train_index]


def test_empty_cells_are_missing_with_masks_fills_and_fractions(tmp_path):
    f = frame(80)
    f.loc[[1, 2, 3], "region"] = None
    f.loc[[5, 6], "visits"] = np.nan
    f.loc[7, "dose"] = np.nan
    path = tmp_path / "holes.csv"
    f.to_csv(path, index=False)
    data = pv.load_dataset(f"csv:{path}", seed=1)
    assert data.has_missing and data.train_mask.shape == data.train.shape
    assert torch.isfinite(data.train).all() and torch.isfinite(data.test).all()
    both = torch.cat([data.train_mask, data.test_mask])
    assert int((~both).sum()) == 6
    j = data.schema.position("region")
    assert data.schema["region"].missing > 0 and data.meta.missing[j] == pytest.approx(
        data.schema["region"].missing
    )
    # fills are inside each column's support (a level code, an integer count, a positive dose)
    x = torch.cat([data.train, data.test])
    for name in ("region", "visits", "dose"):
        j, col = data.schema.position(name), data.schema[name]
        assert (x[~both[:, j], j] == torch.tensor(col.fill, dtype=torch.float32)).all()
    assert float(data.schema["region"].fill) in (0.0, 1.0, 2.0, 3.0)
    assert float(data.schema["visits"].fill).is_integer() and data.schema["dose"].fill > 0
    # the frame in the user's terms: strings, integers, NA where missing, rows by their ID
    back = data.to_frame("train")
    original = f.set_index("patient").loc[back.index, list(data.schema.names)]
    pd.testing.assert_frame_equal(
        back.astype(object).where(back.notna(), None),
        original.astype(object).where(original.notna(), None),
        check_dtype=False,
        check_exact=False,
        rtol=1e-6,
    )


def test_rows_and_columns_with_nothing_observed_are_refused_by_name():
    f = pd.DataFrame(
        {"a": [1.0, np.nan, 3.0, 4.0, 5.0, 6.0], "b": [0.5, np.nan, 1.5, 2.5, 0.7, 1.1]}
    )
    with pytest.raises(DataError, match=r"row\(s\) have no observed value.*row 1\)"):
        pv.load_dataset(f, test_fraction=0.34)
    from ppl_vae.data.checks import split_indices

    test_rows = split_indices(6, 0.5, 3)[1]
    g = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0, 2.5, 1.5], "b": [np.nan] * 6})
    g.loc[test_rows, "b"] = [2.0, 3.5, 7.1]  # observed in test rows only
    with pytest.raises(DataError, match=r"column 'b' has no observed value in the train rows"):
        pv.load_dataset(g, test_fraction=0.5, seed=3)


def test_new_rows_are_encoded_with_the_schema_or_refused_by_column():
    data = pv.load_dataset(frame(), seed=0)
    new = frame(5, seed=9)
    x, mask = data.schema.tensors(new)
    assert x.shape == (5, len(data.schema)) and mask is None
    new.loc[2, "region"] = "mars"
    with pytest.raises(
        DataError,
        match=r"column 'region' has value\(s\) that are not among its levels \(east, north, south, west\): row 2 \(value 'mars'\)",
    ):
        data.schema.tensors(new, "new.csv")
    with pytest.raises(DataError, match=r"new.csv has no column\(s\) 'dose'"):
        data.schema.tensors(frame(5).drop(columns="dose"), "new.csv")


# ---------------------------------------------------------------------------- the VAE on a table


def mixed(n=300, seed=0, holes=0.15):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    f = pd.DataFrame(
        {
            "id": np.arange(1000, 1000 + n),
            "smoker": np.where(z + rng.normal(size=n) > 0, "yes", "no"),
            "region": rng.choice(["north", "south", "east"], n),
            "visits": rng.poisson(np.exp(1.5 + 0.5 * z)) + 9 * (np.arange(n) % 2),
            "dose": np.exp(rng.normal(-4 + z, 0.7)),
            "income": rng.normal(5e4 + 1e4 * z, 5e3),
        }
    )
    cells = rng.random((n, 5)) < holes
    for j, c in enumerate(["smoker", "region", "visits", "dose", "income"]):
        f.loc[cells[:, j], c] = None if f[c].dtype == object else np.nan
    return f


def test_every_objective_trains_on_observed_cells_and_iw_rises_with_k():
    data = pv.load_dataset(mixed(), seed=0)
    assert data.train_index.name == "id"
    vae = pv.VAE(len(data.schema), 2, (32,), likelihood="auto", schema=data.schema)
    assert vae.mask_inputs and vae.likelihood.specs["visits"] == "negbin"
    for objective in ("analytic", "trace", "iwae:k=5"):
        history = pv.fit(vae, data, objective, epochs=2, batch_size=64, seed=0, progress=False)
        assert np.isfinite(history.to_frame()["train_elbo"]).all()
    rows = (data.test, data.test_mask)
    report = pv.evaluate(vae, rows, num_samples=300, seed=0)
    points = report.points
    assert (points["iw_log_likelihood"] >= points["elbo"] - 1e-5).all()  # the same 300 draws
    assert report.summary["iw_mean"] == pytest.approx(
        float(pv.iw_log_likelihood(vae, rows, num_samples=300, seed=0).mean()), abs=1e-3
    )
    every = (torch.cat([data.train, data.test]), torch.cat([data.train_mask, data.test_mask]))
    # E[IW_K] rises with K: small-K estimates averaged over 40 seeds, paired over 300 rows, beyond 2 s.e.
    iw = {
        k: torch.stack(
            [
                pv.iw_log_likelihood(vae, every, num_samples=k, seed=s)
                for s in range(40 if k < 100 else 1)
            ]
        ).mean(0)
        for k in (1, 10, 1000)
    }
    for lo, hi in ((1, 10), (10, 1000)):
        diff = iw[hi] - iw[lo]
        assert float(diff.mean()) > 2 * float(diff.std() / len(diff) ** 0.5), (lo, hi)


def test_iw_log_p_of_observed_cells_matches_quadrature_on_a_1d_latent():
    """The truth: a table with a 1-D latent, the trained model's exact log p(x_obs) by a dense grid."""
    rng = np.random.default_rng(4)
    n = 240
    z = rng.normal(size=n)
    f = pd.DataFrame(
        {
            "a": 1.5 * z + 0.3 + 0.5 * rng.normal(size=n),
            "b": 5000 - 800 * z + 200 * rng.normal(size=n),
            "c": np.array(["lo", "mid", "hi"])[
                np.clip(np.rint(z + 1 + 0.4 * rng.normal(size=n)), 0, 2).astype(int)
            ],
        }
    )
    f.loc[rng.random(n) < 0.2, "a"] = np.nan
    data = pv.load_dataset(f, seed=0, test_fraction=0.25)
    assert data.schema.types == {"a": "real", "b": "real", "c": "categorical"}
    vae = pv.VAE(
        3, 1, (), likelihood="auto", schema=data.schema
    )  # linear decoder: a linear-Gaussian table
    pv.fit(vae, data, "analytic", epochs=60, batch_size=60, lr=1e-2, seed=0, progress=False)
    rows = (data.test, data.test_mask)
    exact = pv.quadrature_log_likelihood(vae, rows, grid=4001, bounds=(-10.0, 10.0))
    iw = pv.iw_log_likelihood(vae, rows, num_samples=3000, seed=0)
    gap = (iw - exact).abs()
    # within 0.02 nats per row on average; single rows carry their Monte Carlo error (a few hundredths)
    assert float(gap.mean()) < 0.02 and float(gap.quantile(0.9)) < 0.02, gap
    # the grid agrees with scipy in original units for a fully observed row (independent of our code)
    from scipy import stats

    lik = vae.likelihood
    row = int(torch.nonzero(data.test_mask.all(1))[0])
    zz = np.linspace(-10, 10, 4001)
    with torch.no_grad():
        out = vae.decoder(torch.tensor(zz[:, None], dtype=torch.float32)).double().numpy()
    gauss, k, _ = lik.block("a")
    sd = gauss.scale().detach().double().numpy()
    orig = data.to_frame("test").iloc[row]
    logp = stats.norm.logpdf(zz)
    for j, name in enumerate(("a", "b")):
        c = data.schema[name]
        logp = logp + stats.norm.logpdf(orig[name], c.mean + c.std * out[:, j], c.std * sd[j])
    logits = out[:, 2:5]
    code = data.schema["c"].levels.index(orig["c"])
    logp = logp + logits[:, code] - np.log(np.exp(logits).sum(1))
    truth = np.log(np.trapezoid(np.exp(logp - logp.max()), zz)) + logp.max()
    assert float(exact[row]) == pytest.approx(truth, abs=1e-4)


def test_a_table_model_reloads_from_its_config_and_gives_the_same_log_p(tmp_path):
    data = pv.load_dataset(mixed(120), seed=0)
    vae = pv.VAE(len(data.schema), 2, (16,), likelihood={"visits": "zinb"}, schema=data.schema)
    pv.fit(vae, data, "analytic", epochs=1, batch_size=40, seed=0, progress=False)
    pv.save_checkpoint(tmp_path / "ck", vae)
    back, _ = pv.load_checkpoint(tmp_path / "ck")
    assert back.likelihood.specs == vae.likelihood.specs and back.mask_inputs
    rows = (data.test, data.test_mask)
    torch.testing.assert_close(
        pv.iw_log_likelihood(back, rows, num_samples=20, seed=3),
        pv.iw_log_likelihood(vae, rows, num_samples=20, seed=3),
    )


def test_samples_are_draws_in_the_users_terms_and_means_on_request():
    data = pv.load_dataset(mixed(200, holes=0.0), seed=0)
    vae = pv.VAE(len(data.schema), 2, (16,), likelihood="auto", schema=data.schema)
    pv.fit(vae, data, "analytic", epochs=3, batch_size=50, seed=0, progress=False)
    gen = torch.Generator().manual_seed(0)
    drawn = vae.sample_frame(400, generator=gen)
    assert list(drawn.columns) == list(data.schema.names)
    assert set(drawn["region"]) <= {"north", "south", "east"} and set(drawn["smoker"]) <= {
        "no",
        "yes",
    }
    assert str(drawn["visits"].dtype) == "Int64" and (drawn["dose"] > 0).all()
    means = vae.sample_frame(400, generator=torch.Generator().manual_seed(0), mean=True)
    # draws spread like data (the decoder's noise included); means do not
    assert drawn["income"].std() > 1.5 * means["income"].std()
    rec = vae.reconstruct_frame(data.test[:4], index=data.test_index[:4])
    assert list(rec.index) == list(data.test_index[:4])


def test_nan_in_a_tensor_is_missing_for_the_built_in_vae_and_refused_for_a_users_program():
    x = torch.randn(90, 3)
    x[::5, 1] = float("nan")
    filled, mask = split_missing(x)
    assert torch.isfinite(filled).all() and int((~mask).sum()) == 18
    vae = pv.VAE(3, 2, (8,), likelihood="gaussian")
    pv.fit(vae, x, "analytic", epochs=1, seed=0, progress=False)
    torch.testing.assert_close(
        pv.iw_log_likelihood(vae, x, num_samples=20, seed=0),
        pv.iw_log_likelihood(vae, (filled, mask), num_samples=20, seed=0),
    )

    def model(x):
        pass

    with pytest.raises(
        DataError, match=r"has missing values \(NaN\).*\.mask\(mask\)\.to_event\(1\)"
    ):
        pv.fit(pv.Program(model, model), x, "trace", epochs=1)
    data = pv.load_dataset(mixed(60), seed=0)
    with pytest.raises(DataError, match=r"missing cells and this program takes no mask"):
        pv.iw_log_likelihood(pv.Program(model, model), data, num_samples=5)


def test_a_dataframe_fits_directly_with_the_models_schema():
    f = mixed(100, holes=0.1)
    data = pv.load_dataset(f, seed=0)
    vae = pv.VAE(len(data.schema), 2, (8,), likelihood="auto", schema=data.schema)
    history = pv.fit(
        vae, f.drop(columns="id"), "analytic", epochs=1, batch_size=50, seed=0, progress=False
    )
    assert len(history.to_frame()) == 1
    with pytest.raises(
        UserError, match=r"likelihood='auto' chooses families by a table's column types"
    ):
        pv.VAE(5, 2, likelihood="auto")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pv.VAE(len(data.schema), 2, (8,), likelihood="auto", schema=data.schema)


def test_cli_sample_mean_flag_and_a_csv_refused_in_one_line_for_a_run_without_columns(
    tmp_path, capsys
):
    from ppl_vae.cli import main

    rng = np.random.default_rng(0)
    path = tmp_path / "t.npy"  # an array: no column names, so no CSV of samples
    np.save(path, np.stack([rng.normal(0, 1, 60), rng.normal(5, 2, 60)], axis=1))
    run = tmp_path / "run"
    assert main(["train", "--dataset", f"npy:{path}", "--epochs", "2", "--out", str(run)]) == 0
    draws, means = tmp_path / "d.npy", tmp_path / "m.npy"
    assert main(["sample", str(run), "-n", "200", "--out", str(draws)]) == 0
    assert main(["sample", str(run), "-n", "200", "--mean", "--out", str(means)]) == 0
    # draws of p(x | z) spread wider than its means (the Gaussian's noise on top)
    assert np.load(draws).std(0).min() > np.load(means).std(0).max()
    capsys.readouterr()
    assert main(["sample", str(run), "--out", str(tmp_path / "s.csv")]) == 2
    err = one_line_error(capsys, "a CSV needs a run trained on a table", ".npy")
    assert not (tmp_path / "s.csv").exists(), err
