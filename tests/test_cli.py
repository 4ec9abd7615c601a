"""The command line: train writes a run folder, user errors exit 2 with one line and overwrite nothing."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from ppl_vae.cli import main


@pytest.mark.parametrize("objective", ["trace", "analytic"])
def test_train_writes_metrics_with_rising_test_elbo(tmp_path, objective, capsys):
    out = tmp_path / objective
    rc = main(["train", "--dataset", "digits", "--objective", objective, "--epochs", "3",
               "--out", str(out), "--no-progress", "--lr", "3e-3"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    tests = [r["test_elbo"] for r in metrics["history"]]
    assert len(tests) == 3 and all(math.isfinite(t) for t in tests)
    assert tests[-1] > tests[0], tests
    assert metrics["final_test_elbo"] == tests[-1]
    assert metrics["config"]["objective"] == objective
    assert metrics["config"]["data_args"]["binarize"] == "dynamic"
    assert (out / "checkpoint" / "model.safetensors").is_file()
    assert "test ELBO" in capsys.readouterr().out


def test_resume_continues_and_refuses_to_overwrite(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--epochs", "1", "--out", out, "--no-progress"]) == 0
    before = (tmp_path / "run" / "checkpoint" / "model.safetensors").read_bytes()
    assert main(["train", "--epochs", "1", "--out", out, "--no-progress"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "run" / "checkpoint" / "model.safetensors").read_bytes() == before
    assert main(["train", "--epochs", "2", "--out", out, "--resume", "--no-progress"]) == 0
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3]


@pytest.mark.parametrize("argv,message", [
    (["train", "--dataset", "nope"], "unknown dataset 'nope'"),
    (["train", "--objective", "nope"], "unknown objective 'nope'"),
    (["train", "--dataset", "digits", "--likelihood", "bernoulli", "--binarize", "none"], "binarize"),
    (["train", "--dataset", "mnist", "--data-dir", "/nonexistent"], "mnist"),
])
def test_user_errors_exit_2_with_one_line(tmp_path, argv, message, capsys):
    rc = main([*argv, "--epochs", "1", "--out", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "r" / "checkpoint").exists()


def test_console_script_help_runs():
    out = subprocess.run([sys.executable, "-m", "ppl_vae.cli", "train", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for option in ("--objective", "--epochs", "--out", "--resume", "--binarize"):
        assert option in out
