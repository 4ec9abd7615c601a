"""Checkpoints: exact round trip, one atomic commit per save, no pickle, every bad file named."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import threading

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import ppl_vae as pv
import ppl_vae.store.checkpoint as ckpt
from ppl_vae.errors import CheckpointError, ResourceError, RunLockedError, UserError
from ppl_vae.runs import lock_folder
from ppl_vae.store.checkpoint import (
    load_checkpoint,
    load_model_state,
    load_optimizer_state,
    load_params,
    read_config,
    save_checkpoint,
)
from ppl_vae.store.files import read_json, write_json


def _trained(tmp_path, epoch=3):
    torch.manual_seed(0)
    vae = pv.VAE(12, 3, (16,), likelihood="gaussian")
    opt = torch.optim.Adam(vae.parameters(), lr=1e-2)
    x = torch.randn(20, 12)
    for _ in range(3):
        opt.zero_grad()
        loss = pv.parse_objective("analytic").loss(vae.model, vae.guide, x)
        loss.backward()
        opt.step()
    save_checkpoint(
        tmp_path,
        vae,
        optimizer=opt,
        training={"epoch": epoch, "history": [{"epoch": epoch}]},
        data_meta={"name": "toy"},
    )
    return vae, opt, x


def _current(tmp_path):
    return tmp_path / json.loads((tmp_path / "CURRENT.json").read_text())["set"]


def _forge(tmp_path, mutate):
    """Edit config.json consistently: recompute the manifest's and the pointer's hashes too."""
    folder = _current(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    mutate(config)
    data = json.dumps(config).encode()
    (folder / "config.json").write_bytes(data)
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    manifest["files"]["config.json"]["sha256"] = hashlib.sha256(data).hexdigest()
    mbytes = json.dumps(manifest).encode()
    (folder / "MANIFEST.json").write_bytes(mbytes)
    pointer = json.loads((tmp_path / "CURRENT.json").read_text())
    pointer["manifest_sha256"] = hashlib.sha256(mbytes).hexdigest()
    (tmp_path / "CURRENT.json").write_text(json.dumps(pointer))


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
    assert load_params(tmp_path) == {}
    assert read_config(tmp_path)["set"] == "epoch-000003"


def test_layout_is_one_set_per_epoch_behind_one_pointer_and_no_pickle(tmp_path):
    vae, opt, _ = _trained(tmp_path, epoch=1)
    for epoch in (2, 3):
        save_checkpoint(tmp_path, vae, optimizer=opt, training={"epoch": epoch})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [".lock", "CURRENT.json", "epoch-000002", "epoch-000003"], (
        "the previous set is kept, older go"
    )
    files = sorted(p.name for p in (tmp_path / "epoch-000003").iterdir())
    assert files == ["MANIFEST.json", "config.json", "model.safetensors", "optimizer.safetensors"]
    manifest = json.loads((tmp_path / "epoch-000003" / "MANIFEST.json").read_text())
    assert set(manifest["files"]) == {"config.json", "model.safetensors", "optimizer.safetensors"}
    # the same epoch saved twice gets its own set (sets are never changed once in place)
    save_checkpoint(tmp_path, vae, training={"epoch": 3})
    assert read_config(tmp_path)["set"] == "epoch-000003-2"


def test_json_is_strict_and_params_and_free_programs_round_trip(tmp_path):
    params = {"w$$$loc": torch.randn(3), "scale": torch.rand(2, 2)}
    save_checkpoint(
        tmp_path,
        None,
        training={
            "epoch": 1,
            "history": [{"epoch": 1, "test_elbo": float("-inf"), "train_elbo": float("nan")}],
        },
        params=params,
    )
    text = (_current(tmp_path) / "config.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    assert read_config(tmp_path)["training"]["history"][0]["test_elbo"] is None
    loaded = load_params(tmp_path)
    assert loaded.keys() == params.keys() and all(torch.equal(loaded[k], params[k]) for k in params)
    with pytest.raises(CheckpointError, match="holds no model config"):
        load_checkpoint(tmp_path)


def test_a_module_without_config_is_saved_and_loaded_into_its_twin(tmp_path):
    net = nn.Linear(3, 2)
    save_checkpoint(tmp_path, net, training={"epoch": 1})
    assert read_config(tmp_path)["model"] is None
    twin = nn.Linear(3, 2)
    load_model_state(tmp_path, twin)
    assert torch.equal(twin.weight, net.weight)
    with pytest.raises(CheckpointError, match="does not match the model"):
        load_model_state(tmp_path, nn.Linear(4, 2))


def test_truncated_weights_are_caught_naming_the_file(tmp_path):
    _trained(tmp_path)
    path = _current(tmp_path) / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(CheckpointError, match=r"model\.safetensors does not match its manifest"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize(
    "target,edit,message",
    [
        (
            "config.json",
            lambda t: t.replace('"latent_dim": 3', '"latent_dim": 5'),
            r"config\.json does not match",
        ),
        (
            "config.json",
            lambda t: t.replace('"gaussian"', '"bernoulli"'),
            r"config\.json does not match",
        ),
        (
            "MANIFEST.json",
            lambda t: t.replace('"bytes"', '"size"'),
            r"MANIFEST\.json does not match the hash in .*CURRENT",
        ),
        ("CURRENT.json", lambda t: "{not json", r"CURRENT\.json is not valid JSON"),
        (
            "CURRENT.json",
            lambda t: t.replace('"set": "epoch-000003"', '"set": 5'),
            r"CURRENT\.json: field 'set' must be a string",
        ),
        (
            "CURRENT.json",
            lambda t: t.replace('"epoch-000003"', '"../../etc"'),
            r"field 'set' must name a set folder",
        ),
        (
            "CURRENT.json",
            lambda t: "[" * 100000 + "]" * 100000,
            r"CURRENT\.json is not valid JSON \(nested too deeply\)",
        ),
        (
            "CURRENT.json",
            lambda t: '{"format_version": 9}',
            r"format_version 9; this ppl_vae reads up to 2",
        ),
    ],
)
def test_hand_edited_or_corrupt_files_are_refused_by_name(tmp_path, target, edit, message):
    _trained(tmp_path)
    path = tmp_path / target if target == "CURRENT.json" else _current(tmp_path) / target
    path.write_text(edit(path.read_text()))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize(
    "mutate,message",
    [
        (
            lambda c: c["training"].update(epoch="3"),
            r"field 'training\.epoch' must be an integer; got str",
        ),
        (
            lambda c: c["training"].update(history={"a": 1}),
            r"field 'training\.history' must be a list",
        ),
        (
            lambda c: c["training"].update(history=[{"epoch": -1}]),
            r"'training\.history\[0\]\.epoch' must be >= 0",
        ),
        (lambda c: c.pop("model"), r"field 'model' is missing"),
        (lambda c: c["model"].update(latent_dim="3"), r"field 'model' is unusable"),
        (
            lambda c: c["model"].update(hidden_dims=[[16]]),
            r"field 'model' is unusable|does not match the model",
        ),
        (
            lambda c: c["optimizer"].update(param_groups="x"),
            r"'optimizer\.param_groups' must be a list",
        ),
        (
            lambda c: c["optimizer"]["param_groups"][0].update(lr="fast"),
            r"param_groups\[0\]\.lr' must be a number",
        ),
        (lambda c: c["optimizer"]["scalars"].update(x=1), r"optimizer\.scalars\.x"),
    ],
)
def test_consistently_forged_fields_are_refused_naming_file_and_field(tmp_path, mutate, message):
    vae, opt, _ = _trained(tmp_path)
    _forge(tmp_path, mutate)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(tmp_path)
        load_optimizer_state(tmp_path, torch.optim.Adam(vae.parameters()))
    assert "config.json" in str(info.value) or "does not match the model" in str(info.value)


def test_missing_checkpoint_and_old_layout(tmp_path):
    with pytest.raises(CheckpointError, match="CURRENT.json is missing"):
        read_config(tmp_path)
    # the first layout (config.json beside the tensor files) is still read
    vae = pv.VAE(5, 2, (4,), likelihood="gaussian")
    save_file(
        {k: v.contiguous() for k, v in vae.state_dict().items()},
        str(tmp_path / "model.safetensors"),
    )
    sha = hashlib.sha256((tmp_path / "model.safetensors").read_bytes()).hexdigest()
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "format_version": 1,
                "model": vae.config,
                "training": {"epoch": 2},
                "data": None,
                "optimizer": None,
                "files": {"model.safetensors": sha},
            }
        )
    )
    again, config = load_checkpoint(tmp_path)
    assert config["training"]["epoch"] == 2
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), vae.parameters(), strict=True))


def _state(path):
    return {
        p.relative_to(path).as_posix(): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG, errno.EROFS])
def test_a_full_disk_during_a_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch, code):
    vae, opt, x = _trained(tmp_path)
    before = _state(tmp_path)
    real_open = open

    def failing_open(file, mode="r", *args, **kwargs):
        if (
            "w" in mode
            and "epoch-000004" in str(file)
            and str(file).endswith("optimizer.safetensors")
        ):
            raise OSError(code, os.strerror(code))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", failing_open)
    with torch.no_grad():
        next(vae.parameters()).add_(1.0)
    with pytest.raises(
        ResourceError, match="previous checkpoint \\(epoch-000003\\) is still current"
    ) as info:
        save_checkpoint(tmp_path, vae, optimizer=opt, training={"epoch": 4})
    assert "\n" not in str(info.value)
    monkeypatch.undo()
    assert _state(tmp_path) == before, "no temporary files left, old checkpoint intact"
    load_checkpoint(tmp_path)


def test_a_crash_between_rename_and_pointer_leaves_the_previous_set(tmp_path, monkeypatch):
    vae, opt, _ = _trained(tmp_path)
    before = _state(tmp_path)
    real = os.replace

    def boom(src, dst):
        if str(dst).endswith("CURRENT.json"):
            raise RuntimeError("injected bug")
        return real(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", boom)
    with pytest.raises(RuntimeError, match="injected bug"):
        save_checkpoint(tmp_path, vae, optimizer=opt, training={"epoch": 4})
    monkeypatch.undo()
    assert _state(tmp_path) == before
    assert read_config(tmp_path)["training"]["epoch"] == 3


def test_read_only_folder_is_a_clear_error(tmp_path):
    vae, opt, _ = _trained(tmp_path)
    os.chmod(tmp_path, 0o555)
    try:
        if os.access(tmp_path, os.W_OK):
            pytest.skip("running as root: permissions are not enforced (EROFS is covered above)")
        with pytest.raises(ResourceError, match="Permission denied|Read-only"):
            save_checkpoint(tmp_path, vae, optimizer=opt, training={"epoch": 4})
    finally:
        os.chmod(tmp_path, 0o755)
    load_checkpoint(tmp_path)


def test_a_reader_racing_a_writer_never_sees_a_mixed_set(tmp_path):
    """Each save fills every weight with its epoch number; every load must be one epoch throughout."""
    net = nn.Linear(8, 8)
    seen, errors = [], []

    def fill(epoch):
        with torch.no_grad():
            for p in net.parameters():
                p.fill_(float(epoch))
        save_checkpoint(tmp_path, net, training={"epoch": epoch})

    fill(1)
    done = threading.Event()

    def writer():
        for epoch in range(2, 60):
            fill(epoch)
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    twin = nn.Linear(8, 8)
    while not done.is_set() or len(seen) < 20:
        try:
            config = load_model_state(tmp_path, twin)
        except CheckpointError as err:
            errors.append(str(err))
            continue
        epoch = config["training"]["epoch"]
        seen.append(epoch)
        assert all(bool((p == epoch).all()) for p in twin.parameters()), (
            f"mixed set at epoch {epoch}"
        )
    thread.join()
    assert not errors and len(set(seen)) > 1


def test_a_set_removed_while_it_is_read_is_read_again_from_the_pointer(tmp_path, monkeypatch):
    net = nn.Linear(2, 2)
    save_checkpoint(tmp_path, net, training={"epoch": 1})
    stale = ckpt._open(tmp_path)
    for epoch in (2, 3):
        save_checkpoint(tmp_path, net, training={"epoch": epoch})
    assert not stale.folder.exists()
    real, calls = ckpt._open, []

    def first_stale(directory):
        calls.append(directory)
        return stale if len(calls) == 1 else real(directory)

    monkeypatch.setattr(ckpt, "_open", first_stale)
    assert load_model_state(tmp_path, nn.Linear(2, 2))["training"]["epoch"] == 3
    assert len(calls) == 2


def test_lock_is_reentrant_and_a_second_process_is_told_the_holder(tmp_path):
    with lock_folder(tmp_path), lock_folder(tmp_path):
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
    read_end, write_end = os.pipe()
    release_r, release_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the holder
        try:
            with lock_folder(tmp_path):
                os.write(write_end, b"x")
                os.read(release_r, 1)
        finally:
            os._exit(0)
    try:
        os.read(read_end, 1)
        with pytest.raises(RunLockedError, match=f"being written by PID {pid}"):
            with lock_folder(tmp_path):
                pass
        with pytest.raises(RunLockedError):
            save_checkpoint(tmp_path, nn.Linear(1, 1))
    finally:
        os.write(release_w, b"x")
        os.waitpid(pid, 0)
    with lock_folder(tmp_path):  # the kernel released it with the holder
        pass


@pytest.mark.parametrize("before", ["", "999999999"], ids=["empty", "a-killed-holder's-pid"])
def test_a_writer_refused_before_the_holder_wrote_its_pid_still_names_it(tmp_path, before):
    # The holder takes the lock, then writes its PID over an earlier holder's (or into an empty file):
    # a second writer refused in between once said "PID unknown" (seen in CI with two writers started
    # together). It now waits for the PID of a live process.
    import fcntl
    import threading

    from ppl_vae.store.lock import refuse_if_locked

    (tmp_path / ".lock").write_text(before)
    fd = os.open(tmp_path / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    late = threading.Timer(0.2, lambda: os.pwrite(fd, f"{os.getpid()}\n".ljust(24).encode(), 0))
    late.start()
    try:
        with pytest.raises(RunLockedError, match=f"being written by PID {os.getpid()}:"):
            refuse_if_locked(tmp_path)
    finally:
        late.join()
        os.close(fd)


def test_write_json_is_strict_and_read_json_names_the_file(tmp_path):
    write_json(
        tmp_path / "a.json", {"x": float("nan"), "y": (1, float("inf")), "z": torch.tensor(2.5)}
    )
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": None, "y": [1, None], "z": 2.5}
    (tmp_path / "b.json").write_text('{"x": NaN}')
    with pytest.raises(UserError, match=r"b\.json is not valid JSON \(NaN is not a JSON value\)"):
        read_json(tmp_path / "b.json")
    with pytest.raises(TypeError, match="cannot record a object"):
        write_json(tmp_path / "c.json", {"x": object()})
    assert not list(tmp_path.glob(".c.json*")), "no temporary file left"
