"""The CUDA path: data, prior tensors, fast paths, the NaN guard and checkpoints on the GPU.

Every test here needs a CUDA device and is skipped, with that reason, without one.
"""

from __future__ import annotations

import math

import pytest
import torch

import ppl_vae as pv
from ppl_vae.store.checkpoint import load_checkpoint
from ppl_vae.train import mean_elbo

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="needs a CUDA device (torch.cuda.is_available() is False)",
    ),
]


def _vae(seed: int = 0) -> pv.VAE:
    torch.manual_seed(seed)
    return pv.VAE(64, 4, (32,))


@pytest.mark.parametrize("objective", ["trace", "analytic", "iwae:k=3"])
@pytest.mark.parametrize("fast", ["off", "eager", "graph"])
def test_fit_on_cuda_learns_and_keeps_everything_on_the_device(digits, objective, fast):
    vae = _vae()
    history = pv.fit(
        vae,
        digits,
        objective,
        epochs=3,
        batch_size=128,
        lr=3e-3,
        device="cuda",
        progress=False,
        fast=fast,
    )
    assert all(p.is_cuda for p in vae.parameters())
    assert history[-1]["test_elbo"] > history[0]["test_elbo"]
    state = history.state.optimizer.state
    assert all(
        t.is_cuda
        for s in state.values()
        for k, t in s.items()
        if torch.is_tensor(t) and k != "step"
    )


def test_auto_device_picks_cuda_and_the_fast_elbo_runs_there(digits):
    from ppl_vae.train import fast_elbo_loss

    vae = _vae()
    x = digits.test[:64]
    losses = []
    for dev in ("cpu", "cuda"):
        vae.to(dev)
        torch.manual_seed(0)
        z_free = fast_elbo_loss(vae.model, vae.guide, x.to(dev), analytic=True)
        losses.append(float(z_free))
    assert math.isfinite(losses[1])
    pv.fit(vae, digits, epochs=1, device="auto", progress=False)
    assert next(vae.parameters()).is_cuda


def test_checkpoints_resume_onto_cuda_and_load_on_either_device(digits, tmp_path):
    a = _vae()
    pv.fit(
        a,
        digits,
        "analytic",
        epochs=2,
        device="cuda",
        checkpoint_dir=tmp_path / "ck",
        progress=False,
    )
    b = _vae(seed=1)
    h = pv.fit(
        b,
        digits,
        "analytic",
        epochs=1,
        device="cuda",
        checkpoint_dir=tmp_path / "ck",
        resume=True,
        progress=False,
    )
    assert h[-1]["epoch"] == 3
    for dev in ("cpu", "cuda"):
        model, _ = load_checkpoint(tmp_path / "ck", device=dev)
        assert all(p.device.type == dev for p in model.parameters())
        assert math.isfinite(mean_elbo(model, digits.test.to(dev)))


class _Exploding(pv.VAE):
    def __init__(self, *args, explode_at: int, **kw):
        super().__init__(*args, **kw)
        self.calls, self.explode_at = 0, explode_at

    def model(self, x):
        self.calls += 1
        if self.calls >= self.explode_at:
            with torch.no_grad():
                self.decoder.net[-1].bias.fill_(float("nan"))
        super().model(x)


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_the_lazy_nan_guard_on_cuda_names_the_exact_step_and_restores(digits):
    steps_per_epoch = math.ceil(digits.meta.n_train / 128)
    torch.manual_seed(0)
    vae = _Exploding(64, 4, (32,), explode_at=steps_per_epoch + 5)
    with pytest.raises(
        pv.TrainingDiverged, match=rf"epoch 2, step {steps_per_epoch + 5} .*end of epoch 1"
    ):
        pv.fit(vae, digits, "trace", epochs=3, device="cuda", progress=False)
    assert all(torch.isfinite(p).all() for p in vae.parameters())
    assert pv.train.state_of(vae).step == steps_per_epoch, (
        "counters back at the last good epoch, as the weights"
    )


def test_iw_estimators_on_cuda_compiled_and_eager_agree(digits):
    import ppl_vae.estimators.compiled as compiled
    import ppl_vae.estimators.importance as ev

    vae = _vae().to("cuda").eval()
    x = digits.test[:64].cuda()
    compiled.clear_cache()
    eager = ev.iw_log_likelihood(vae.model, vae.guide, x, 200, batch_size=16, seed=0, fast="eager")
    fast = ev.iw_log_likelihood(vae.model, vae.guide, x, 200, batch_size=16, seed=0, fast="compile")
    assert eager.is_cuda and fast.is_cuda
    assert compiled._CACHE, "the chunk was not compiled on CUDA"
    torch.testing.assert_close(fast, eager, rtol=1e-5, atol=1e-3)
    cpu = ev.iw_log_likelihood(
        vae.cpu().model, vae.guide, x.cpu(), 200, batch_size=16, seed=0, fast="eager"
    )
    assert (
        abs(float(cpu.mean()) - float(eager.mean().cpu())) < 0.5
    )  # other draws (CUDA's generator), same estimate
