"""``ppl-vae train | evaluate | impute | score`` on a CSV with empty cells, as a user runs them, killed too.

Commands run in forked children of ``tests/cli_forkserver.py`` (``ppl_vae.cli.main`` in its own process,
exactly as ``python -m ppl_vae.cli`` runs it, for milliseconds of start-up, so a SIGKILL lands anywhere).
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_forkserver import ForkServer
from sklearn.datasets import load_wine

RNG = random.Random(int(os.environ.get("PPL_VAE_CRASH_SEED", "0")))


@pytest.fixture(scope="module")
def server():
    s = ForkServer()
    yield s
    s.close()


@pytest.fixture(scope="module")
def trained(server, tmp_path_factory):
    """A CSV with 25% empty cells and a run trained on it (the MIWAE bound, iwae:k=5)."""
    root = tmp_path_factory.mktemp("missing")
    frame = load_wine(as_frame=True).frame.iloc[:, :6]
    rng = np.random.default_rng(0)
    hole = rng.random(frame.shape) < 0.25
    hole[hole.all(1), 0] = False
    frame.mask(hole).to_csv(root / "holes.csv", index=False)
    argv = ["train", "--dataset", root / "holes.csv", "--out", root / "run", "--epochs", "15"]
    argv += ["--objective", "iwae:k=5", "--hidden-dims", "32", "--latent-dim", "3"]
    argv += ["--batch-size", "32", "--no-progress"]
    rc, text, _ = server.call(argv, root / "train.log")
    assert rc == 0, text
    return root, frame, hole


def test_evaluate_reports_the_missing_fraction(server, trained):
    root, _, _ = trained
    rc, text, _ = server.call(["evaluate", root / "run", "-k", "200"], root / "eval.log")
    assert rc == 0, text
    line = next(ln for ln in text.splitlines() if ln.startswith("missing cells"))
    assert 0.15 < float(line.split()[2]) < 0.35 and "log p(x_obs)" in line


def test_impute_writes_beside_its_input_and_never_over_anything(server, trained):
    root, frame, hole = trained
    data, out = root / "holes.csv", root / "completed.csv"
    before = data.read_bytes()
    rc, text, _ = server.call(
        ["impute", root / "run", "--data", data, "--out", out, "-k", "200"], root / "i.log"
    )
    assert rc == 0, text
    assert data.read_bytes() == before
    done = pd.read_csv(out)
    assert list(done.columns) == list(frame.columns) and len(done) == len(frame)
    assert not done.isna().any().any()
    holes = pd.read_csv(data)
    np.testing.assert_allclose(done.to_numpy()[~hole], holes.to_numpy()[~hole], rtol=1e-12)
    first = out.read_bytes()
    rc, text, _ = server.call(
        ["impute", root / "run", "--data", data, "--out", out, "-k", "200"], root / "i.log"
    )
    assert rc == 2 and "already exists" in text and "--force" in text
    assert out.read_bytes() == first
    rc, text, _ = server.call(
        ["impute", root / "run", "--data", data, "--out", data, "--force"], root / "i.log"
    )
    assert rc == 2 and "is the input --data" in text and data.read_bytes() == before
    rc, text, _ = server.call(
        [
            "impute",
            root / "run",
            "--data",
            data,
            "--out",
            out,
            "-k",
            "200",
            "--force",
            "--seed",
            "1",
        ],
        root / "i.log",
    )
    assert rc == 0, text
    assert out.read_bytes() != first  # --force replaced it (another seed, other imputations)


def test_multiple_imputations_and_their_uncertainty(server, trained):
    root, frame, hole = trained
    out, cells = root / "multi.csv", root / "cells.csv"
    argv = ["impute", root / "run", "--data", root / "holes.csv", "--out", out]
    rc, text, _ = server.call(
        [*argv, "--multiple", "3", "--uncertainty", cells, "-k", "200"], root / "m.log"
    )
    assert rc == 0, text
    stacked = pd.read_csv(out)
    assert list(stacked.columns) == ["imputation", *frame.columns]
    assert stacked["imputation"].value_counts().sort_index().to_dict() == {
        m: len(frame) for m in (1, 2, 3)
    }
    per_cell = pd.read_csv(cells)
    assert len(per_cell) == int(hole.sum())
    assert {"row", "column", "value", "sd", "se", "ess", "khat", "reliable"} <= set(
        per_cell.columns
    )
    assert (per_cell["sd"] > 0).all() and (per_cell["ess"] >= 1).all()


def test_score_ranks_rows_of_a_new_csv(server, trained):
    root, frame, _ = trained
    new = pd.read_csv(root / "holes.csv").iloc[:40]
    new.iloc[0, 0] = 1e4  # an impossible alcohol content
    new.to_csv(root / "new.csv", index=False)
    out = root / "scores.csv"
    rc, text, _ = server.call(
        ["score", root / "run", "--data", root / "new.csv", "--out", out, "-k", "300"],
        root / "s.log",
    )
    assert rc == 0, text
    scores = pd.read_csv(out)
    assert list(scores.columns[:3]) == ["row", "log_px", "se"] and len(scores) == 40
    assert {"khat", "reliable", "reason", "rank", "n_observed"} <= set(scores.columns)
    assert scores.loc[scores["row"] == 0, "log_px"].item() == scores["log_px"].min()
    ranked = scores[scores["reliable"]]
    assert ranked["rank"].tolist() == list(range(1, len(ranked) + 1))
    assert scores.loc[~scores["reliable"], "rank"].isna().all()
    bad = new.drop(columns=[frame.columns[2]])
    bad.to_csv(root / "bad.csv", index=False)
    rc, text, _ = server.call(
        ["score", root / "run", "--data", root / "bad.csv", "--out", root / "b.csv"], root / "b.log"
    )
    assert rc == 2 and text.count("\n") == 1 and "Traceback" not in text, text


@pytest.mark.parametrize("command", ["impute", "score"])
def test_kill_9_leaves_no_partial_output_under_the_final_name(server, trained, command):
    root, frame, _ = trained
    out = root / f"killed_{command}.csv"
    argv = [command, root / "run", "--data", root / "holes.csv", "--out", out, "-k", "20000"]
    finished = 0
    for attempt in range(3):
        pid = server.run(argv, root / "k.log")
        time.sleep(RNG.uniform(0.2, 2.0))
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        rc = server.wait(pid)
        if out.exists():  # it finished before the kill: then the file is whole
            assert rc == 0
            assert len(pd.read_csv(out)) == len(frame)
            finished += 1
            out.unlink()
        else:
            assert rc == -signal.SIGKILL, (attempt, rc, Path(root / "k.log").read_text())
    assert finished < 3  # at least one kill landed mid-run


@pytest.mark.parametrize("command", ["impute", "score", "sample"])
def test_a_second_writer_into_a_users_folder_is_refused_and_leaves_nothing(
    server, trained, command
):
    """One writer per folder for the single-file commands too: a plain folder is locked by an flock on
    the folder itself (no lock file left in the user's folder)."""
    from ppl_vae.store.lock import lock_outputs

    root, _, _ = trained
    busy = root / f"busy_{command}"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    out = busy / ("s.png" if command == "sample" else "out.csv")
    argv = [command, root / "run", "--out", out]
    argv += [] if command == "sample" else ["--data", root / "holes.csv", "-k", "20"]
    with lock_outputs(busy / "other.csv"):  # this process writes into busy/
        rc, text, _ = server.call(argv, root / "busy.log")
    assert rc == 2 and text.count("\n") == 1 and "one writer per folder" in text, text
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]
    rc, text, _ = server.call(argv, root / "free.log")  # the lock released: the same call works
    assert rc == 0, text
    assert sorted(p.name for p in busy.iterdir()) == sorted(["notes.txt", out.name])


def test_sample_into_a_run_folder_being_written_is_refused_naming_the_writer(server, trained):
    from ppl_vae.store.lock import lock_folder

    root, _, _ = trained
    with lock_folder(root / "run"):  # as a train --resume of that run would
        rc, text, _ = server.call(
            ["sample", root / "run", "--out", root / "run" / "s.png"], root / "s.log"
        )
    assert rc == 2 and f"PID {os.getpid()}" in text and text.count("\n") == 1, text
    assert not (root / "run" / "s.png").exists()
