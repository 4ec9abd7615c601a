"""The data-loss cases of a shared run folder, as a user meets them on the command line (each command a
subprocess, through ``tests/cli_forkserver.py``).

- A symbolic or hard link at a path ppl_vae writes or locks (``.lock``, ``metrics.csv``, ``checkpoint``,
  ``evaluation.nc``, a dangling ``khat.png``, ``sample --out``) is refused in one line naming it, and the
  file it points to is unchanged: tarballs, ``cp -a`` and ``rsync -l`` keep links, so sharing a run
  folder used to be enough to make ``train --resume`` cut someone's notes to a PID.
- A missing or damaged ``checkpoint/CURRENT.json`` never makes ``--resume`` delete complete epoch sets:
  readers refuse naming the newest verified set and the command, resume rebuilds the pointer from that
  set (and the run continues to the uninterrupted history), and with no verifiable set it refuses.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from cli_forkserver import ForkServer
from helpers import files_of
from test_crash import ARGS, assert_same_history

from ppl_vae.runs import read_history

NOTES = b"my notes, not ppl_vae's\n"


@pytest.fixture(scope="module")
def server():
    s = ForkServer()
    yield s
    s.close()


@pytest.fixture(scope="module")
def runs(server, tmp_path_factory):
    """A 2-epoch run of ARGS and the uninterrupted 4-epoch history it continues to."""
    base = tmp_path_factory.mktemp("links")
    full = base / "full"
    rc, text, _ = server.call([*ARGS, "--out", full], base / "log")
    assert rc == 0, text
    two = base / "two"
    rc, text, _ = server.call(
        [*ARGS[:-3], "--epochs", "2", "--no-progress", "--out", two], base / "l"
    )
    assert rc == 0, text
    return two, read_history(full)[1]


def _files(path: Path) -> dict[str, bytes]:
    """Every file below ``path`` but the lock files (they hold the last writer's PID)."""
    return {k: v for k, v in files_of(path).items() if not k.endswith(".lock")}


def _copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out, symlinks=True)
    return out


def _one_line(text: str, *needles: str) -> None:
    lines = text.splitlines()
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == 1 and "Traceback" not in text, text
    for needle in needles:
        assert needle in errors[0], text


def _resume(server, out: Path, log: Path, *extra: str) -> tuple[int, str]:
    rc, text, _ = server.call(["train", "--out", out, "--resume", "--no-progress", *extra], log)
    return rc, text


# ------------------------------------------------------------------------------------------ links
@pytest.mark.parametrize(
    "name", [".lock", "checkpoint/.lock", "metrics.csv", "metrics.json", "settings.json"]
)
def test_a_link_at_a_file_train_writes_is_refused_and_its_target_kept(server, runs, tmp_path, name):
    out = _copy(runs[0], tmp_path)
    notes = tmp_path / "notes.txt"
    notes.write_bytes(NOTES)
    link = out / name
    link.unlink()
    link.symlink_to(notes)
    before = _files(out)
    rc, text = _resume(server, out, tmp_path / "log", "--epochs", "1")
    assert rc == 2, text
    _one_line(text, repr(str(link)), "is a symbolic link", str(notes))
    assert notes.read_bytes() == NOTES
    assert _files(out) == before  # nothing trained, nothing rewritten


def test_a_hard_linked_lock_or_a_linked_checkpoint_folder_is_refused(server, runs, tmp_path):
    out = _copy(runs[0], tmp_path)
    notes = tmp_path / "notes.txt"
    notes.write_bytes(NOTES)
    (out / ".lock").unlink()
    os.link(notes, out / ".lock")
    rc, text = _resume(server, out, tmp_path / "log", "--epochs", "1")
    assert rc == 2, text
    _one_line(text, ".lock' is a hard link")
    assert notes.read_bytes() == NOTES
    (out / ".lock").unlink()
    elsewhere = tmp_path / "elsewhere"
    (out / "checkpoint").rename(elsewhere)
    (out / "checkpoint").symlink_to(elsewhere)
    before = _files(elsewhere)
    rc, text = _resume(server, out, tmp_path / "log", "--epochs", "1")
    assert rc == 2, text
    _one_line(text, "checkpoint' is a symbolic link")
    assert _files(elsewhere) == before


def test_evaluate_plot_and_sample_refuse_links_even_with_force(server, runs, tmp_path):
    out = _copy(runs[0], tmp_path)
    notes = tmp_path / "notes.txt"
    notes.write_bytes(NOTES)
    (out / "evaluation").symlink_to(tmp_path / "made-by-evaluate")  # the set's folder, dangling
    for force in ([], ["--force"]):
        rc, text, _ = server.call(["evaluate", out, "-k", "5", *force], tmp_path / "log")
        assert rc == 2, text
        _one_line(text, "evaluation' is a symbolic link")
    assert not (tmp_path / "made-by-evaluate").exists()
    (out / "evaluation").unlink()
    (out / "curves.png").symlink_to(tmp_path / "made-by-plot.png")  # dangling
    rc, text, _ = server.call(["plot", out, "--kind", "curves"], tmp_path / "log")
    assert rc == 2, text
    _one_line(text, "curves.png' is a symbolic link")
    rc, text, _ = server.call(["plot", out, "--kind", "curves", "--force"], tmp_path / "log")
    assert rc == 2, text
    assert not (tmp_path / "made-by-plot.png").exists()
    link = tmp_path / "s.png"
    link.symlink_to(notes)
    for force in ([], ["--force"]):
        rc, text, _ = server.call(["sample", out, "--out", link, *force], tmp_path / "log")
        assert rc == 2, text
        _one_line(text, "s.png' is a symbolic link")
    assert notes.read_bytes() == NOTES


