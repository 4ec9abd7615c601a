"""Checkpoints: exact round trip, atomic writes, no pickle, clear errors on bad files."""

from __future__ import annotations

import json

import pytest
import torch

import ppl_vae as pv
from ppl_vae.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_optimizer_state,
    read_config,
    save_checkpoint,
)


def _trained(tmp_path):
    torch.manual_seed(0)
    vae = pv.VAE(12, 3, (16,), likelihood="gaussian")
    opt = torch.optim.Adam(vae.parameters(), lr=1e-2)
    x = torch.randn(20, 12)
    for _ in range(3):
        opt.zero_grad()
        loss = pv.parse_objective("analytic").loss(vae.model, vae.guide, x)
        loss.backward()
        opt.step()
    save_checkpoint(tmp_path, vae, optimizer=opt, training={"epoch": 3}, data_meta={"name": "toy"})
    return vae, opt, x


def test_save_load_reproduces_identical_outputs(tmp_path):
    vae, opt, x = _trained(tmp_path)
    again, config = load_checkpoint(tmp_path)
    assert config["training"]["epoch"] == 3 and config["data"] == {"name": "toy"}
    torch.testing.assert_close(again.reconstruct(x), vae.reconstruct(x), rtol=0, atol=0)
    torch.testing.assert_close(again.encode(x), vae.encode(x), rtol=0, atol=0)
    opt2 = torch.optim.Adam(again.parameters(), lr=1e-2)
    assert load_optimizer_state(tmp_path, opt2)
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    for k in s1:
        torch.testing.assert_close(s1[k]["exp_avg_sq"], s2[k]["exp_avg_sq"], rtol=0, atol=0)


def test_no_pickle_on_disk(tmp_path):
    _trained(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["config.json", "model.safetensors", "optimizer.safetensors"]
    json.loads((tmp_path / "config.json").read_text())


def test_truncated_weights_are_caught(tmp_path):
    _trained(tmp_path)
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(CheckpointError, match="truncated, corrupt, or from another checkpoint"):
        load_checkpoint(tmp_path)


def test_mismatched_model_is_caught(tmp_path):
    _trained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model"]["latent_dim"] = 5  # config says d=5, weights are d=3
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not match the model"):
        load_checkpoint(tmp_path)


def test_missing_and_corrupt_config(tmp_path):
    with pytest.raises(CheckpointError, match="config.json is missing"):
        read_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_config(tmp_path)


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    vae, opt, x = _trained(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("ppl_vae.checkpoint.save_file", boom)
    with torch.no_grad():
        next(vae.parameters()).add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, vae, optimizer=opt)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before, "no temp files left, old checkpoint intact"
    load_checkpoint(tmp_path)
