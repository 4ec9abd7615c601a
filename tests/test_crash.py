"""`ppl-vae train` killed at random moments and at every step of a checkpoint commit, as a user sees it.

Each crashed run is checked (its committed epochs are a prefix of an uninterrupted run's, it
loads, metrics.json is a view of the checkpoint), then resumed through the command line, and
its history must equal the uninterrupted run's (every field but ``seconds``, to 1e-9).

Most runs go through ``tests/cli_forkserver.py`` (``ppl_vae.cli.main`` in a forked child, so a
kill costs milliseconds instead of a 4 s interpreter start); ``test_real_cli_*`` starts
``python -m ppl_vae.cli`` itself. ``PPL_VAE_CRASH_SEED`` changes the random kill times;
``benchmarks/crash_resume.py`` crashes a run at every step of every commit and at 100 moments.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_forkserver import REPO, ForkServer

from ppl_vae.cli import main
from ppl_vae.errors import RunError
from ppl_vae.runs import load_run, read_history

ARGS = [
    "train",
    "--dataset",
    "digits",
    "--hidden-dims",
    "32",
    "--latent-dim",
    "4",
    "--objective",
    "trace",
    "--seed",
    "3",
    "--batch-size",
    "64",
    "--lr",
    "3e-3",
    "--epochs",
    "4",
    "--no-progress",
]
RNG = random.Random(int(os.environ.get("PPL_VAE_CRASH_SEED", "0")))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def server():
    s = ForkServer()
    yield s
    s.close()


@pytest.fixture(scope="module")
def reference(server, tmp_path_factory):
    """An uninterrupted run of ARGS: (history, seconds it took)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    rc, text, seconds = server.call([*ARGS, "--out", out], out.parent / "log")
    assert rc == 0, text
    return read_history(out)[1], seconds


def assert_same_history(got, want):
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want]
    for a, b in zip(got, want, strict=True):
        assert set(a) == set(b), (a, b)
        for key in a:
            if key == "seconds":
                continue
            if isinstance(a[key], float) or isinstance(b[key], float):
                assert math.isclose(a[key], b[key], rel_tol=0, abs_tol=1e-9), (key, a[key], b[key])
            else:
                assert a[key] == b[key], key


def check_crashed(out: Path, want) -> int:
    """A crashed run folder is a usable record: returns its number of committed epochs."""
    if not (out / "settings.json").exists():
        return -1
    if not (out / "checkpoint" / "CURRENT.json").exists():
        # killed before its first commit switched the pointer: nothing loads yet (when the first set is
        # complete, the reader names it and the resume that rebuilds the pointer from it)
        with pytest.raises(RunError, match="no completed epoch yet|is complete and hash-verified"):
            load_run(out)
        return 0
    history = read_history(out)[1]
    assert_same_history(history, want[: len(history)])
    if (
        out / "metrics.json"
    ).exists():  # a view rewritten after each commit: at most one epoch behind
        view = [r["epoch"] for r in json.loads((out / "metrics.json").read_text())["history"]]
        assert view == [r["epoch"] for r in history][: len(view)] and len(view) >= len(history) - 1
    run = load_run(out)
    assert len(run.history) == len(history) and run.data.meta.name == "digits"
    return len(history)


def recover(server, out: Path, log: Path, kill_after: float | None = None) -> int:
    """What the user does: resume (or start again, if it died before writing its settings)."""
    argv = (
        ["train", "--out", out, "--resume", "--no-progress"]
        if (out / "settings.json").exists()
        else [*ARGS, "--out", out]
    )
    pid = server.run(argv, log)
    if kill_after is not None:
        time.sleep(kill_after)
        os.kill(pid, signal.SIGKILL)
    return server.wait(pid)


def check_clean(out: Path) -> None:
    names = sorted(p.name for p in (out / "checkpoint").iterdir())
    assert [n for n in names if n.startswith(".") and n != ".lock"] == [], names
    assert len([n for n in names if n.startswith("epoch-")]) == 2, names


FAULTS = [
    "rename:1",
    "rename:2",
    "rename:3",
    "rename:4",
    "write:1",
    "write:6",
    "write:9",
    "fsync:2",
    "fsync:9",
    "fsync:13",
    "remove:1",
]


@pytest.mark.parametrize("fault", FAULTS)
def test_a_fault_at_a_step_of_a_checkpoint_commit_loses_nothing(server, reference, tmp_path, fault):
    want = reference[0]
    out = tmp_path / "run"
    rc, text, _ = server.call(
        [*ARGS, "--out", out], tmp_path / "log", env={"PPL_VAE_FAULT_AT": fault}
    )
    assert rc == 137, f"the fault {fault} was not reached: {text}"
    check_crashed(out, want)
    assert recover(server, out, tmp_path / "log2") == 0, (tmp_path / "log2").read_text()
    assert_same_history(read_history(out)[1], want)
    assert_same_history(json.loads((out / "metrics.json").read_text())["history"], want)
    check_clean(out)


