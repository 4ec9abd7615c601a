"""Compare across processes: under a 2-rank ``torchrun`` each rank runs whole cells (method x seed) and
every rank gets the single-process comparison; the CLI's rank 0 writes the same ``comparison.csv``."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

from ppl_vae.analysis.ranks import CellRanks
from ppl_vae.analysis.resume import CellStore
from ppl_vae.cli import main
from ppl_vae.store.outputs import read_output_set
from ppl_vae.train.distributed import setup, single_process

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from dist_compare_worker import comparison  # noqa: E402

TIMINGS = ["train_seconds", "seconds_per_epoch", "fit_seconds"]
_COMPARE = [
    "compare",
    "--dataset",
    "digits",
    "--n-samples",
    "120",
    "--methods",
    "analytic",
    "trace",
]
_COMPARE += ["--seeds", "0", "1", "--epochs", "1", "--num-samples", "20", "--latent-dim", "2"]
_COMPARE += ["--hidden-dims", "16", "--device", "cpu", "--no-progress"]


def test_cells_go_round_the_ranks_each_rank_taking_the_methods_in_turn():
    owners = {
        (i, j): [r for r in range(2) if CellRanks(r, 2).owns(i, j)]
        for i in range(3)
        for j in range(2)
    }
    assert all(len(o) == 1 for o in owners.values()), "every cell on exactly one rank"
    for r in range(2):
        mine = [(i, j) for (i, j), o in owners.items() if o == [r]]
        assert len(mine) == 3 and {j for _, j in mine} == {0, 1}, "each rank runs both methods"
    assert [CellRanks(0, 1).owns(i, j) for i in range(2) for j in range(3)] == [True] * 6


def test_inside_single_process_every_cell_runs_here_even_under_torchrun(monkeypatch):
    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(name, value)
    with single_process():
        ranks = CellRanks.of(torch.device("cpu"))
        ctx = setup(torch.device("cpu"))
    assert (ranks.rank, ranks.world, ranks.active) == (0, 1, False)
    assert (ctx.rank, ctx.world_size, ctx.active) == (0, 1, False), "fit trains alone too"


def _csv(out: Path) -> tuple[pd.DataFrame, bytes]:
    found = read_output_set(out, "comparison", ["comparison.csv", "paired.csv"])
    return pd.read_csv(io.BytesIO(found.files["comparison.csv"])), found.files["paired.csv"]


@pytest.mark.slow
def test_a_two_rank_torchrun_compare_equals_the_single_process_one(tmp_path, capsys):
    cmd = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"),
        *(str(REPO / "tests" / "dist_compare_worker.py"), str(tmp_path), "--"),
        *_COMPARE,
        *("--out", str(tmp_path / "two")),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("wrote ") == 1, "rank 0 alone writes and reports"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = comparison()
        assert main([*_COMPARE, "--out", str(tmp_path / "one")]) == 0
    capsys.readouterr()
    ranks = [pickle.loads((tmp_path / f"rank{r}.pkl").read_bytes()) for r in (0, 1)]
    assert ranks[1]["failure"] == "made to fail in cell vae/fullrank/trace (seed 0)", (
        "its own error"
    )
    assert ranks[0]["failure"] == (
        "rank(s) [1] of 2 failed running their cells (their own error says why); rank 0 stops too"
    )
    assert one["settings"]["shared_init"], "the second family shares the first's weights"
    for r, got in enumerate(ranks):
        pd.testing.assert_frame_equal(
            got["table"].drop(columns=TIMINGS), one["table"].drop(columns=TIMINGS), obj=f"rank {r}"
        )
        pd.testing.assert_frame_equal(got["points"], one["points"], rtol=0, atol=1e-6)
        pd.testing.assert_frame_equal(got["paired"], one["paired"], rtol=0, atol=1e-6)
        curves = [c.drop(columns=["seconds"]) for c in (got["curves"], one["curves"])]
        pd.testing.assert_frame_equal(*curves)
        assert got["settings"] == one["settings"] and got["kl"] == one["kl"]

    (two, paired_two), (single, paired_one) = _csv(tmp_path / "two"), _csv(tmp_path / "one")
    pd.testing.assert_frame_equal(two.drop(columns=TIMINGS), single.drop(columns=TIMINGS))
    assert paired_two == paired_one, "paired.csv byte for byte"
    names = CellStore(tmp_path / "two" / "cells").names()
    assert names == CellStore(tmp_path / "one" / "cells").names() and len(names) == 4, names
    assert not [p for p in (tmp_path / "two" / "cells").iterdir() if ".tmp-" in p.name]
