"""The command line's smaller promises, each as a user meets it: an override spelled as the flag or as
the setting, a parser error in one line, Ctrl-C at any moment (while torch imports too) quiet with exit
130, the kernel's file systems refused as outputs, and a hand-edited ``metrics.csv`` kept, not lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import one_line_error

from ppl_vae.cli import main

SMALL = ["--dataset", "digits", "--hidden-dims", "16", "--latent-dim", "2", "--no-progress"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("edges") / "run"
    assert main(["train", *SMALL, "--epochs", "1", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("spelling", ["batch-size", "batch_size"])
def test_an_override_may_be_spelled_as_the_flag_or_as_the_setting(run_dir, tmp_path, spelling):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    argv = ["train", "--out", str(out), "--resume", "--epochs", "1", "--no-progress"]
    assert main([*argv, "--override", spelling, "--batch-size", "64"]) == 0
    last = json.loads((out / "metrics.json").read_text())["history"][-1]
    assert last["override"] == {"batch_size": {"from": 128, "to": 64}}


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["train", "--lr", "nan"], "argument --lr: expected a positive finite number; got 'nan'"),
        (["train", "--seed", "-1"], "argument --seed: a seed is a whole number"),
        (["evaluate", "r", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["sample", "r"], "the following arguments are required: --out"),
        (["nope"], "argument COMMAND: invalid choice: 'nope'"),
    ],
)
def test_a_parser_error_is_one_line_naming_the_argument_and_the_help(argv, needle, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ppl-vae") and "usage:" not in err, err
    assert needle in err and "--help)" in err, err
    if argv[0] != "nope":  # said by the sub-command
        assert err.startswith(f"ppl-vae {argv[0]}: error: "), err


def test_ctrl_c_at_any_moment_is_one_line_and_exit_130(tmp_path):
    """The ``ppl-vae`` launcher imports nothing heavy, so a Ctrl-C while ``ppl_vae`` imports torch (about
    4 s) is as quiet as one during training."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    launcher = "import sys; from ppl_vae_cli import main; sys.exit(main())"
    for k, after in enumerate((0.3, 1.0, 2.0, 6.0)):  # during the imports ... during training
        argv = ["train", *SMALL, "--epochs", "500", "--out", str(tmp_path / f"r{k}")]
        proc = subprocess.Popen(
            [sys.executable, "-c", launcher, *argv], env=env, stderr=subprocess.PIPE, text=True
        )
        time.sleep(after)
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=120)[1]
        assert proc.returncode == 130, err
        assert err.count("\n") == 1 and err.rstrip().endswith("interrupted"), err


@pytest.mark.parametrize(
    "argv",
    [
        ["train", *SMALL, "--out", "/proc/ppl-vae-run"],
        ["compare", "--methods", "trace", "--out", "/proc/ppl-vae-cmp"],
        ["train", *SMALL, "--out", "/sys/ppl-vae-run"],
    ],
)
def test_the_kernels_file_systems_are_refused_as_outputs(argv, capsys):
    if not os.path.isdir("/proc/self"):
        pytest.skip("no /proc here")
    assert main(argv) == 2
    one_line_error(capsys, "file system (the kernel's interface, not storage)", argv[-1])


def test_evaluate_and_sample_into_proc_are_refused(run_dir, capsys):
    if not os.path.isdir("/proc/self"):
        pytest.skip("no /proc here")
    assert main(["evaluate", str(run_dir), "-k", "5", "--out", "/proc/ppl-vae-ev"]) == 2
    one_line_error(capsys, "'/proc/ppl-vae-ev' is on the proc file system")
    assert main(["sample", str(run_dir), "--out", "/proc/s.png"]) == 2
    one_line_error(capsys, "'/proc/s.png' is on the proc file system")


def test_a_hand_edited_metrics_csv_is_kept_beside_when_resume_rewrites_it(run_dir, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    argv = ["train", "--out", str(out), "--resume", "--epochs", "1", "--no-progress"]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # ppl_vae's own view: rewritten without a word
        assert main(argv) == 0
    edited = (out / "metrics.csv").read_text().replace("epoch,", "epoch (my note),")
    (out / "metrics.csv").write_text(edited)
    with pytest.warns(UserWarning, match="does not match the run's checkpoint") as said:
        assert main(argv) == 0
    aside = [p for p in out.iterdir() if p.name.startswith("metrics.edited-")]
    assert len(aside) == 1 and aside[0].read_text() == edited
    assert any(f"kept it as {aside[0].name}" in str(w.message) for w in said)
    assert (out / "metrics.csv").read_text().startswith("epoch,")
    assert len((out / "metrics.csv").read_text().splitlines()) == 1 + 3


def test_evaluation_points_are_the_rows_of_the_users_file(tmp_path):
    """A statistician maps an outlier in evaluation.csv back to their file: ``point`` is the row of the
    CSV (the dataset's row labels), not a position in the seeded split."""
    import numpy as np
    import pandas as pd

    from ppl_vae.data import load_dataset

    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(80, 3)), columns=["a", "b", "c"])
    frame.to_csv(tmp_path / "t.csv", index=False)
    run = tmp_path / "run"
    dataset = f"csv:{tmp_path / 't.csv'}"
    argv = [
        "train",
        "--dataset",
        dataset,
        "--hidden-dims",
        "8",
        "--latent-dim",
        "2",
        "--epochs",
        "1",
    ]
    assert main([*argv, "--no-progress", "--out", str(run)]) == 0
    assert main(["evaluate", str(run), "-k", "30", "--no-progress"]) == 0
    points = pd.read_csv(run / "evaluation" / "evaluation.csv")["point"]
    expected = load_dataset(dataset).test_index
    assert list(points) == list(expected) and list(points) != list(range(len(points)))


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path):
    """``ppl-vae compare ... | head -1``: no traceback, no 'internal error', exit 141 as a SIGPIPE'd
    command, and the outputs written before the print are whole."""
    import subprocess
    import sys

    argv = ["compare", "--dataset", "two_moons", "--methods", "analytic", "--seeds", "0"]
    argv += [
        "--epochs",
        "1",
        "--num-samples",
        "100",
        "--n-samples",
        "200",
        "--out",
        str(tmp_path / "c"),
    ]
    child = subprocess.Popen(
        [sys.executable, "-m", "ppl_vae.cli", *argv, "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    child.stdout.close()  # the reader is gone before anything is printed
    err = child.stderr.read().decode()
    assert child.wait(timeout=300) == 141, err
    assert "Traceback" not in err and "internal error" not in err and "Exception" not in err, err
    assert (tmp_path / "c" / "comparison" / "comparison.csv").is_file()
