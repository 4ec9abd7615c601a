"""The compiled whole step (ppl_vae/train/fused.py): same training as the eager step, checked, and it falls back.

Compiling costs seconds per graph, so every test here uses one tiny network, one batch shape (64 rows in
batches of 16) and as few distinct graphs as it can: the analytic VAE's graph (the KL weight is an input,
so the annealed objective shares it) serves four tests, and Inductor's on-disk cache serves later runs.
"""

from __future__ import annotations

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import ppl_vae as pv
import ppl_vae.train.fast as fast
import ppl_vae.train.fused as fused
from ppl_vae.errors import TrainingDiverged
from ppl_vae.train import FastPathWarning

D, BATCH = 12, 16


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    """(64, 12) binary rows with structure: 4 full batches of 16 per epoch, one batch shape."""
    g = torch.Generator().manual_seed(0)
    protos = (torch.rand(4, D, generator=g) > 0.5).float()
    rows = protos[torch.arange(64) % 4]
    return torch.where(torch.rand(64, D, generator=g) < 0.1, 1 - rows, rows)


def _vae(seed: int = 0) -> pv.VAE:
    torch.manual_seed(seed)
    return pv.VAE(D, 3, (16,))


class UserVAE(nn.Module):
    """A user's own program, written as in Pyro's examples/vae/vae.py (not one of ppl_vae's)."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(D, 16), nn.Softplus(), nn.Linear(16, 6))
        self.dec = nn.Sequential(nn.Linear(3, 16), nn.Softplus(), nn.Linear(16, D))

    def model(self, x: torch.Tensor) -> None:
        pyro.module("dec", self.dec)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 3), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.dec(z)).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        pyro.module("enc", self.enc)
        with pyro.plate("data", x.shape[0]):
            loc, raw = self.enc(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1))


def _fit(program, x, objective, fast_mode, epochs=2, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h = pv.fit(
            program,
            x,
            objective,
            epochs=epochs,
            batch_size=BATCH,
            lr=1e-2,
            seed=3,
            device="cpu",
            progress=False,
            fast=fast_mode,
            **kwargs,
        )
    return h, [w for w in caught if issubclass(w.category, FastPathWarning)]


@pytest.mark.parametrize(
    ("make", "objective"),
    [
        (lambda: (torch.manual_seed(0), UserVAE())[1], "trace"),  # a user's program, on request
        (
            _vae,
            "analytic:anneal_steps=6",
        ),  # the KL weight changes every step: an input of the graph
        (_vae, "iwae:k=3"),  # the objective's own Pyro loss, captured
    ],
)
def test_the_compiled_step_trains_like_the_eager_step(x, make, objective):
    """Same start, same random numbers: after 8 steps the parameters agree to float tolerance."""
    eager, compiled = make(), make()
    h_eager, _ = _fit(eager, x, objective, "eager")
    h_comp, warned = _fit(compiled, x, objective, "compile")
    assert not warned, [str(w.message) for w in warned]
    whole = h_comp.meta["fast_path"]["whole_step"]
    assert whole["epochs"] == [1, 2] and whole["reason"] is None and whole["compile_seconds"] > 0
    for a, b in zip(h_comp, h_eager, strict=True):
        assert a["train_elbo"] == pytest.approx(b["train_elbo"], rel=1e-5)
        assert a["test_elbo"] == b["test_elbo"]  # no test split here: None
    for p, q in zip(compiled.parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    state = (
        h_comp.state.optimizer.state
    )  # torch's own Adam state was advanced, step counts included
    assert all(int(s["step"]) == 8 for s in state.values())


class _DiscreteGuideVAE(pv.VAE):
    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            flip = pyro.sample("flip", dist.Bernoulli(x.new_full((x.shape[0],), 0.5)))
            z = pyro.sample(
                "z", dist.Normal(x.new_zeros(x.shape[0], self.latent_dim), 1.0).to_event(1)
            )
            pyro.sample(
                "x", dist.Bernoulli(logits=self.decoder(z) + flip.unsqueeze(-1)).to_event(1), obs=x
            )

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("flip", dist.Bernoulli(x.new_full((x.shape[0],), 0.5)))
            pyro.sample("z", self.encoder.dist(x))


def _param_model(x):
    loc = pyro.param("loc", torch.zeros(D))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
        pyro.sample("x", dist.Bernoulli(logits=z).to_event(1), obs=x)


def _param_guide(x):
    q = pyro.param("q", torch.zeros(D))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(q.expand(x.shape[0], D), 1.0).to_event(1))


@pytest.mark.parametrize(
    ("program", "objective", "reason"),
    [
        (lambda: (torch.manual_seed(0), _DiscreteGuideVAE(D, 3, (16,)))[1], "trace", "flip"),
        (lambda: pv.Program(_param_model, _param_guide), "trace", "pyro.param"),
    ],
)
def test_programs_the_compiled_step_cannot_take_fall_back_with_a_warning(
    x, program, objective, reason
):
    p = program()
    h, warned = _fit(p, x, objective, "compile")
    assert any(reason in str(w.message) and "whole step" in str(w.message) for w in warned), [
        str(w.message) for w in warned
    ]
    assert h.meta["fast_path"]["whole_step"]["epochs"] == []
    assert reason in h.meta["fast_path"]["whole_step"]["reason"]
    assert all(math.isfinite(r["train_elbo"]) for r in h)


def test_a_compiled_step_that_disagrees_with_the_eager_step_is_not_used(x, monkeypatch):
    """The check before use: a (deliberately) wrong step is refused, named, and training is the eager one."""
    monkeypatch.setattr(fused, "_compile", lambda graph, example: lambda *args: graph(*args) * 1.5)
    a, b = _vae(), _vae()
    h, warned = _fit(a, x, "analytic", "compile")
    h_eager, _ = _fit(b, x, "analytic", "eager")
    assert any("differs from the eager step" in str(w.message) for w in warned), [
        str(w.message) for w in warned
    ]
    assert h.meta["fast_path"]["whole_step"]["epochs"] == []
    assert "differs" in h.meta["fast_path"]["whole_step"]["reason"]
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_auto_compiles_only_long_runs_and_only_ppl_vae_programs(x):
    h, warned = _fit(_vae(), x, "analytic", "auto")
    assert not warned and h.meta["fast_path"]["whole_step"]["epochs"] == []
    assert "from step" in h.meta["fast_path"]["whole_step"]["reason"]
    h, warned = _fit(UserVAE(), x, "trace", "auto")
    assert not warned and "fast='compile'" in h.meta["fast_path"]["whole_step"]["reason"]


def _poison_after_epoch_1(vae):
    def callback(record):
        if record["epoch"] == 1:
            with torch.no_grad():
                vae.decoder.net[0].weight[0, 0] = float("nan")

    return callback


@pytest.mark.parametrize("mode", ["eager", "compile"])
def test_the_nan_guard_names_the_exact_step_and_restores_parameters_and_optimizer(x, mode):
    """A NaN appears in the first step of epoch 2 (step 5): both paths name it and go back to epoch 1."""
    vae = _vae()
    saved = {}

    def callback(record):
        state = pv.train.state_of(vae)  # the end of epoch 1, before the NaN is planted
        saved["params"] = [p.detach().clone() for p in vae.parameters()]
        saved["adam"] = [s["exp_avg"].clone() for s in state.optimizer.state.values()]
        _poison_after_epoch_1(vae)(record)

    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 5 \(batch starting at row 0"):
        _fit(vae, x, "analytic", mode, epochs=3, callback=callback)
    for p, q in zip(vae.parameters(), saved["params"], strict=True):
        assert torch.equal(p, q)
    state = pv.train.state_of(vae)
    assert state.epoch == 1 and state.step == 4
    assert state.engine.fused_epochs == ([1, 2] if mode == "compile" else [])
    for s, m in zip(state.optimizer.state.values(), saved["adam"], strict=True):
        assert torch.equal(s["exp_avg"], m)


def test_a_resumed_run_matches_an_uninterrupted_one_when_auto_switches_to_the_compiled_step(
    x, tmp_path, monkeypatch
):
    """fast='auto' switches at the first epoch starting after FUSE_AFTER_STEPS steps of the run (restored on
    resume), so an interrupted run switches at the same epoch: the histories agree to 1e-9."""
    monkeypatch.setattr(fast, "FUSE_AFTER_STEPS", 8)  # epochs 3 and 4 of 4 steps each
    whole = _vae()
    h_whole, _ = _fit(whole, x, "analytic", "auto", epochs=4, checkpoint_dir=tmp_path / "a")
    first = _vae()
    h_first, _ = _fit(first, x, "analytic", "auto", epochs=2, checkpoint_dir=tmp_path / "b")
    resumed = _vae(seed=1)  # different start: everything comes from the checkpoint
    h_resumed, _ = _fit(
        resumed, x, "analytic", "auto", epochs=2, checkpoint_dir=tmp_path / "b", resume=True
    )
    assert h_whole.meta["fast_path"]["whole_step"]["epochs"] == [3, 4]
    assert h_first.meta["fast_path"]["whole_step"]["epochs"] == []
    assert h_resumed.meta["fast_path"]["whole_step"]["epochs"] == [3, 4]
    assert [r["epoch"] for r in h_resumed] == [1, 2, 3, 4]
    for a, b in zip(h_resumed, h_whole, strict=True):
        for key in set(a) - {"seconds"}:
            if isinstance(a[key], float):
                assert math.isclose(a[key], b[key], rel_tol=0, abs_tol=1e-9), key
            else:
                assert a[key] == b[key], key
    for p, q in zip(resumed.parameters(), whole.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is False)"
)
def test_on_cuda_the_compiled_step_is_replayed_from_a_cuda_graph_and_trains_like_the_eager_step(x):
    xc = x.cuda()
    eager, compiled = _vae().cuda(), _vae().cuda()
    pv.fit(
        eager,
        xc,
        "analytic",
        epochs=2,
        batch_size=BATCH,
        lr=1e-2,
        seed=3,
        device="cuda",
        progress=False,
        fast="eager",
    )
    h = pv.fit(
        compiled,
        xc,
        "analytic",
        epochs=2,
        batch_size=BATCH,
        lr=1e-2,
        seed=3,
        device="cuda",
        progress=False,
        fast="compile",
    )
    assert h.meta["fast_path"]["whole_step"]["epochs"] == [1, 2]
    from ppl_vae.train.fused_cuda import CudaGraphStep

    assert any(isinstance(run, CudaGraphStep) for run in h.state.engine.fused.compiled.values())
    for p, q in zip(compiled.parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_the_compiled_steps_adam_update_is_torch_optim_adams():
    """fused.adam_update (the update traced into the compiled step) pinned against torch.optim.Adam: five
    steps with other betas and eps, the learning rate changed after the second."""
    g = torch.Generator().manual_seed(0)
    p = torch.randn(7, 3, generator=g)
    ref = p.clone().requires_grad_(True)
    opt = torch.optim.Adam([ref], lr=1e-2, betas=(0.8, 0.99), eps=1e-6)
    m, v, s = torch.zeros_like(p), torch.zeros_like(p), torch.zeros(())
    for t in range(1, 6):
        if t == 3:
            opt.param_groups[0]["lr"] = 3e-3
        grad = torch.randn(7, 3, generator=g) * 10.0 ** (t - 3)
        ref.grad = grad.clone()
        opt.step()
        fs = type("F", (), {"optimizer": opt})()
        step_size, bc2, _ = fused.FusedStep.hyper(fs, t, 1.0)  # type: ignore[arg-type]
        fused.adam_update(
            p,
            grad,
            m,
            v,
            s,
            torch.tensor(step_size),
            torch.tensor(bc2),
            beta1=0.8,
            beta2=0.99,
            eps=1e-6,
        )
        torch.testing.assert_close(p, ref.detach(), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(m, opt.state[ref]["exp_avg"])
        assert int(s) == int(opt.state[ref]["step"]) == t
