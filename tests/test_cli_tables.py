"""``ppl-vae train | evaluate | sample | plot`` on a statistician's CSV, as a user runs them.

The table has a header, an ID column, strings (a binary and a four-level column, a few empty cells),
counts, and positive and real columns on scales from 1e-3 to 1e5. Every command runs in its own process
(``tests/cli_forkserver.py``: ``ppl_vae.cli.main`` in a forked child, as ``python -m ppl_vae.cli`` runs it).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from cli_forkserver import ForkServer

FAMILIES = {
    "age": ("real", "gaussian"),
    "income": ("positive", "lognormal"),
    "conc": ("positive", "lognormal"),
    "visits": ("count", "negbin"),
    "smoker": ("binary", "bernoulli"),
    "region": ("categorical", "categorical"),
}


def table(n: int = 240, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    frame = pd.DataFrame(
        {
            "patient_id": [f"P{i:04d}" for i in range(n)],
            "age": np.round(50 + 10 * z + rng.normal(0, 3, n), 1),
            "income": np.exp(11.5 + 0.5 * z + rng.normal(0, 0.3, n)) + 0.5,  # ~1e5, not integral
            "conc": np.exp(-7 + 0.5 * z + rng.normal(0, 0.3, n)),  # ~1e-3
            "visits": rng.poisson(np.exp(1 + 0.5 * z)),
            "smoker": np.where(rng.random(n) < 1 / (1 + np.exp(-2 * z)), "yes", "no"),
            "region": rng.choice(["north", "south", "east", "west"], n),
        }
    )
    frame.loc[[3, 17, 40], "age"] = np.nan
    frame.loc[[5, 9], "smoker"] = None
    return frame


@pytest.fixture(scope="module")
def server():
    s = ForkServer()
    yield s
    s.close()


@pytest.fixture(scope="module")
def trained(server, tmp_path_factory):
    root = tmp_path_factory.mktemp("tables")
    table().to_csv(root / "patients.csv", index=False)
    argv = ["train", "--dataset", f"csv:{root / 'patients.csv'}", "--out", root / "run"]
    argv += ["--epochs", "20", "--hidden-dims", "32", "--latent-dim", "2", "--batch-size", "32"]
    rc, text, _ = server.call([*argv, "--no-progress"], root / "train.log")
    assert rc == 0, text
    return root, text


def test_train_prints_the_schema_once_records_it_and_scores_in_the_datas_units(server, trained):
    root, text = trained
    for column, (kind, family) in FAMILIES.items():
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(column + " "))
        assert kind in line and line.rstrip().endswith(f"-> {family}"), line
    assert "patient_id  left out: ID-like" in text
    assert "differ in scale" not in text  # the table likelihoods standardise for their networks
    settings = json.loads((root / "run" / "settings.json").read_text())["settings"]
    assert settings["flags"]["likelihood"] == "table"
    assert settings["model"]["likelihood"]["families"] == {c: f for c, (_, f) in FAMILIES.items()}
    recorded = {c["name"]: c["type"] for c in settings["data"]["schema"]["columns"]}
    assert recorded == {c: t for c, (t, _) in FAMILIES.items()}
    history = pd.read_csv(root / "run" / "metrics.csv")
    # nats per row in the data's units (a Gaussian on the raw values scores about -1e8 here); and it learns
    assert -40 < history["test_elbo"].iloc[-1] < -5
    assert history["test_elbo"].iloc[-1] > history["test_elbo"].iloc[0]
    # a resume rebuilds the same families and does not print the schema again
    rc, more, _ = server.call(
        ["train", "--out", root / "run", "--resume", "--epochs", "1", "--no-progress"],
        root / "resume.log",
    )
    assert rc == 0 and "left out" not in more and "differ in scale" not in more, more


def test_evaluate_reports_each_columns_share_and_sample_writes_the_users_columns(server, trained):
    root, _ = trained
    rc, text, _ = server.call(
        ["evaluate", root / "run", "--num-samples", "100"], root / "evaluate.log"
    )
    assert rc == 0, text
    block = text[text.index("per column:") :].splitlines()
    for column, (kind, family) in FAMILIES.items():
        row = next(ln for ln in block if ln.startswith(column + " "))
        assert kind in row and family in row, row
    points = pd.read_csv(root / "run" / "evaluation" / "evaluation.csv")
    assert {f"column:{c}" for c in FAMILIES} <= set(points.columns)
    assert points["point"].str.startswith("P").all()  # rows named by the ID column
    assert np.isfinite(points["iw_log_likelihood"]).all()
    assert (points["iw_log_likelihood"] >= points["elbo"] - 1e-6).mean() > 0.95

    rc, text, _ = server.call(
        ["sample", root / "run", "-n", "400", "--out", root / "s.csv"], root / "sample.log"
    )
    assert rc == 0, text
    draws, data = pd.read_csv(root / "s.csv"), table()
    assert list(draws.columns) == list(FAMILIES)
    assert set(draws["region"]) <= {"north", "south", "east", "west"}
    assert set(draws["smoker"]) <= {"yes", "no"}
    assert draws["visits"].dtype.kind == "i" and (draws["visits"] >= 0).all()
    assert (draws["income"] > 0).all() and (draws["conc"] > 0).all()
    # draws of p(x | z), in the data's units and spread (not decoded means, which are narrower)
    for column in ("age", "income", "conc"):
        ratio = draws[column].std() / data[column].std()
        assert 0.5 < ratio < 2, (column, ratio)
    rc, text, _ = server.call(["plot", root / "run"], root / "plot.log")
    assert rc == 0, text


@pytest.mark.parametrize(
    "flags, needles",
    [
        (["--column-type", "visits=weird"], ["--column-type visits=weird", "count"]),
        (["--column-type", "nosuch=count"], ["'nosuch'", "patient_id, age"]),
        (["--column-type", "age=count"], ["'age'", "rows 0, 1", "--column-type age=real"]),
        (["--column-type", "region=count"], ["'region'", "'north'", "region=categorical"]),
        (["--column-likelihood", "region=gaussian"], ["'region'", "--column-likelihood region="]),
        (["--column-likelihood", "nosuch=poisson"], ["'nosuch'", "age, income"]),
        (["--column-type", "visits=count", "--column-type", "visits=real"], ["'visits'", "twice"]),
        (["--model", "m2", "--column-likelihood", "visits=poisson"], ["--model vae or hvae"]),
    ],
)
def test_every_refusal_is_one_line_naming_the_column_and_writes_nothing(
    server, trained, flags, needles
):
    root, _ = trained
    out = root / f"refused-{abs(hash(tuple(flags)))}"
    argv = ["train", "--dataset", f"csv:{root / 'patients.csv'}", "--out", out, "--epochs", "1"]
    rc, text, _ = server.call([*argv, *flags, "--no-progress"], root / "refused.log")
    assert rc == 2, text
    assert text.count("\n") == 1 and text.startswith("ppl-vae train: error: "), text
    for needle in needles:
        assert needle in text, text
    assert not out.exists()


def test_declared_types_families_and_standardize_are_recorded_and_kept_on_resume(server, trained):
    root, _ = trained
    out = root / "declared"
    argv = ["train", "--dataset", f"csv:{root / 'patients.csv'}", "--out", out, "--epochs", "2"]
    argv += ["--column-type", "visits=real", "--column-likelihood", "income=gaussian"]
    argv += ["--standardize", "--hidden-dims", "16", "--no-progress"]
    rc, text, _ = server.call(argv, root / "declared.log")
    assert rc == 0, text
    settings = json.loads((out / "settings.json").read_text())["settings"]
    assert settings["data"]["args"]["types"] == {"visits": "real"}
    assert settings["data"]["args"]["standardize"] is True
    families = settings["model"]["likelihood"]["families"]
    assert families["visits"] == "gaussian" and families["income"] == "gaussian"
    assert families["conc"] == "lognormal"
    rc, text, _ = server.call(
        ["train", "--out", out, "--resume", "--column-type", "visits=count", "--no-progress"],
        root / "declared-resume.log",
    )
    assert rc == 2 and "--column-type" in text and "cannot change" in text, text


def test_compare_on_the_csv_gives_every_model_the_tables_families(server, trained):
    root, _ = trained
    out = root / "compared"
    argv = ["compare", "--dataset", f"csv:{root / 'patients.csv'}", "--out", out, "--epochs", "3"]
    argv += ["--models", "vae:latent=1", "vae:latent=2", "--objectives", "analytic", "--seeds", "0"]
    argv += ["--num-samples", "100", "--hidden-dims", "16", "--no-progress"]
    rc, text, _ = server.call(argv, root / "compare.log")
    assert rc == 0, text
    assert "differ in scale" not in text
    ranking = pd.read_csv(out / "comparison" / "ranking.csv")
    # log p(x) in the data's units for both models (a Gaussian on the raw values: about -1e8)
    assert ranking["log_px"].between(-40, -5).all(), ranking


def test_score_and_impute_name_the_rows_by_the_id_column(server, trained):
    root, _ = trained
    rc, text, _ = server.call(
        ["score", root / "run", "--data", root / "patients.csv", "--out", root / "scores.csv"],
        root / "score.log",
    )
    assert rc == 0, text
    scores = pd.read_csv(root / "scores.csv")
    assert scores.columns[0] == "patient_id" and scores["patient_id"].str.startswith("P").all()
    argv = ["impute", root / "run", "--data", root / "patients.csv", "--out", root / "done.csv"]
    rc, text, _ = server.call([*argv, "--uncertainty", root / "cells.csv"], root / "impute.log")
    assert rc == 0, text
    cells = pd.read_csv(root / "cells.csv")
    assert set(cells["row"]) == {"P0003", "P0017", "P0040", "P0005", "P0009"}
    done = pd.read_csv(root / "done.csv")
    assert done["smoker"].notna().all() and set(done["smoker"]) <= {"yes", "no"}