def test_sigkill_and_ctrl_c_at_random_moments_then_resume(server, reference, tmp_path):
    want, seconds = reference
    killed = 0
    for i in range(8):
        out = tmp_path / f"run{i}"
        pid = server.run([*ARGS, "--out", out], tmp_path / f"log{i}")
        time.sleep(RNG.uniform(0.0, 0.9 * seconds))
        os.kill(pid, signal.SIGINT if i == 7 else signal.SIGKILL)
        rc = server.wait(pid)
        killed += rc in (-9, 130)
        check_crashed(out, want)
        if i % 3 == 2:  # kill the resumed run too
            rc2 = recover(
                server, out, tmp_path / f"log{i}b", kill_after=RNG.uniform(0.0, 0.5 * seconds)
            )
            killed += rc2 == -9
            check_crashed(out, want)
        assert recover(server, out, tmp_path / f"log{i}c") == 0, (tmp_path / f"log{i}c").read_text()
        assert_same_history(read_history(out)[1], want)
    assert killed >= 6, f"only {killed} of the signals landed before the run ended"


def test_two_writers_started_together_leave_one_clean_run(server, reference, tmp_path):
    out = tmp_path / "run"
    pids = [server.run([*ARGS, "--out", out], tmp_path / f"log{k}") for k in (0, 1)]
    rcs = [server.wait(pid) for pid in pids]
    assert sorted(rcs) == [0, 2], rcs
    loser = rcs.index(2)
    err = (tmp_path / f"log{loser}").read_text()
    assert err.count("\n") == 1 and (
        "being written by PID" in err or "already holds a run" in err
    ), err
    assert_same_history(read_history(out)[1], reference[0])


def test_a_reader_in_another_process_never_sees_a_mixed_checkpoint(server, tmp_path):
    from ppl_vae.errors import CheckpointError
    from ppl_vae.runs import load_checkpoint

    out = tmp_path / "run"
    pid = server.run(
        [*ARGS[:-3], "--epochs", "12", "--no-progress", "--out", out], tmp_path / "log"
    )
    seen, errors = set(), []
    while not (out / "checkpoint" / "CURRENT.json").exists():
        time.sleep(0.005)
    for _ in range(2000):
        try:
            model, config = load_checkpoint(
                out / "checkpoint"
            )  # every file checked against one manifest
        except CheckpointError as err:
            errors.append(str(err))
            continue
        epoch = config["training"]["epoch"]
        assert [r["epoch"] for r in config["training"]["history"]] == list(range(1, epoch + 1))
        seen.add(epoch)
        if epoch == 12:
            break
    assert server.wait(pid) == 0, (tmp_path / "log").read_text()
    assert not errors, errors[:3]
    assert len(seen) >= 3, seen


# ------------------------------------------------------------------------- real `python -m ppl_vae.cli`
def _cli(*argv, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "ppl_vae.cli", *map(str, argv)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, f"{path} did not appear"
        time.sleep(0.01)


def test_real_cli_killed_mid_training_resumes_to_the_same_history(server, reference, tmp_path):
    out = tmp_path / "run"
    proc = _cli(*ARGS, "--out", out)
    _wait_for(out / "checkpoint" / "CURRENT.json", proc)
    time.sleep(RNG.uniform(0.0, 0.1))
    proc.kill()
    proc.communicate()
    check_crashed(out, reference[0])
    assert recover(server, out, tmp_path / "log") == 0, (tmp_path / "log").read_text()
    assert_same_history(read_history(out)[1], reference[0])


def test_a_second_writer_is_refused_naming_the_holder(server, tmp_path, capsys):
    out = tmp_path / "run"
    pid = server.run(
        [*ARGS[:-3], "--epochs", "400", "--no-progress", "--out", out], tmp_path / "log"
    )
    try:
        while not (out / "checkpoint" / "CURRENT.json").exists():
            time.sleep(0.005)
        for extra in ([], ["--resume"]):
            assert main([*ARGS, "--out", str(out), *extra]) == 2
            err = capsys.readouterr().err
            assert f"being written by PID {pid}" in err and err.count("\n") == 1, err
    finally:
        os.kill(pid, signal.SIGKILL)
        server.wait(pid)
    history = read_history(out)[1]  # the killed first writer's run is intact
    assert history and [r["epoch"] for r in history] == list(range(1, len(history) + 1))


def test_a_full_disk_is_one_line_exit_2_and_the_previous_checkpoint_loads(
    server, reference, tmp_path
):
    """A file-size limit (SIGXFSZ ignored, as ``preexec_fn`` would set it) makes the writes fail with EFBIG."""
    out = tmp_path / "run"
    first = [*ARGS[:-3], "--epochs", "2", "--no-progress"]
    assert server.call([*first, "--out", out], tmp_path / "log")[0] == 0
    # the optimizer file (about 38 kB) cannot be written under a 30 kB file-size limit
    rc, stderr, _ = server.call(
        ["train", "--out", out, "--resume", "--epochs", "2", "--no-progress"],
        tmp_path / "log1",
        fsize=30_000,
    )
    assert rc == 2, stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    assert (
        "File too large (EFBIG)" in stderr
        and "previous checkpoint (epoch-000002) is still current" in stderr
    )
    assert read_history(out)[1][-1]["epoch"] == 2
    load_run(out)
    assert not [p for p in (out / "checkpoint").iterdir() if p.name.startswith(".tmp")]
    # the advice works: with space again, resume finishes the run as if nothing happened
    rc, text, _ = server.call(
        ["train", "--out", out, "--resume", "--epochs", "2", "--no-progress"], tmp_path / "l2"
    )
    assert rc == 0, text
    assert_same_history(read_history(out)[1], reference[0])
