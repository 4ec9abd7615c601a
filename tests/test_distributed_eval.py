"""Evaluation across processes: the estimators under a 2-rank ``torchrun`` give the single-process numbers.

Each chunk of points draws from its own seed (``sharding.chunk_seed``), so a rank that computes only its own
chunks gets, for every point, the value one process gets; the ranks' results are gathered on every rank.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import ppl_vae as pv
from ppl_vae.cli import main
from ppl_vae.estimators.importance import prepare, resolve, scan
from ppl_vae.estimators.sharding import Shard, chunk_seed, point_shard, unsharded
from ppl_vae.runs import train_run

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from dist_eval_worker import BATCH, POINTS, K, estimates  # noqa: E402


@pytest.mark.parametrize(("n", "chunk", "world"), [(60, 8, 2), (10, 3, 3), (5, 8, 2), (7, 1, 4)])
def test_shards_are_contiguous_blocks_of_whole_chunks_covering_every_point(n, chunk, world):
    spans = [Shard(n, chunk, r, world).span(r) for r in range(world)]
    assert spans[0][0] == 0 and spans[-1][1] == n
    for (_, hi), (lo, _) in zip(spans, spans[1:], strict=False):
        assert hi == lo, "contiguous, no gap and no overlap"
    for lo, hi in spans:
        assert lo % chunk == 0 and (hi % chunk == 0 or hi == n), "whole chunks of one process"
    chunks = [-(-(hi - lo) // chunk) for lo, hi in spans]
    assert max(chunks) - min(chunks) <= 1, "chunks spread evenly"


def test_chunk_seeds_differ_by_chunk_and_seed_and_keep_the_first_chunk_on_the_seed():
    seeds = {chunk_seed(s, start) for s in (0, 1) for start in (0, 8, 16, 24)}
    assert len(seeds) == 8
    assert chunk_seed(5, 0) == 5 and 0 <= chunk_seed(2**62, 8) < 2**63


def test_one_ranks_chunks_computed_alone_equal_the_single_process_values(binary_x):
    torch.manual_seed(0)
    vae = pv.VAE(12, 2, (8,))
    full = pv.iw_log_likelihood(vae, binary_x, 30, batch_size=6, seed=4)
    program, data, k = resolve(vae, binary_x, None, 30, None)
    rows, seed, info = prepare(program, data, k, 4, None)
    shard = Shard(len(binary_x), 6, rank=1, world=2)  # rows 18-39 alone, as rank 1 of 2 does
    got = torch.cat(
        [lse for _, _, lse, _ in scan(program, rows, info, k, seed, 6, None, False, shard=shard)]
    )
    assert (shard.lo, shard.hi) == (18, 40)  # chunks 3-6 of 0-6
    torch.testing.assert_close(got.float() - math.log(k), full[18:], rtol=0, atol=1e-6)
    twice = pv.iw_log_likelihood(vae, binary_x[:6].repeat(2, 1), 30, batch_size=6, seed=4)
    # the first chunk draws from the seed itself; the same points in another chunk, other draws
    torch.testing.assert_close(twice[:6], full[:6], rtol=0, atol=1e-6)
    assert (twice[6:] - twice[:6]).abs().min() > 1e-4


def test_unsharded_ignores_a_torchrun_environment(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    with unsharded():
        shard = point_shard(10, 3, torch.device("cpu"))
    assert (shard.world, shard.lo, shard.hi) == (1, 0, 10)


_EVALUATE = ["--max-points", str(POINTS), "-k", str(K), "--batch-size", str(BATCH), "--no-progress"]


@pytest.mark.slow
def test_a_two_rank_torchrun_evaluation_equals_the_single_process_one(tmp_path, capsys):
    run = tmp_path / "run"
    train_run(
        run,
        dataset="digits",
        epochs=1,
        progress=False,
        latent_dim=2,
        hidden_dims=(32,),
        device="cpu",
    )
    cmd = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"),
        *(str(REPO / "tests" / "dist_eval_worker.py"), str(run), str(tmp_path), "--"),
        *("evaluate", str(run), "--out", str(tmp_path / "two"), *_EVALUATE),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("wrote ") == 1, "rank 0 alone writes and reports"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = estimates(str(run))
        assert main(["evaluate", str(run), "--out", str(tmp_path / "one"), *_EVALUATE]) == 0
    capsys.readouterr()
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert ranks[0]["span"].tolist() == [0, 32, 2] and ranks[1]["span"].tolist() == [32, 60, 2]
    assert (
        ranks[0]["failure"]
        == "rank(s) [1] of 2 failed computing their points (their own error says why); rank 0 stops too"
    )
    assert ranks[1]["failure"] == "made to fail at rows 32-39", (
        "the failing rank raises its own error"
    )
    for name, value in one.items():
        if name == "span":
            continue
        for r, got in enumerate(ranks):
            assert got[name].shape == value.shape, (name, r)
            torch.testing.assert_close(
                got[name], value, rtol=0, atol=1e-5, equal_nan=True, msg=f"{name}, rank {r}"
            )

    files = [tmp_path / d / "evaluation" / "evaluation.csv" for d in ("one", "two")]
    assert files[0].read_text() == files[1].read_text()
    summaries = [json.loads(f.with_suffix(".json").read_text()) for f in files]
    for s in summaries:
        s.pop("seconds"), s.pop("points_per_second")
    assert summaries[0] == summaries[1]
