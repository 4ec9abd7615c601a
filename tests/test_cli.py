"""The command line: runs, refusals that leave the user's files alone (and advice that works), and the
user-error contract: a user error is one line with exit 2, a bug a traceback with exit 1."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from helpers import files_of, one_line_error

from ppl_vae.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:.*num_samples=.* unreliable:UserWarning")

SMALL = ["--dataset", "digits", "--hidden-dims", "32", "--latent-dim", "4", "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", *SMALL, "--epochs", "2", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("objective", ["trace", "analytic"])
def test_train_writes_a_run_with_rising_test_elbo(tmp_path, objective, capsys):
    out = tmp_path / objective
    rc = main(
        [
            "train",
            "--dataset",
            "digits",
            "--objective",
            objective,
            "--epochs",
            "3",
            "--out",
            str(out),
            "--no-progress",
            "--lr",
            "3e-3",
        ]
    )
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    tests = [r["test_elbo"] for r in metrics["history"]]
    assert len(tests) == 3 and all(math.isfinite(t) for t in tests)
    assert tests[-1] > tests[0], tests
    assert metrics["final_test_elbo"] == tests[-1]
    assert metrics["config"]["objective"] == objective
    assert metrics["config"]["data_args"]["binarize"] == "dynamic"
    assert (out / "settings.json").is_file() and (out / "metrics.csv").is_file()
    assert (out / "checkpoint" / "CURRENT.json").is_file()
    assert "test ELBO" in capsys.readouterr().out


def test_resume_keeps_the_recorded_objective_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                *SMALL,
                "--objective",
                "iwae:k=3",
                "--batch-size",
                "64",
                "--epochs",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    before = files_of(out / "checkpoint")
    assert main(["train", *SMALL, "--epochs", "1", "--out", str(out)]) == 2
    one_line_error(capsys, "already holds a run: pass --resume")
    assert files_of(out / "checkpoint") == before
    assert (
        main(["train", "--out", str(out), "--resume", "--objective", "trace", "--no-progress"]) == 2
    )
    one_line_error(
        capsys,
        "--objective trace differs from the run's objective iwae:k=3",
        "--override objective",
    )
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 0
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert {r["objective"] for r in history} == {"iwae:k=3"}
    assert (
        main(
            [
                "train",
                "--out",
                str(out),
                "--resume",
                "--epochs",
                "1",
                "--objective",
                "trace",
                "--override",
                "objective",
                "--no-progress",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "override: objective iwae:k=3 -> trace" in printed
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert (
        history[-1]["objective"] == "trace"
        and history[-1]["override"]["objective"]["to"] == "trace"
    )


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--dataset", "nope"], "unknown dataset 'nope'"),
        (["train", "--objective", "nope"], "unknown objective 'nope'"),
        (
            ["train", "--dataset", "digits", "--likelihood", "bernoulli", "--binarize", "none"],
            "binarize",
        ),
        (["train", "--dataset", "mnist", "--data-dir", "/nonexistent"], "mnist"),
        (["train", "--latent-dim", "100000000000"], "needs about"),
        (
            ["train", "--model", "ae", "--objective", "trace"],
            "--objective and --likelihood are for --model vae",
        ),
        (["train", "--out", ""], "the path is empty"),
    ],
)
def test_user_errors_exit_2_with_one_line_and_make_nothing(tmp_path, argv, message, capsys):
    rc = main(
        [
            *argv,
            "--epochs",
            "1",
            "--no-progress",
            *(["--out", str(tmp_path / "r")] if "--out" not in argv else []),
        ]
    )
    assert rc == 2
    one_line_error(capsys, message)
    assert not (tmp_path / "r" / "checkpoint").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--out", "x", "--time-budget", "-1"],
        ["train", "--out", "x", "--time-budget", "nan"],
        ["train", "--out", "x", "--lr", "inf"],
        ["train", "--out", "x", "--epochs", "1e3"],
        ["train", "--out", "x", "--seed", "-3"],
        ["sample", "r", "--out", "x.npy", "-n", "1e11"],
    ],
)
def test_malformed_numbers_are_refused_by_the_parser(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument" in err and "Traceback" not in err


def test_sizes_are_checked_against_memory_before_allocating(tmp_path, monkeypatch, capsys, run_dir):
    monkeypatch.setattr("ppl_vae._checks.available_memory", lambda: 1 << 30)
    assert (
        main(["train", *SMALL, "--hidden-dims", "20000,20000", "--out", str(tmp_path / "r")]) == 2
    )
    one_line_error(capsys, "hidden_dims (20000, 20000)", "GiB of memory", "1.0 GiB available")
    assert not (tmp_path / "r").exists()
    assert (
        main(["sample", str(run_dir), "-n", "100000000000", "--out", str(tmp_path / "s.npy")]) == 2
    )
    one_line_error(capsys, "sample -n 100000000000", "needs about", "ask for fewer samples")


def test_a_bug_is_a_traceback_with_exit_1_and_ctrl_c_is_130(tmp_path, monkeypatch, capsys):
    import ppl_vae.runs.folder as folder

    def bug(*args, **kwargs):
        raise ValueError("an internal invariant broke")  # a plain ValueError is not a user error

    monkeypatch.setattr(folder, "fit", bug)
    assert main(["train", *SMALL, "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "an internal invariant broke" in err and "this is a bug" in err

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(folder, "fit", interrupted)
    assert main(["train", *SMALL, "--out", str(tmp_path / "r2")]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_demo_writes_beside_an_existing_demo_and_deletes_nothing(tmp_path, capsys):
    demo = tmp_path / "demo"
    (demo / "trace").mkdir(parents=True)
    (demo / "trace" / "notes.txt").write_text("my notes")
    before = files_of(demo)
    assert main(["demo", "--out", str(demo), "--epochs", "1"]) == 0
    captured = capsys.readouterr()
    assert f"writing this one into {tmp_path / 'demo-2'}" in captured.err
    assert files_of(demo) == before
    assert (tmp_path / "demo-2" / "trace" / "settings.json").is_file()
    assert (tmp_path / "demo-2" / "analytic" / "metrics.json").is_file()
    assert "TraceMeanField_ELBO" in captured.out


def test_sample_evaluate_and_plot_refuse_to_replace_files_unless_forced(tmp_path, capsys, run_dir):
    target = tmp_path / "s.npy"
    target.write_bytes(b"mine")
    assert main(["sample", str(run_dir), "-n", "4", "--out", str(target)]) == 2
    one_line_error(capsys, "already exists", "--force")
    assert target.read_bytes() == b"mine"
    assert main(["sample", str(run_dir), "-n", "4", "--out", str(target), "--force"]) == 0
    assert np.load(target).shape == (4, 64)
    assert main(["sample", str(run_dir), "--out", str(tmp_path)]) == 2
    one_line_error(capsys, "is a folder")

    assert main(["evaluate", str(run_dir), "-k", "21", "--max-points", "20"]) == 0
    summary = (run_dir / "evaluation" / "evaluation.json").read_bytes()
    assert main(["evaluate", str(run_dir), "-k", "22", "--max-points", "20"]) == 2
    one_line_error(capsys, "already holds evaluation/ (K=21", "--force", "--out OTHER_FOLDER")
    assert (run_dir / "evaluation" / "evaluation.json").read_bytes() == summary
    assert (
        main(
            [
                "evaluate",
                str(run_dir),
                "-k",
                "22",
                "--max-points",
                "20",
                "--out",
                str(tmp_path / "ev"),
            ]
        )
        == 0
    )
    assert main(["evaluate", str(run_dir), "-k", "22", "--max-points", "20", "--force"]) == 0
    assert json.loads((run_dir / "evaluation" / "evaluation.json").read_text())["num_samples"] == 22
    assert main(["evaluate", str(run_dir), "--out", ""]) == 2
    one_line_error(capsys, "the path is empty")

    assert main(["plot", str(run_dir), "--kind", "curves"]) == 0
    png = (run_dir / "curves.png").read_bytes()
    assert main(["plot", str(run_dir), "--kind", "curves"]) == 2
    one_line_error(capsys, "already holds curves.png", "--force")
    assert (run_dir / "curves.png").read_bytes() == png
    assert main(["plot", str(run_dir), "--kind", "curves", "--force"]) == 0


def test_an_unwritable_folder_is_refused_before_any_work(tmp_path, monkeypatch, capsys, run_dir):
    import ppl_vae._checks as checks

    real = checks.os.access
    locked = [tmp_path / "ro", run_dir]  # as a read-only mount would be (root ignores chmod)
    monkeypatch.setattr(
        checks.os,
        "access",
        lambda p, mode: False if any(str(p).startswith(str(f)) for f in locked) else real(p, mode),
    )
    (tmp_path / "ro").mkdir()
    assert main(["train", *SMALL, "--out", str(tmp_path / "ro" / "run")]) == 2
    one_line_error(capsys, "cannot write in", "read-only file system")
    assert not (tmp_path / "ro" / "run").exists()
    assert main(["evaluate", str(run_dir), "-k", "21"]) == 2
    one_line_error(capsys, "cannot write in", "--out OTHER_FOLDER")
    assert (
        main(
            [
                "evaluate",
                str(run_dir),
                "-k",
                "21",
                "--max-points",
                "10",
                "--out",
                str(tmp_path / "ev"),
            ]
        )
        == 0
    )
    assert (tmp_path / "ev" / "evaluation" / "evaluation.json").is_file()


@pytest.mark.filterwarnings("ignore:num_samples=3:UserWarning")
def test_compare_refuses_an_existing_folder_unless_forced(tmp_path, capsys):
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "comparison.csv").write_text("mine")
    argv = [
        "compare",
        "--methods",
        "trace",
        "--epochs",
        "1",
        "--num-samples",
        "3",
        "--hidden-dims",
        "16",
        "--latent-dim",
        "2",
        "--n-samples",
        "100",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 2
    one_line_error(capsys, "exists and is not empty", "--force")
    assert (out / "comparison.csv").read_text() == "mine"
    assert main([*argv, "--force"]) == 0
    assert (out / "comparison" / "comparison.csv").read_text().startswith("method,")
    assert (
        out / "comparison.csv"
    ).read_text() == "mine"  # the user's file is not ppl_vae's to replace
    (tmp_path / "file").write_text("x")
    assert main([*argv[:-3], "--out", str(tmp_path / "file")]) == 2
    one_line_error(capsys, "is a file, not a folder")


def test_evaluate_and_plot_on_a_run_without_a_completed_epoch_say_so(tmp_path, capsys, monkeypatch):
    import ppl_vae.runs.folder as folder

    monkeypatch.setattr(folder, "fit", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    assert main(["train", *SMALL, "--out", str(tmp_path / "r")]) == 130
    monkeypatch.undo()
    capsys.readouterr()
    for argv in (
        ["evaluate", str(tmp_path / "r")],
        ["plot", str(tmp_path / "r"), "--kind", "curves"],
        ["sample", str(tmp_path / "r"), "--out", str(tmp_path / "s.png")],
    ):
        assert main(argv) == 2
        one_line_error(capsys, "no completed epoch yet", "--resume")
    assert (
        main(["train", "--out", str(tmp_path / "r"), "--resume", "--epochs", "1", "--no-progress"])
        == 0
    )


def test_console_script_help_runs():
    out = subprocess.run(
        [sys.executable, "-m", "ppl_vae.cli", "train", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for option in (
        "--objective",
        "--epochs",
        "--out",
        "--resume",
        "--override",
        "--log",
        "--binarize",
    ):
        assert option in out
