"""MLflow tracking against a real local MLflow store, read back as a user would (``mlflow.search_runs``).

One store is made for the module (creating MLflow's SQLite schema takes seconds); each test logs into its
own experiment. ``ppl-vae train --log mlflow`` runs as a subprocess in the store's folder with no
``MLFLOW_TRACKING_URI``, so it finds MLflow's default local store there, as a user's would.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import one_line_error

import ppl_vae as pv
from ppl_vae import cli

mlflow = pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A folder holding MLflow's default local store (made once), the working directory of the tests."""
    folder = tmp_path_factory.mktemp("mlflow-store")
    old = Path.cwd()
    os.chdir(folder)
    try:
        uri = (
            mlflow.get_tracking_uri()
        )  # MLflow's default for this folder, as a user's process sees it
        mlflow.MlflowClient(uri).search_experiments()  # creates the store
    finally:
        os.chdir(old)
    return folder, uri


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def test_train_resume_evaluate_round_trip(store, monkeypatch, capsys):
    folder, uri = store
    monkeypatch.chdir(folder)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "cli")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    train = ["train", "--dataset", "two_moons", "--n-samples", "300", "--epochs", "2"]
    done = subprocess.run(
        [sys.executable, "-m", "ppl_vae.cli", *train, "--out", "run", "--log", "mlflow"],
        env=dict(env, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    recorded = json.loads((folder / "run" / "mlflow.json").read_text())
    assert recorded["tracking_uri"] == uri  # MLflow's local default in the working directory
    # --resume logs into the same MLflow run (the log choice is recorded in settings.json)
    assert cli.main(["train", "--out", "run", "--resume", "--epochs", "1", "--no-progress"]) == 0
    assert cli.main(["evaluate", "run", "-k", "100", "--no-progress"]) == 0
    assert "logged to MLflow run " + recorded["run_id"] in capsys.readouterr().out

    runs = mlflow.search_runs(experiment_names=["cli"], output_format="list")
    assert [r.info.run_id for r in runs] == [recorded["run_id"]]
    (run,) = runs
    assert run.info.status == "FINISHED"
    flags = json.loads((folder / "run" / "settings.json").read_text())["settings"]["flags"]
    expected = {
        k: v if isinstance(v, str) else json.dumps(v) for k, v in flags.items() if v is not None
    }
    assert {k: run.data.params[k] for k in expected} == expected
    rows = _csv(folder / "run" / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    client = mlflow.MlflowClient(uri)
    for key in ("train_elbo", "test_elbo", "seconds", "kl_weight", "step"):
        assert _history(client, run.info.run_id, key) == [
            (int(r["epoch"]), float(r[key])) for r in rows
        ], key
    summary = json.loads((folder / "run" / "evaluation" / "evaluation.json").read_text())
    for key in ("iw_mean", "elbo_mean", "gap_mean", "khat_share_above_0.7", "active_units"):
        assert math.isclose(run.data.metrics[f"evaluation/test/{key}"], summary[key], rel_tol=1e-12)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "run")}
    assert {"run/checkpoint", "run/metrics.csv", "run/settings.json"} <= artifacts
    assert "run/.lock" not in artifacts
    evaluated = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation/test")}
    assert "evaluation/test/evaluation.json" in evaluated


def test_fit_logs_into_the_active_run_and_leaves_it_open(store, monkeypatch):
    folder, uri = store
    monkeypatch.chdir(folder)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    data = pv.load_dataset("two_moons", n_samples=200, seed=0)
    vae = pv.VAE(2, 2, (16,), likelihood="gaussian")
    experiment = mlflow.MlflowClient(uri).create_experiment("fit")
    with mlflow.start_run(experiment_id=experiment) as active:
        history = pv.fit(vae, data, epochs=2, lr=3e-3, log="mlflow", progress=False)
        assert mlflow.active_run().info.run_id == active.info.run_id
    run = mlflow.get_run(active.info.run_id)
    assert run.data.params["objective"] == "analytic" and run.data.params["lr"] == "0.003"
    assert json.loads(run.data.params["model.hidden_dims"]) == [16]
    client = mlflow.MlflowClient(uri)
    assert _history(client, run.info.run_id, "test_elbo") == [
        (r["epoch"], r["test_elbo"]) for r in history
    ]
    # without an active run, fit makes one and ends it
    pv.fit(vae, data, epochs=1, log="mlflow", progress=False)
    assert mlflow.active_run() is None


def test_missing_mlflow_is_one_line_and_nothing_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    x = torch.randn(20, 2)
    with pytest.raises(pv.UserError, match=r"pip install 'ppl_vae\[mlflow\]'"):
        pv.fit(pv.VAE(2, 2, (8,), likelihood="gaussian"), x, epochs=1, log="mlflow")
    with pytest.raises(pv.UserError, match="log='wandb' is not a tracker"):
        pv.fit(pv.VAE(2, 2, (8,), likelihood="gaussian"), x, epochs=1, log="wandb")
    out = tmp_path / "run"
    argv = ["train", "--dataset", "two_moons", "--out", str(out), "--log", "mlflow"]
    assert cli.main(argv) == 2
    one_line_error(capsys, "ppl_vae[mlflow]")
    assert not out.exists()
