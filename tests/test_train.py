"""The SVI loop: learning, reproducibility, continuation, resume, scoping, the NaN guard."""

from __future__ import annotations

import math

import pyro
import pytest
import torch

import ppl_vae as pv
from ppl_vae.store.checkpoint import load_model_state, read_config


def _small(digits_data, **kw):
    torch.manual_seed(0)
    return pv.VAE(digits_data.meta.input_dim, 4, (32,), **kw)


@pytest.mark.parametrize("objective", ["trace", "analytic"])
def test_fit_raises_the_test_elbo(digits, objective):
    vae = _small(digits)
    history = pv.fit(vae, digits, objective, epochs=4, batch_size=64, lr=3e-3, progress=False)
    tests = [r["test_elbo"] for r in history]
    assert all(math.isfinite(t) for t in tests)
    assert tests[-1] > tests[0] + 1.0, tests
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]


def test_same_seed_same_history_and_caller_rng_untouched(digits):
    model = _small(digits)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    h1 = pv.fit(model, digits, "trace", epochs=2, seed=7, progress=False)
    after = torch.rand(1)
    h2 = pv.fit(_small(digits), digits, "trace", epochs=2, seed=7, progress=False)
    assert [r["train_elbo"] for r in h1] == [r["train_elbo"] for r in h2]
    assert [r["test_elbo"] for r in h1] == [r["test_elbo"] for r in h2]
    assert torch.equal(before, after), "fit must not consume the caller's global RNG"
    h3 = pv.fit(_small(digits), digits, "trace", epochs=2, seed=8, progress=False)
    assert [r["train_elbo"] for r in h3] != [r["train_elbo"] for r in h1]


def test_second_fit_call_continues(digits):
    a = _small(digits)
    pv.fit(a, digits, "analytic", epochs=2, progress=False)
    h = pv.fit(a, digits, "analytic", epochs=1, progress=False)
    assert [r["epoch"] for r in h] == [1, 2, 3]
    b = _small(digits)
    h_once = pv.fit(b, digits, "analytic", epochs=3, progress=False)
    assert h[-1]["train_elbo"] == pytest.approx(h_once[-1]["train_elbo"], rel=1e-5)


def test_resume_from_checkpoint_equals_uninterrupted_run(digits, tmp_path):
    a = _small(digits)
    pv.fit(a, digits, "analytic", epochs=2, checkpoint_dir=tmp_path / "ck", progress=False)
    b = _small(digits)  # fresh weights: resume must load them from disk
    h = pv.fit(
        b, digits, "analytic", epochs=1, checkpoint_dir=tmp_path / "ck", resume=True, progress=False
    )
    c = _small(digits)
    h_once = pv.fit(c, digits, "analytic", epochs=3, progress=False)
    assert [r["epoch"] for r in h] == [1, 2, 3]
    assert h[-1]["test_elbo"] == pytest.approx(h_once[-1]["test_elbo"], rel=1e-5)
    assert read_config(tmp_path / "ck")["training"]["epoch"] == 3


def test_two_models_in_one_process_leave_the_param_store_alone(digits):
    pyro.clear_param_store()
    a, b = _small(digits), pv.VAE(digits.meta.input_dim, 2, (16,))
    pv.fit(a, digits, epochs=1, progress=False)
    pv.fit(b, digits, epochs=1, progress=False)
    assert len(pyro.get_param_store()) == 0
    assert a.decoder.net[0].weight.shape != b.decoder.net[0].weight.shape


def test_fit_accepts_a_plain_tensor(binary_x):
    vae = pv.VAE(12, 2, (16,))
    h = pv.fit(vae, binary_x, epochs=2, batch_size=16, progress=False)
    assert len(h) == 2 and math.isfinite(h[-1]["train_elbo"])