# ------------------------------------------------------------------------------------------ pointer
def _sets(out: Path) -> dict[str, dict[str, bytes]]:
    return {
        p.name: _files(p) for p in (out / "checkpoint").iterdir() if p.name.startswith("epoch-")
    }


@pytest.mark.parametrize("damage", ["missing", "not json", "names a missing set"])
def test_a_lost_pointer_is_rebuilt_by_resume_and_no_epoch_is_deleted(
    server, runs, tmp_path, damage
):
    out = _copy(runs[0], tmp_path)
    pointer = out / "checkpoint" / "CURRENT.json"
    if damage == "missing":
        pointer.unlink()
    elif damage == "not json":
        pointer.write_text('{"format_version": 2, "set": "epo')
    else:
        doc = json.loads(pointer.read_text())
        pointer.write_text(json.dumps({**doc, "set": "epoch-000009"}))
    sets = _sets(out)
    assert sorted(sets) == ["epoch-000001", "epoch-000002"]
    # the reader's advice names the newest verified set and the command ...
    rc, text, _ = server.call(["evaluate", out, "-k", "5"], tmp_path / "log")
    assert rc == 2, text
    command = f"ppl-vae train --out {out} --resume"
    _one_line(text, "CURRENT.json", "epoch-000002 is complete and hash-verified", command)
    assert _sets(out) == sets
    # ... and that command rebuilds the pointer, deletes nothing, and the run goes on as if uninterrupted
    rc, text = _resume(server, out, tmp_path / "log2", "--epochs", "2")
    assert rc == 0, text
    warning = [line for line in text.splitlines() if "rebuilt it from epoch-000002" in line]
    assert warning and warning[0].startswith("ppl-vae train: warning: "), text  # one line
    assert "nothing was deleted" in warning[0]
    assert_same_history(read_history(out)[1], runs[1])
    rc, text, _ = server.call(["evaluate", out, "-k", "5"], tmp_path / "log3")
    assert rc == 0, text


def test_with_no_verifiable_set_resume_refuses_and_deletes_nothing(server, runs, tmp_path):
    out = _copy(runs[0], tmp_path)
    (out / "checkpoint" / "CURRENT.json").unlink()
    for name in ("epoch-000001", "epoch-000002"):
        weights = out / "checkpoint" / name / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-7])  # truncated copies
    before = _files(out)
    rc, text = _resume(server, out, tmp_path / "log", "--epochs", "1")
    assert rc == 2, text
    _one_line(
        text, "none of the sets beside it verifies", "model.safetensors", "nothing was deleted"
    )
    rc, text, _ = server.call(["evaluate", out, "-k", "5"], tmp_path / "log")
    assert rc == 2, text
    _one_line(text, "none of the sets beside it verifies")
    assert _files(out) == before


def test_a_newer_set_that_does_not_verify_is_named_when_the_pointer_is_rebuilt(
    server, runs, tmp_path
):
    out = _copy(runs[0], tmp_path)
    (out / "checkpoint" / "CURRENT.json").unlink()
    config = out / "checkpoint" / "epoch-000002" / "config.json"
    config.write_text(config.read_text().replace('"epoch": 2', '"epoch": 7'))
    rc, text = _resume(server, out, tmp_path / "log", "--epochs", "3")
    assert rc == 0, text
    assert "rebuilt it from epoch-000001" in text and "epoch-000002: " in text, text
    assert_same_history(read_history(out)[1], runs[1])


def test_a_save_into_a_folder_without_a_pointer_keeps_every_set(tmp_path):
    """The API too: ``save_checkpoint`` where the pointer was lost removes no set it cannot supersede."""
    import torch

    from ppl_vae import VAE
    from ppl_vae.runs import save_checkpoint

    vae = VAE(6, 2, (4,), likelihood="gaussian")
    for epoch in (1, 2):
        save_checkpoint(tmp_path, vae, training={"epoch": epoch, "history": []})
    (tmp_path / "CURRENT.json").unlink()
    with torch.no_grad():
        next(vae.parameters()).add_(1.0)
    save_checkpoint(tmp_path, vae, training={"epoch": 5, "history": []})
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("epoch-"))
    assert names == ["epoch-000001", "epoch-000002", "epoch-000005"]
    assert json.loads((tmp_path / "CURRENT.json").read_text())["set"] == "epoch-000005"
