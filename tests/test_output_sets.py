"""Every file a command writes is as safe as a checkpoint: attacked as a user's shell would, each command a
subprocess (``tests/cli_forkserver.py``: a forked ``ppl_vae.cli.main``, so a kill costs milliseconds).

- ``evaluate`` and ``compare`` commit their outputs as one set (``OUT/evaluation/``, ``OUT/comparison/``):
  killed at every step of the commit (``PPL_VAE_FAULT_AT``, the checkpoints' hook) or at random moments,
  the folder holds the previous set or the new one, complete, never a mix and never a torn netCDF.
- One writer per folder: two ``evaluate RUN`` or two ``compare --out C`` at once, one is refused naming the
  holder's PID; a reader racing a writer always reads one whole set.
- A full disk (a file-size limit, as ``RLIMIT_FSIZE``), ``ENOSPC`` and ``EIO`` at any writer (netCDF,
  PNG, CSV, ``.npy``) is one line, exit 2, the previous outputs intact and no temporary file left.
- An evaluation records the epoch and checkpoint set it evaluated; a reader is told when the run has
  moved on.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from cli_forkserver import ForkServer
from test_crash import ARGS

from ppl_vae.errors import ResourceError
from ppl_vae.store.outputs import commit_output_set, read_output_set

pytestmark = pytest.mark.filterwarnings("ignore:.*num_samples=.* unreliable:UserWarning")
RNG = random.Random(int(os.environ.get("PPL_VAE_CRASH_SEED", "0")))
EVAL = ["-k", "30", "--max-points", "60", "--no-progress"]
COMPARE = [
    "compare",
    "--methods",
    "trace",
    "--epochs",
    "1",
    "--num-samples",
    "5",
    "--hidden-dims",
    "16",
    "--latent-dim",
    "2",
    "--n-samples",
    "100",
    "--no-progress",
]
PNG_END = b"IEND\xaeB`\x82"


@pytest.fixture(scope="module")
def server():
    s = ForkServer()
    yield s
    s.close()


@pytest.fixture(scope="module")
def evaluated(server, tmp_path_factory):
    """A 2-epoch run with an evaluation (K=30) committed in it."""
    base = tmp_path_factory.mktemp("sets")
    run = base / "run"
    rc, text, _ = server.call(
        [*ARGS[:-3], "--epochs", "2", "--no-progress", "--out", run], base / "l"
    )
    assert rc == 0, text
    rc, text, _ = server.call(["evaluate", run, *EVAL], base / "l2")
    assert rc == 0, text
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out, symlinks=True)
    return out


def _one_line(text: str, *needles: str) -> None:
    errors = [line for line in text.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "Traceback" not in text, text
    for needle in needles:
        assert needle in errors[0], text


def check_evaluation(folder: Path) -> int:
    """``folder/evaluation`` is one complete set; returns its K. Every file matches the manifest, the
    summary, the table, the netCDF and both figures are of the same evaluation."""
    import arviz as az
    import pandas as pd

    found = read_output_set(folder, "evaluation")  # each file's SHA-256 against the manifest
    assert sorted(found.files) == sorted(
        ["evaluation.json", "evaluation.csv", "evaluation.nc", "khat.png", "gap_hist.png"]
    )
    k = found.record["num_samples"]
    summary = json.loads(
        (folder / "evaluation" / "evaluation.json").read_text()
    )  # as a user reads it
    assert summary["num_samples"] == k and summary["epoch"] == found.record["epoch"]
    points = pd.read_csv(folder / "evaluation" / "evaluation.csv")
    assert len(points) == summary["n"]
    idata = az.from_netcdf(folder / "evaluation" / "evaluation.nc")
    assert idata.importance["log_weight"].shape == (summary["n"], k)
    assert int(idata.attrs["num_samples"]) == k
    for png in ("khat.png", "gap_hist.png"):
        assert found.files[png].endswith(PNG_END)
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".evaluation")]
    return k


def _leftovers(folder: Path, name: str) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(f".{name}.")]


# ----------------------------------------------------------------------------- faults and kills
#: steps of evaluate's commit (5 files and the manifest: write, fsync each; the folder; the switch; ...):
#: the first file, the netCDF, a PNG, the manifest, the folder's fsync, the switch, after it
EVALUATE_FAULTS = [
    "write:1",
    "write:3",
    "write:4",
    "fsync:6",
    "fsync:7",
    "rename:1",
    "fsync:8",
    "remove:1",
]


@pytest.mark.parametrize("fault", EVALUATE_FAULTS)
def test_evaluate_killed_at_a_step_of_its_commit_leaves_one_whole_set(
    server, evaluated, tmp_path, fault
):
    run = _copy(evaluated, tmp_path)
    argv = ["evaluate", run, "-k", "40", "--max-points", "60", "--no-progress", "--force"]
    rc, text, _ = server.call(argv, tmp_path / "log", env={"PPL_VAE_FAULT_AT": fault})
    assert rc == 137, f"the fault {fault} was not reached: {text}"
    k = check_evaluation_after_crash(run)
    switched = fault in ("fsync:8", "remove:1")
    assert k == (40 if switched else 30)  # the old set until the switch, the new one after it
    rc, text, _ = server.call(argv, tmp_path / "log")  # the user runs it again: leftovers tidied
    assert rc == 0, text
    assert check_evaluation(run) == 40 and not _leftovers(run, "evaluation")


def check_evaluation_after_crash(run: Path) -> int:
    """After a crash: the set reads whole (leftovers of the crashed writer may remain, ours by name)."""
    found = read_output_set(run, "evaluation")
    summary = json.loads(found.files["evaluation.json"])
    assert summary["num_samples"] == found.record["num_samples"]
    assert found.files["khat.png"].endswith(PNG_END)
    return summary["num_samples"]


@pytest.mark.parametrize("fault", ["rename:1"])
def test_compare_killed_at_a_step_of_its_save_leaves_one_whole_set(server, tmp_path, fault):
    out = tmp_path / "cmp"
    rc, text, _ = server.call([*COMPARE, "--out", out], tmp_path / "log")
    assert rc == 0, text
    before = read_output_set(out, "comparison").files
    # training and evaluation write nothing: the faults land in the save of seed 1's comparison
    argv = [*COMPARE, "--seeds", "1", "--out", out, "--force"]
    rc, text, _ = server.call(argv, tmp_path / "log", env={"PPL_VAE_FAULT_AT": fault})
    assert rc == 137, text
    found = read_output_set(out, "comparison")
    assert found.files == before and found.record["seeds"] == [0]
    rc, text, _ = server.call(argv, tmp_path / "log")
    assert rc == 0, text
    assert read_output_set(out, "comparison").record["seeds"] == [1]
    assert not _leftovers(out, "comparison")


def _crash_commit_at_every_step(tmp_path: Path, name: str, old: dict, new: dict) -> int:
    """Fork a writer that commits ``new`` over ``old`` and dies (os._exit 137, as kill -9) before its
    N-th step, for N = 1, 2, ... until it completes; after each crash a reader gets one whole set, and
    the next commit tidies what the crash left. Returns the number of steps crashed."""
    import ppl_vae.store.commit as commit

    for n in range(1, 80):
        folder = tmp_path / f"f{n}"
        folder.mkdir()
        commit_output_set(folder, name, old, {"v": "old"})
        pid = os.fork()
        if pid == 0:  # the crashing writer
            os.environ["PPL_VAE_FAULT_AT"] = f"op:{n}"
            commit._fault_counts.clear()
            try:
                commit_output_set(folder, name, new, {"v": "new"})
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        found = read_output_set(folder, name)
        assert found.files == (old if found.record["v"] == "old" else new)
        commit_output_set(folder, name, new, {"v": "again"})
        assert read_output_set(folder, name).record == {"v": "again"}
        assert not _leftovers(folder, name)
        if os.waitstatus_to_exitcode(status) == 0:
            return n - 1
        assert os.waitstatus_to_exitcode(status) == 137
    raise AssertionError("the commit never finished")


SET_OLD = {f: f"old {f}".encode() for f in ("evaluation.json", "evaluation.csv", "evaluation.nc")}
SET_NEW = {
    **{f: f"new {f}".encode() for f in SET_OLD},
    "khat.png": b"new" + PNG_END,
    "gap_hist.png": b"new" + PNG_END,
}


@pytest.mark.parametrize("switch", ["exchange", "two renames"])
def test_a_set_commit_killed_at_every_step_leaves_one_whole_set(tmp_path, monkeypatch, switch):
    """Every step of the commit, with the one-step swap and where the file system cannot exchange two
    paths (then the old set goes aside and the new one in: a crash between the renames leaves readers
    the set aside, and the next writer puts it back)."""
    import ppl_vae.store.outputs as outputs

    if switch == "two renames":
        monkeypatch.setattr(outputs, "_RENAMEAT2", None)
    crashed = _crash_commit_at_every_step(tmp_path, "evaluation", SET_OLD, SET_NEW)
    assert crashed >= 17, (
        crashed
    )  # 6 files x (write, fsync), the folder, the switch, fsync, 2 removes


def test_evaluate_killed_at_random_moments_never_leaves_a_torn_or_mixed_set(
    server, evaluated, tmp_path
):
    run = _copy(evaluated, tmp_path)
    argv = ["evaluate", run, "-k", "100", "--max-points", "100", "--no-progress", "--force"]
    rc, text, seconds = server.call(argv, tmp_path / "log")
    assert rc == 0, text
    for i in range(4):  # late in the run, where its outputs are written
        pid = server.run([*argv[:2], "-k", str(101 + i), *argv[3:]], tmp_path / f"log{i}")
        time.sleep(RNG.uniform(0.6 * seconds, 1.1 * seconds))
        os.kill(pid, signal.SIGKILL)
        server.wait(pid)
        assert check_evaluation_after_crash(run) in {100, *range(101, 101 + i + 1)}
    rc, text, _ = server.call(argv, tmp_path / "log")
    assert rc == 0, text
    assert check_evaluation(run) == 100


def test_plot_and_sample_killed_at_random_moments_leave_whole_pngs(server, evaluated, tmp_path):
    run = _copy(evaluated, tmp_path)
    rc, text, seconds = server.call(
        ["plot", run, "--kind", "latent", "recon", "curves"], tmp_path / "l"
    )
    assert rc == 0, text
    sample = tmp_path / "s.png"
    assert server.call(["sample", run, "--out", sample], tmp_path / "l")[0] == 0
    for _ in range(4):
        pid = server.run(
            ["plot", run, "--force", "--kind", "latent", "recon", "curves"], tmp_path / "l"
        )
        time.sleep(RNG.uniform(0.2 * seconds, seconds))
        os.kill(pid, signal.SIGKILL)
        server.wait(pid)
        pid = server.run(["sample", run, "--out", sample, "--force", "-n", "16"], tmp_path / "l")
        time.sleep(RNG.uniform(0.0, 0.5))
        os.kill(pid, signal.SIGKILL)
        server.wait(pid)
        for png in (run / "latent.png", run / "recon.png", run / "curves.png", sample):
            assert png.read_bytes().endswith(PNG_END), png
    # a kill can land mid-write and leave its temporary file; the next write of that file removes it
    assert (
        server.call(
            ["plot", run, "--force", "--kind", "latent", "recon", "curves"], tmp_path / "l"
        )[0]
        == 0
    )
    assert (
        server.call(["sample", run, "--out", sample, "--force", "-n", "16"], tmp_path / "l")[0] == 0
    )
    assert not [p for p in [*run.iterdir(), *tmp_path.iterdir()] if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- one writer per folder
def _together(server, argvs, tmp_path) -> tuple[list[int], list[str]]:
    pids = [server.run(argv, tmp_path / f"log{k}") for k, argv in enumerate(argvs)]
    rcs = [server.wait(pid) for pid in pids]
    return rcs, [(tmp_path / f"log{k}").read_text() for k in range(len(argvs))]


def test_two_evaluates_at_once_one_is_refused_naming_the_holder(server, evaluated, tmp_path):
    run = _copy(evaluated, tmp_path)
    argvs = [
        ["evaluate", run, "-k", str(k), "--max-points", "200", "--no-progress", "--force"]
        for k in (200, 201)
    ]
    for _ in range(2):
        rcs, logs = _together(server, argvs, tmp_path)
        assert sorted(rcs) == [0, 2], logs
        loser = logs[rcs.index(2)]
        _one_line(loser, "is being written by PID", "one writer")
        assert check_evaluation(run) == (200 if rcs[0] == 0 else 201)


def test_two_compares_at_once_one_is_refused_naming_the_holder(server, tmp_path):
    out = tmp_path / "cmp"
    rcs, logs = _together(
        server, [[*COMPARE, "--seeds", str(s), "--out", out] for s in (0, 1)], tmp_path
    )
    assert sorted(rcs) == [0, 2], logs
    loser = logs[rcs.index(2)]
    winner = rcs.index(0)
    assert "is being written by PID" in loser or "exists and is not empty" in loser, loser
    _one_line(loser)
    assert read_output_set(out, "comparison").record["seeds"] == [winner]


def test_evaluate_while_train_writes_the_run_is_refused_naming_it(server, tmp_path):
    run = tmp_path / "run"
    pid = server.run([*ARGS[:-3], "--epochs", "400", "--no-progress", "--out", run], tmp_path / "l")
    try:
        while not (run / "checkpoint" / "CURRENT.json").exists():
            time.sleep(0.01)
        rc, text, _ = server.call(["evaluate", run, *EVAL], tmp_path / "log")
        assert rc == 2, text
        _one_line(text, f"being written by PID {pid}", "--out")
        rc, text, _ = server.call(
            ["evaluate", run, *EVAL, "--out", tmp_path / "ev"], tmp_path / "l2"
        )
        assert rc == 0, text  # the advice works: a reader of the checkpoint, a writer elsewhere
        assert check_evaluation(tmp_path / "ev") == 30
    finally:
        os.kill(pid, signal.SIGKILL)
        server.wait(pid)


def test_a_reader_racing_a_writer_reads_one_whole_set_each_time(server, evaluated, tmp_path):
    run = _copy(evaluated, tmp_path)
    pids = []
    for k in range(31, 34):
        argv = ["evaluate", run, "-k", str(k), "--max-points", "20", "--no-progress", "--force"]
        pids.append(server.run(argv, tmp_path / f"log{k}"))
        seen = set()
        while True:
            found = read_output_set(run, "evaluation", ["evaluation.json", "evaluation.csv"])
            summary = json.loads(found.files["evaluation.json"])
            assert summary["num_samples"] == found.record["num_samples"]
            assert found.files["evaluation.csv"].count(b"\n") == summary["n"] + 1
            seen.add(summary["num_samples"])
            if k in seen:
                break
        assert server.wait(pids[-1]) == 0
    assert check_evaluation(run) == 33


# ----------------------------------------------------------------------------- full disks
def test_a_full_disk_at_each_writer_is_one_line_and_the_previous_outputs_stay(
    server, evaluated, tmp_path
):
    """A 20 kB file-size limit (EFBIG, as a full disk): the netCDF and PNG writers of evaluate, compare's
    save, plot's and sample's PNGs, sample's .npy. (h5py writing a netCDF to a full disk segfaulted.)"""
    run = _copy(evaluated, tmp_path)
    cmp = tmp_path / "cmp"
    assert server.call([*COMPARE, "--out", cmp], tmp_path / "l")[0] == 0
    assert server.call(["plot", run, "--kind", "curves"], tmp_path / "l")[0] == 0
    npy, png = tmp_path / "s.npy", tmp_path / "s.png"
    for target in (npy, png):
        target.write_bytes(b"old")
    before = {
        "evaluation": read_output_set(run, "evaluation").files,
        "comparison": read_output_set(cmp, "comparison").files,
        "curves": (run / "curves.png").read_bytes(),
    }
    cases = [
        (["evaluate", run, "-k", "300", "--force", "--no-progress"], "evaluation"),
        # the first cell of the new seed is what compare writes first (OUT/cells/, then OUT/comparison/)
        ([*COMPARE, "--seeds", "1", "--out", cmp, "--force"], "cmp/cells/s1-"),
        (["plot", run, "--kind", "curves", "--force"], "curves.png"),
        (["sample", run, "--out", png, "--force"], "s.png"),
        (["sample", run, "--out", npy, "--force", "-n", "500"], "s.npy"),
    ]
    for argv, name in cases:
        rc, text, _ = server.call(argv, tmp_path / "log", fsize=20_000)
        assert rc == 2, (argv, text)
        _one_line(text, "File too large (EFBIG)", name)
    assert read_output_set(run, "evaluation").files == before["evaluation"]
    assert read_output_set(cmp, "comparison").files == before["comparison"]
    assert (run / "curves.png").read_bytes() == before["curves"]
    assert npy.read_bytes() == png.read_bytes() == b"old"
    for folder in (run, cmp, cmp / "cells", tmp_path):
        assert not [p.name for p in folder.iterdir() if ".tmp" in p.name], folder


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_enospc_or_eio_in_a_set_commit_is_a_resource_error_and_keeps_the_set(
    tmp_path, monkeypatch, code
):
    import ppl_vae.store.commit as commit

    commit_output_set(tmp_path, "evaluation", {"a.json": b"{}"}, {"num_samples": 1})
    real = os.fsync
    calls = []

    def failing(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(code, os.strerror(code))
        return real(fd)

    monkeypatch.setattr(commit.os, "fsync", failing)
    with pytest.raises(ResourceError, match=errno.errorcode[code]) as info:
        commit_output_set(tmp_path, "evaluation", {"a.json": b'{"new": 1}'}, {"num_samples": 2})
    assert "the previous set is unchanged" in str(info.value)
    assert read_output_set(tmp_path, "evaluation").files == {"a.json": b"{}"}
    assert not _leftovers(tmp_path, "evaluation")


def test_a_set_folder_with_files_of_the_users_is_never_replaced(tmp_path):
    commit_output_set(tmp_path, "evaluation", {"a.json": b"{}"}, {})
    (tmp_path / "evaluation" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        commit_output_set(tmp_path, "evaluation", {"a.json": b"[]"}, {})
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.json").write_text("mine")
    with pytest.raises(FileExistsError, match="not an output set ppl_vae wrote"):
        commit_output_set(tmp_path, "other", {"a.json": b"[]"}, {})
    assert (tmp_path / "other" / "a.json").read_text() == "mine"


# ----------------------------------------------------------------------------- what was evaluated
def test_an_evaluation_records_its_epoch_and_a_reader_is_told_when_the_run_moved_on(
    server, evaluated, tmp_path
):
    from ppl_vae.diagnostics import Report

    run = _copy(evaluated, tmp_path)
    summary = json.loads((run / "evaluation" / "evaluation.json").read_text())
    assert summary["epoch"] == 2 and summary["checkpoint_set"] == "epoch-000002"
    report = Report.load(run)
    assert "stale" not in report.summary and report.log_weights.shape == (60, 30)
    np.testing.assert_allclose(report.points["khat"].to_numpy(), summary and report.points["khat"])
    rc, text, _ = server.call(["train", "--out", run, "--resume", "--epochs", "1"], tmp_path / "l")
    assert rc == 0, text
    with pytest.warns(UserWarning, match="evaluates epoch 2, but the run has 3 epochs now"):
        assert Report.load(run).summary["stale"] is True
