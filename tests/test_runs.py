"""Run folders through the API: settings before epoch 1, a complete record after each, faithful resume,
provenance of the data, and refusals that leave the user's files as they were."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import files_of

import ppl_vae.runs.folder as folder
from ppl_vae.errors import (
    ArgumentTypeError,
    ResourceError,
    RunError,
    RunExistsError,
    TrainingDiverged,
    UserError,
)
from ppl_vae.runs import load_run, read_config, read_history, train_run

SMALL = dict(dataset="digits", hidden_dims=(32,), latent_dim=4, progress=False)
SETTINGS = dict(SMALL, objective="trace", seed=3, batch_size=64, lr=3e-3)


def same_history(got, want):
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want]
    for a, b in zip(got, want, strict=True):
        assert set(a) - {"override"} == set(b) - {"override"}
        for key in set(a) - {"seconds", "override"}:
            if isinstance(a[key], float):
                assert math.isclose(a[key], b[key], rel_tol=0, abs_tol=1e-9), key
            else:
                assert a[key] == b[key], key


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """4 uninterrupted epochs with non-default settings everywhere a resume could silently drop them."""
    out = tmp_path_factory.mktemp("ref") / "run"
    return train_run(out, epochs=4, **SETTINGS)


def test_settings_are_written_before_the_first_epoch_and_every_view_after_each(
    tmp_path, monkeypatch
):
    out = tmp_path / "run"
    real_fit, seen = folder.fit, []

    def spy(*args, **kwargs):
        seen.append(json.loads((out / "settings.json").read_text()))
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(folder, "fit", spy)
    run = train_run(out, epochs=2, **SETTINGS)
    s = seen[0]["settings"]
    assert s["flags"]["objective"] == "trace" and s["flags"]["lr"] == 3e-3 and s["epochs"] == 2
    assert s["model"]["hidden_dims"] == [32] and s["model_kind"] == "vae"
    assert (
        s["data"]["provenance"]["kind"] == "builtin"
        and "scikit-learn" in s["data"]["provenance"]["versions"]
    )
    committed = read_config(out / "checkpoint")
    assert (
        committed["training"]["history"]
        == json.loads((out / "metrics.json").read_text())["history"]
    )
    csv = (out / "metrics.csv").read_text().splitlines()
    assert csv[0].startswith("epoch,step,train_elbo,test_elbo") and len(csv) == 3
    for name in ("metrics.json", "settings.json", "checkpoint/CURRENT.json"):
        text = (out / name).read_text()
        assert "NaN" not in text and "Infinity" not in text, name
        json.loads(text)
    assert [r["epoch"] for r in run.history] == [1, 2] and run.history.state.epoch == 2
    assert load_run(out).config["objective"] == "trace"


def test_resume_reuses_the_record_and_gives_the_uninterrupted_history(reference, tmp_path):
    out = tmp_path / "run"
    train_run(out, epochs=2, **SETTINGS)
    resumed = train_run(out, resume=True, epochs=2, progress=False)  # nothing but "2 more"
    same_history(resumed.history, reference.history)
    assert {r["objective"] for r in resumed.history} == {"trace"}
    same_history(read_history(out)[1], reference.history)
    (
        out / "metrics.json"
    ).unlink()  # e.g. killed after its last commit, before the views were rewritten
    again = train_run(
        out, resume=True, progress=False
    )  # nothing left: the views are brought up to date
    assert again.trained == 0 and len(again.history) == 4
    assert len(json.loads((out / "metrics.json").read_text())["history"]) == 4
    with pytest.raises(RunError, match="already has 4 epochs .* pass --epochs N"):
        train_run(out, resume=True, lr=1e-4, override="lr", progress=False)
    assert resumed.trained == 2


def test_a_changed_setting_is_refused_naming_both_values_unless_overridden(reference, tmp_path):
    out = tmp_path / "run"
    train_run(out, epochs=2, **SETTINGS)
    before = files_of(out)
    with pytest.raises(
        RunError,
        match=r"--objective analytic differs from the run's objective trace "
        r"\(to change it from now on: --override objective",
    ):
        train_run(out, resume=True, objective="analytic", progress=False)
    with pytest.raises(RunError, match=r"--batch-size 128 differs .* 64"):
        train_run(out, resume=True, batch_size=128, progress=False)
    with pytest.raises(
        RunError, match=r"--latent-dim 8 \(the run has 4; the model, data and architecture"
    ):
        train_run(out, resume=True, latent_dim=8, progress=False)
    with pytest.raises(RunError, match=r"--dataset .*two_moons.* \(the run has digits"):
        train_run(out, resume=True, dataset="two_moons", progress=False)
    with pytest.raises(
        RunError, match="--override dataset: the model, data and architecture of a run cannot"
    ):
        train_run(out, resume=True, dataset="two_moons", override=["dataset"], progress=False)
    with pytest.raises(UserError, match="--override lr needs the new value too"):
        train_run(out, resume=True, override=["lr"], progress=False)
    assert files_of(out) == before, "a refused resume changes nothing"
    # the same values are not a conflict; an explicit override is recorded in settings and history
    run = train_run(
        out,
        resume=True,
        epochs=1,
        objective="trace",
        lr=1e-3,
        override=["lr"],
        seed=3,
        progress=False,
    )
    assert run.history[2]["override"] == {"lr": {"from": 3e-3, "to": 1e-3}}
    assert "override" not in run.history[1]
    doc = json.loads((out / "settings.json").read_text())
    assert doc["resumes"][-1]["overrides"] == {"lr": {"from": 3e-3, "to": 1e-3}}
    assert doc["settings"]["flags"]["lr"] == 3e-3, "what the run started with is kept"
    assert read_history(out)[1][2]["override"]["lr"]["to"] == 1e-3
    assert "override" in (out / "metrics.csv").read_text().splitlines()[0]
    train_run(out, resume=True, epochs=1, progress=False)  # the override stays in force
    assert read_config(out / "checkpoint")["training"]["lr"] == 1e-3


def test_an_lr_override_reaches_the_optimizer(tmp_path):
    out = tmp_path / "run"
    train_run(out, epochs=1, **SETTINGS)
    train_run(out, resume=True, epochs=1, lr=1e-4, override=["lr"], progress=False)
    assert read_config(out / "checkpoint")["optimizer"]["param_groups"][0]["lr"] == 1e-4


def test_a_run_stopped_before_its_first_epoch_resumes_from_epoch_1(
    reference, tmp_path, monkeypatch
):
    out = tmp_path / "run"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(folder, "fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_run(out, epochs=4, **SETTINGS)
    monkeypatch.undo()
    assert (out / "settings.json").is_file() and not (out / "checkpoint").exists()
    for call in (load_run, read_history):
        with pytest.raises(RunError, match="no completed epoch yet .* --resume"):
            call(out)
    with pytest.raises(RunExistsError, match="already holds a run: pass --resume"):
        train_run(out, epochs=4, **SETTINGS)
    same_history(train_run(out, resume=True, progress=False).history, reference.history)


def test_a_diverged_run_keeps_its_record_and_resumes_with_a_smaller_lr(
    reference, tmp_path, monkeypatch
):
    out = tmp_path / "run"
    real_fit = folder.fit

    def diverges_after_two(*args, **kwargs):
        real_fit(*args, **{**kwargs, "epochs": 2})
        raise TrainingDiverged("loss became nan at epoch 3")

    monkeypatch.setattr(folder, "fit", diverges_after_two)
    with pytest.raises(TrainingDiverged):
        train_run(out, epochs=4, **SETTINGS)
    monkeypatch.undo()
    assert [r["epoch"] for r in load_run(out).history] == [1, 2]
    run = train_run(out, resume=True, lr=1e-3, override="lr", progress=False)
    assert [r["epoch"] for r in run.history] == [1, 2, 3, 4] and run.history[2]["override"]


def test_nothing_the_user_made_is_touched(tmp_path):
    mine = tmp_path / "mine"
    (mine / "checkpoint").mkdir(parents=True)
    (mine / "metrics.json").write_text('{"my": "notes"}')
    (mine / "checkpoint" / "model.safetensors").write_bytes(b"my weights")
    before = files_of(mine)
    with pytest.raises(
        RunExistsError, match="holds files ppl_vae did not make .* choose another --out"
    ):
        train_run(mine, epochs=1, **SMALL)
    with pytest.raises(RunError, match="no settings.json"):
        train_run(mine, resume=True, progress=False)
    assert files_of(mine) == before and not (mine / ".lock").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunExistsError, match="is a file, not a folder"):
        train_run(tmp_path / "file", epochs=1, **SMALL)
    with pytest.raises(RunExistsError, match="is a file, not a folder"):
        train_run(tmp_path / "file" / "run", epochs=1, **SMALL)
    with pytest.raises(UserError, match="the path is empty"):
        train_run("", epochs=1, **SMALL)
    with pytest.raises(UserError, match="cannot resume: .* does not exist"):
        train_run(tmp_path / "nothing", resume=True, progress=False)
    assert not (tmp_path / "nothing").exists()


def test_sizes_and_arguments_are_checked_before_anything_is_made(tmp_path, monkeypatch):
    out = tmp_path / "run"
    with pytest.raises(
        ResourceError, match=r"needs about .* of memory, but this machine has .* available"
    ):
        train_run(out, epochs=1, dataset="digits", latent_dim=100_000_000_000, progress=False)
    monkeypatch.setattr("ppl_vae._checks.available_memory", lambda: 1 << 30)
    with pytest.raises(
        ResourceError, match=r"hidden_dims \(20000, 20000\).*GiB of memory.*1\.0 GiB available"
    ):
        train_run(out, epochs=1, dataset="digits", hidden_dims=(20000, 20000), progress=False)
    for kwargs, error, message in [
        (dict(time_budget=-1.0), UserError, "time_budget must be positive"),
        (dict(time_budget=float("nan")), UserError, "time_budget must be a finite number"),
        (dict(epochs=0), UserError, "epochs must be an integer >= 1"),
        (dict(lr="fast"), ArgumentTypeError, "lr must be a number"),
        (dict(seed=-1), UserError, "seed must be an integer >= 0"),
        (dict(objective="nope"), UserError, "unknown objective 'nope'"),
        (dict(log="wandb"), UserError, "unknown log 'wandb'"),
        (dict(override=["lr"], lr=1e-3), UserError, "override applies to --resume only"),
    ]:
        with pytest.raises(error, match=message):
            train_run(out, **{**SMALL, "epochs": 1, **kwargs})
    assert not out.exists()


def test_data_files_are_recorded_by_absolute_path_and_hash(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    np.savetxt(data / "points.csv", rng.normal(size=(60, 3)), delimiter=",")
    original = (data / "points.csv").read_bytes()
    monkeypatch.chdir(data)
    out = tmp_path / "run"
    train_run(out, dataset="points.csv", epochs=1, latent_dim=2, hidden_dims=(8,), progress=False)
    monkeypatch.chdir(tmp_path)
    prov = json.loads((out / "settings.json").read_text())["settings"]["data"]["provenance"]
    path = str((data / "points.csv").resolve())
    assert prov["files"] == {path: hashlib.sha256(original).hexdigest()}
    assert load_run(out).data.meta.n_test == 12, "another working folder: the same file"
    with open(data / "points.csv", "a") as f:
        f.write("1,2,3\n")
    for call in (
        lambda: load_run(out),
        lambda: train_run(out, resume=True, epochs=1, progress=False),
    ):
        with pytest.raises(RunError, match=f"data file {path} has changed since the run started"):
            call()
    os.remove(data / "points.csv")
    with pytest.raises(RunError, match=f"data file {path} is missing"):
        load_run(out)
    (data / "points.csv").write_bytes(original)  # the advice: put it back
    assert [r["epoch"] for r in train_run(out, resume=True, epochs=1, progress=False).history] == [
        1,
        2,
    ]


def test_an_edited_settings_file_is_refused_and_its_checkpoint_copy_restores_it(tmp_path):
    out = tmp_path / "run"
    train_run(out, epochs=1, **SMALL)
    good = (out / "settings.json").read_text()
    doc = json.loads(good)
    doc["settings"]["data"]["args"]["name"] = "csv:/etc/passwd"
    (out / "settings.json").write_text(json.dumps(doc))
    for call in (
        load_run,
        read_history,
        lambda p: train_run(p, resume=True, epochs=1, progress=False),
    ):
        with pytest.raises(RunError, match=r"settings\.json was edited after ppl_vae wrote it"):
            call(out)
    copy = next((out / "checkpoint").glob("epoch-*/settings.json"))
    shutil.copyfile(copy, out / "settings.json")
    assert load_run(out).data.meta.name == "digits"
    (out / "settings.json").write_text("[" * 50000)
    with pytest.raises(RunError, match=r"settings\.json is not valid JSON"):
        load_run(out)


def test_autoencoder_runs_keep_their_kind_through_resume(tmp_path):
    out = tmp_path / "ae"
    run = train_run(
        out,
        dataset="digits",
        model="ae",
        latent_dim=2,
        hidden_dims=(16,),
        epochs=1,
        n_samples=200,
        progress=False,
    )
    assert (
        run.config["model"]["reconstruction"] == "bce"
        and run.config["data_args"]["binarize"] == "dynamic"
    )
    with pytest.raises(UserError, match="--objective is for the VAE"):
        train_run(out, resume=True, objective="trace", epochs=1, progress=False)
    resumed = train_run(out, resume=True, epochs=1, progress=False)
    assert [r["epoch"] for r in resumed.history] == [1, 2] and "test_loss" in resumed.history[-1]
    assert (
        json.loads((out / "metrics.json").read_text())["final_test_loss"]
        == resumed.history[-1]["test_loss"]
    )


def test_tensorboard_logs_or_one_clear_error(tmp_path, monkeypatch):
    import sys

    out = tmp_path / "run"
    with monkeypatch.context() as m:  # as without the optional package
        m.setitem(sys.modules, "torch.utils.tensorboard", None)
        with pytest.raises(
            UserError,
            match=r"needs the 'tensorboard' package.*pip install 'ppl_vae\[tensorboard\]'",
        ):
            train_run(out, epochs=1, log="tensorboard", **SMALL)
    assert not out.exists()
    pytest.importorskip("tensorboard")
    train_run(out, epochs=2, log="tensorboard", **SMALL)
    train_run(out, resume=True, epochs=1, progress=False)  # the recorded log goes on
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 2


def test_in_memory_runs_write_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = train_run(None, epochs=1, **SMALL)
    assert run.path is None and list(tmp_path.iterdir()) == []
    assert torch.isfinite(torch.tensor(run.history[-1]["test_elbo"]))


def test_idx_data_are_recorded_file_by_file_and_the_folder_found_via_the_environment(
    tmp_path, monkeypatch
):
    import gzip
    import struct

    from ppl_vae.data.idx import FILES

    folder_ = tmp_path / "mnist"
    folder_.mkdir()
    rng = np.random.default_rng(0)
    for name, array in zip(
        FILES,
        (
            rng.integers(0, 256, (30, 4, 5)),
            rng.integers(0, 10, 30),
            rng.integers(0, 256, (10, 4, 5)),
            rng.integers(0, 10, 10),
        ),
        strict=True,
    ):
        header = struct.pack(">I", 0x800 | array.ndim) + struct.pack(
            f">{array.ndim}I", *array.shape
        )
        (folder_ / name).write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))
    monkeypatch.setenv("PPL_VAE_DATA", str(tmp_path))
    out = tmp_path / "run"
    train_run(out, dataset="mnist", epochs=1, latent_dim=2, hidden_dims=(8,), progress=False)
    settings = json.loads((out / "settings.json").read_text())["settings"]["data"]
    assert sorted(Path(p).name for p in settings["provenance"]["files"]) == sorted(FILES)
    assert settings["args"]["data_dir"] == str(folder_.resolve()), (
        "not $PPL_VAE_DATA at a later time"
    )
    monkeypatch.delenv("PPL_VAE_DATA")
    assert load_run(out).data.meta.n_train == 30
    (folder_ / FILES[3]).write_bytes((folder_ / FILES[1]).read_bytes())
    with pytest.raises(RunError, match=f"{FILES[3]} has changed since the run started"):
        load_run(out)


def test_a_run_folder_of_an_older_version_is_neither_overwritten_nor_followed(tmp_path):
    from safetensors.torch import save_file

    from ppl_vae.models import VAE
    from ppl_vae.runs import load_checkpoint

    old = tmp_path / "old"
    (old / "checkpoint").mkdir(parents=True)
    vae = VAE(64, 2, (8,), likelihood="bernoulli")
    save_file(
        {k: v.contiguous() for k, v in vae.state_dict().items()},
        str(old / "checkpoint" / "model.safetensors"),
    )
    sha = hashlib.sha256((old / "checkpoint" / "model.safetensors").read_bytes()).hexdigest()
    (old / "checkpoint" / "config.json").write_text(
        json.dumps(
            {
                "format_version": 1,
                "model": vae.config,
                "training": {"epoch": 1},
                "files": {"model.safetensors": sha},
            }
        )
    )
    (old / "metrics.json").write_text(
        json.dumps({"config": {"data_args": {"name": "csv:/etc/passwd"}}})
    )
    before = files_of(old)
    with pytest.raises(RunExistsError, match="already holds a run"):
        train_run(old, epochs=1, **SMALL)
    with pytest.raises(RunError, match="made by an older ppl_vae .* pv.load_checkpoint"):
        load_run(old)
    with pytest.raises(RunError, match="no settings.json"):
        train_run(old, resume=True, progress=False)
    assert files_of(old) == before
    model, config = load_checkpoint(old / "checkpoint")  # the advice works
    assert config["training"]["epoch"] == 1


def test_half_written_files_of_a_killed_run_do_not_block_it(tmp_path):
    """Killed during the atomic write of settings.json: only our temporary file (and the lock) remain."""
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text("12345\n")
    (out / ".settings.json.k2j4h5.tmp").write_text('{"format": "ppl_vae.run/1", "sett')
    train_run(out, epochs=1, **SMALL)
    (out / ".metrics.json.q8w7e6.tmp").write_text('{"hist')
    train_run(out, resume=True, epochs=1, progress=False)
    assert not list(out.glob(".*.tmp")) and [r["epoch"] for r in read_history(out)[1]] == [1, 2]