class _Exploding(pv.VAE):
    """Turns the decoder's output to NaN on its ``explode_at``-th call after being armed (a stand-in
    for a diverging run); armed from ``fit``'s callback at the end of an epoch."""

    def __init__(self, *args, explode_at: int, **kw):
        super().__init__(*args, **kw)
        self.calls, self.explode_at, self.armed = 0, explode_at, False

    def model(self, x):
        self.calls += self.armed
        if self.armed and self.calls >= self.explode_at:
            with torch.no_grad():
                self.decoder.net[-1].bias.fill_(float("nan"))
        super().model(x)


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_nan_loss_stops_restores_and_keeps_the_last_good_checkpoint(digits, tmp_path):
    torch.manual_seed(0)
    vae = _Exploding(64, 4, (32,), explode_at=3)
    ck = tmp_path / "ck"

    def arm(record):
        vae.armed = vae.armed or record["epoch"] == 2

    with pytest.raises(
        pv.TrainingDiverged, match=r"epoch 3, step \d+.*restored to the end of epoch 2 .*ck"
    ):
        pv.fit(vae, digits, "trace", epochs=5, checkpoint_dir=ck, progress=False, callback=arm)
    assert read_config(ck)["training"]["epoch"] == 2
    assert all(torch.isfinite(p).all() for p in vae.parameters()), (
        "model restored to the last good state"
    )
    again = pv.VAE(64, 4, (32,))
    load_model_state(ck, again)
    for (name, p), q in zip(vae.state_dict().items(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, msg=name)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"epochs": -1}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": float("nan")}, "lr"),
        ({"objective": "nope"}, "unknown objective 'nope'.*trace.*analytic"),
        ({"objective": "trace:foo=1"}, "no parameter 'foo'"),
        ({"device": "cuda:0"} if not torch.cuda.is_available() else {"device": "tpu"}, "device"),
    ],
)
def test_fit_rejects_bad_arguments(digits, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pv.fit(_small(digits), digits, epochs=kwargs.pop("epochs", 1), progress=False, **kwargs)


def test_fit_rejects_grey_data_for_bernoulli():
    data = pv.load_dataset("digits", seed=0)  # no binarisation: grey levels
    with pytest.raises(ValueError, match="bernoulli.*binarize='dynamic'"):
        pv.fit(_small(data), data, epochs=1, progress=False)


class _InfAtTest(pv.VAE):
    """Finite training losses, but a test ELBO of -inf from a given epoch on (evaluation runs in eval mode)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.armed = False

    def model(self, x):
        if self.armed and not self.training:
            with torch.no_grad():
                self.decoder.net[-1].bias.fill_(float("inf"))  # logits +inf: log p(x=0) = -inf
        super().model(x)


def test_a_non_finite_test_elbo_is_a_divergence_not_a_good_epoch(digits, tmp_path):
    torch.manual_seed(0)
    vae = _InfAtTest(64, 4, (32,))

    def arm(record):
        vae.armed = record["epoch"] == 1

    with pytest.raises(
        pv.TrainingDiverged,
        match=r"test elbo became (-inf|nan) at epoch 2.*restored to the end of epoch 1",
    ):
        pv.fit(
            vae,
            digits,
            "analytic",
            epochs=3,
            checkpoint_dir=tmp_path / "ck",
            progress=False,
            callback=arm,
        )
    assert read_config(tmp_path / "ck")["training"]["epoch"] == 1
    assert all(torch.isfinite(p).all() for p in vae.parameters())


def test_a_divergence_before_any_epoch_says_nothing_was_saved(digits, tmp_path):
    torch.manual_seed(0)
    vae = _Exploding(64, 4, (32,), explode_at=5)  # a few steps into the first epoch
    vae.armed = True
    with pytest.raises(
        pv.TrainingDiverged,
        match=r"epoch 1, step \d+ .*no epoch completed, so no checkpoint was written",
    ):
        pv.fit(vae, digits, "trace", epochs=2, checkpoint_dir=tmp_path / "ck", progress=False)
    assert not list((tmp_path / "ck").glob("*.safetensors")) and not list(
        (tmp_path / "ck").glob("*/*.safetensors")
    )


def test_fit_remembers_a_bounded_number_of_training_states_and_says_when_one_was_dropped():
    """The one memory of programs (train/state.py): the last STATE_CACHE_SIZE states, so a deleted
    model is freed once it leaves the bound (a weak-keyed map kept every trained model alive: its state
    refers to it); a model whose state was dropped is told so, once, and trains on."""
    import gc
    import weakref

    from ppl_vae.train import state as train_state

    x = (torch.rand(32, 6, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    first = pv.VAE(6, 2, (8,))
    pv.fit(first, x, "analytic", epochs=1, progress=False)
    refs = []
    for _ in range(train_state.STATE_CACHE_SIZE + 1):
        vae = pv.VAE(6, 2, (8,))
        pv.fit(vae, x, "analytic", epochs=1, progress=False)
        refs.append(weakref.ref(vae))
        del vae
    gc.collect()
    assert refs[0]() is None  # left the bound: freed
    assert len(train_state._STATES) == train_state.STATE_CACHE_SIZE
    assert pv.train.state_of(first) is None
    with pytest.warns(UserWarning, match="left the cache of the last 8 programs"):
        h = pv.fit(first, x, "analytic", epochs=1, progress=False)
    assert pv.train.state_of(first) is h.state and h.state.epoch == 1
