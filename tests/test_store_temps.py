"""A write killed mid-way leaves its temporary file; the next write of the same file removes it, and nothing else."""

from __future__ import annotations

import os
import subprocess
import sys

from ppl_vae.store.files import write_bytes


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_next_write_removes_a_dead_writers_temp_and_keeps_everything_else(tmp_path):
    target = tmp_path / "latent.png"
    dead = tmp_path / f".latent.png.{_dead_pid()}.abc_12.tmp"
    live = tmp_path / f".latent.png.{os.getppid()}.xyz_34.tmp"  # a live process's write in progress
    other = tmp_path / f".recon.png.{_dead_pid()}.abc_12.tmp"  # another file's: its own next write
    users = [tmp_path / ".latent.png.notes.tmp", tmp_path / "latent.png.1.tmp"]  # not our names
    for p in (dead, live, other, *users):
        p.write_bytes(b"partial")
    write_bytes(target, b"whole")
    assert target.read_bytes() == b"whole"
    assert not dead.exists()
    assert live.exists() and other.exists() and all(p.exists() for p in users)
    assert sorted(
        p.name for p in tmp_path.iterdir() if p.name.startswith(".latent.png.")
    ) == sorted([live.name, ".latent.png.notes.tmp"])
