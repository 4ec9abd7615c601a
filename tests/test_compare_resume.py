"""A killed ``ppl-vae compare`` resumes: finished cells are kept (byte for byte), the cell it was killed in
is trained again, and the result equals an uninterrupted run's; other settings are refused in one line.
The CLI runs forked (``tests/cli_forkserver.py``), so ``kill -9`` lands on a real process."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
from cli_forkserver import ForkServer

from ppl_vae.analysis.resume import CellStore
from ppl_vae.store.outputs import read_output_set

DATA = ["--dataset", "two_moons", "--n-samples", "2000", "--hidden-dims", "16", "--latent-dim", "2"]
DATA += ["--num-samples", "100", "--no-progress"]
COMPARE = ["compare", "--methods", "analytic", "iwae:k=3", *DATA]
ONE = ["compare", "--methods", "analytic", *DATA]
TIMINGS = ["train_seconds", "seconds_per_epoch", "fit_seconds"]


@pytest.fixture(scope="module")
def server():
    s = ForkServer()
    yield s
    s.close()


def _cells(out: Path) -> list[str]:
    return CellStore(out / "cells").names()


def _state(folder: Path) -> dict[str, tuple[str, int]]:
    """Each file's SHA-256 and mtime (ns)."""
    return {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.iterdir())
    }


def _numbers(out: Path) -> tuple[pd.DataFrame, bytes, bytes]:
    found = read_output_set(out, "comparison", ["comparison.csv", "paired.csv", "ranking.csv"])
    table = pd.read_csv(io.BytesIO(found.files["comparison.csv"])).drop(columns=TIMINGS)
    return table, found.files["paired.csv"], found.files["ranking.csv"]


def test_killed_compare_resumes_and_equals_an_uninterrupted_run(server, tmp_path):
    out = tmp_path / "C"
    pid = server.run([*COMPARE, "--epochs", "8", "--out", out], tmp_path / "killed")
    deadline = time.monotonic() + 120
    while not _cells(out) and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)  # in the second cell's training
    assert server.wait(pid) == -signal.SIGKILL
    first = _cells(out)
    assert len(first) == 1, first  # one cell committed, the other killed before its commit
    assert not (out / "comparison").exists()
    kept = _state(out / "cells" / first[0])

    rc, text, _ = server.call([*COMPARE, "--epochs", "8", "--out", out], tmp_path / "again")
    assert rc == 0, text
    assert "resumed: 1 finished cell(s)" in text and "analytic (seed 0)" in text, text
    assert _state(out / "cells" / first[0]) == kept  # the finished cell was not rewritten
    assert len(_cells(out)) == 2
    assert not [p for p in (out / "cells").iterdir() if ".tmp-" in p.name]  # leftover tidied

    whole = tmp_path / "whole"
    rc, text, _ = server.call([*COMPARE, "--epochs", "8", "--out", whole], tmp_path / "whole.log")
    assert rc == 0, text
    resumed, uninterrupted = _numbers(out), _numbers(whole)
    pd.testing.assert_frame_equal(resumed[0], uninterrupted[0])
    assert resumed[1:] == uninterrupted[1:]  # paired.csv and ranking.csv byte for byte
    for name in _cells(whole):
        a = read_output_set(out / "cells", name, ["points.csv"]).files["points.csv"]
        assert a == read_output_set(whole / "cells", name, ["points.csv"]).files["points.csv"]


def test_other_settings_are_refused_and_force_starts_again(server, tmp_path):
    out = tmp_path / "C"
    rc, text, _ = server.call([*ONE, "--epochs", "1", "--out", out], tmp_path / "a")
    assert rc == 0, text
    os.rename(out / "comparison", tmp_path / "aside")  # as if killed before the comparison commit
    before = _cells(out)
    rc, text, _ = server.call([*ONE, "--epochs", "2", "--out", out], tmp_path / "b")
    assert rc == 2
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and "other settings (epochs 1 -> 2)" in lines[0], text
    assert "--force" in lines[0] and _cells(out) == before
    rc, text, _ = server.call([*ONE, "--epochs", "2", "--out", out, "--force"], tmp_path / "c")
    assert rc == 0, text
    assert "resumed" not in text
    recorded = read_output_set(out / "cells", _cells(out)[0], []).record["settings"]
    assert recorded["epochs"] == 2


def test_python_cells_are_reused_and_other_data_refused(tmp_path):
    import warnings

    import ppl_vae as pv
    from ppl_vae.errors import UserError

    kw = dict(seeds=[0], epochs=1, num_samples=100, latent_dim=2, hidden_dims=(8,))
    data = pv.load_dataset("two_moons", n_samples=200, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        first = pv.run_comparison(["analytic", "trace"], data, cells=tmp_path / "cells", **kw)
        store = CellStore(tmp_path / "cells")
        again = pv.run_comparison(["analytic", "trace"], data, cells=store, **kw)
        assert store.reused == ["analytic (seed 0)", "trace (seed 0)"] and store.trained == []
        pd.testing.assert_frame_equal(first.table, again.table)  # timings too: read back
        pd.testing.assert_frame_equal(first.points, again.points)
        pd.testing.assert_frame_equal(first.curves, again.curves)
        other = pv.load_dataset("two_moons", n_samples=200, seed=1)  # same name, other rows
        with pytest.raises(UserError, match="other data"):
            pv.run_comparison(["analytic", "trace"], other, cells=tmp_path / "cells", **kw)
