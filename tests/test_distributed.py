"""Data-parallel training: a group of one reproduces fit; two gloo processes stay in step and learn."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

import ppl_vae as pv

REPO = Path(__file__).resolve().parents[1]


def _vae(seed: int = 0) -> pv.VAE:
    torch.manual_seed(seed)
    return pv.VAE(64, 4, (32,))


@pytest.mark.parametrize("objective", ["analytic", "iwae:k=3"])
def test_a_group_of_one_trains_exactly_like_one_process(digits, tmp_path, objective):
    try:
        pv.parse_objective(objective)
    except ValueError:
        pytest.skip(f"objective {objective!r} is not registered")
    alone = _vae()
    h_alone = pv.fit(
        alone, digits, objective, epochs=2, batch_size=128, seed=3, device="cpu", progress=False
    )
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        grouped = _vae()
        h_grouped = pv.fit(
            grouped,
            digits,
            objective,
            epochs=2,
            batch_size=128,
            seed=3,
            device="cpu",
            progress=False,
        )
    finally:
        dist.destroy_process_group()
    assert [r["world_size"] for r in h_grouped] == [1, 1]
    for a, b in zip(h_alone, h_grouped, strict=True):
        assert b["train_elbo"] == pytest.approx(a["train_elbo"], rel=1e-6)
        assert b["test_elbo"] == pytest.approx(a["test_elbo"], rel=1e-6)
    for p, q in zip(alone.parameters(), grouped.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_torchrun_two_gloo_processes_keep_identical_parameters_and_learn(tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(REPO / "tests" / "ddp_worker.py"),
        str(tmp_path),
        "--",
        "train",
        "--dataset",
        "digits",
        "--latent-dim",
        "4",
        "--hidden-dims",
        "32",
        "--epochs",
        "4",
        "--batch-size",
        "64",
        "--lr",
        "3e-3",
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("wrote ") == 1, "rank 0 alone reports"
    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    for name in ranks[0]:
        assert torch.equal(ranks[0][name], ranks[1][name]), f"{name} differs between ranks"
    metrics = json.loads((out / "metrics.json").read_text())
    history = metrics["history"]
    assert [r["world_size"] for r in history] == [2] * 4
    assert history[-1]["train_elbo"] > history[0]["train_elbo"] + 1.0, "the loss falls"
    assert history[-1]["test_elbo"] > history[0]["test_elbo"]
    current = json.loads((out / "checkpoint" / "CURRENT.json").read_text())["set"]
    saved = load_file(str(out / "checkpoint" / current / "model.safetensors"))
    for name, value in saved.items():
        assert torch.equal(value, ranks[0][name]), "the checkpoint holds the trained parameters"


@pytest.mark.slow
def test_a_second_fit_in_the_same_torchrun_process_reuses_the_group(tmp_path):
    """The first call starts the group from torchrun's environment; the second must not hang re-creating it."""
    from safetensors import safe_open

    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(REPO / "tests" / "ddp_two_fits.py"),
        str(tmp_path),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    for name in ranks[0]:
        assert torch.equal(ranks[0][name], ranks[1][name]), f"{name} differs between ranks"
    with safe_open(str(tmp_path / "rank0.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["epochs"] == "4", "the second call continues the first (epochs 3 and 4)"
    assert float(meta["last_elbo"]) > float(meta["first_elbo"]) + 1.0
