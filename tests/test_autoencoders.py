"""Deterministic autoencoders: each one learns, each regulariser does what it says, and the
training conventions (seeding, resume, NaN guard, checkpoints, run folders) match the VAE's."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ppl_vae.autoencoders import (
    Autoencoder,
    ContractiveAE,
    DenoisingAE,
    SparseAE,
    bernoulli_kl,
    make_autoencoder,
)
from ppl_vae.data import load_dataset
from ppl_vae.diagnostics.autoencoders import evaluate_autoencoder
from ppl_vae.store.checkpoint import load_checkpoint, save_checkpoint
from ppl_vae.train import TrainingDiverged
from ppl_vae.train.autoencoder import fit_autoencoder


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks on a shared 2-core machine: one intra-op thread is 10-100x faster than two
    spinning OpenMP threads under load, and the numbers do not depend on it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def grey_digits():
    """scikit-learn digits as grey levels in [0, 1] (no binarisation): 1437 train, 360 test rows."""
    return load_dataset("digits", seed=0)


def _train_loss(ae: Autoencoder, x: torch.Tensor, seed: int = 99) -> float:
    """Full-batch objective with a fixed corruption draw (so before/after are comparable)."""
    ae.eval()
    with torch.no_grad() if not isinstance(ae, ContractiveAE) else torch.enable_grad():
        return float(ae.loss(x, generator=torch.Generator().manual_seed(seed)).detach())


KINDS = {
    "ae": {},
    "dae": {"sigma": 0.3},
    "dae_mask": {"noise": "mask", "p": 0.3},
    "sae": {"rho": 0.1, "lam": 1.0},
    "cae": {"lam": 0.1},
}


@pytest.mark.parametrize("name", list(KINDS))
def test_each_autoencoder_lowers_its_training_loss(grey_digits, name):
    torch.manual_seed(0)
    ae = make_autoencoder(name.split("_")[0], 64, 4, hidden_dims=(64,), **KINDS[name])
    before = _train_loss(ae, grey_digits.train)
    history = fit_autoencoder(
        ae, grey_digits, epochs=4, batch_size=64, lr=3e-3, seed=0, progress=False
    )
    after = _train_loss(ae, grey_digits.train)
    assert after < 0.8 * before, (before, after)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["test_loss"] < history[0]["test_loss"]
    for r in history:
        assert math.isclose(
            r["train_loss"], r["train_reconstruction"] + r["train_penalty"], rel_tol=1e-5
        )
        assert r["objective"] == ae.spec


def test_denoising_ae_cleans_noisy_inputs_better_than_vanilla(grey_digits):
    noisy = grey_digits.test + 0.5 * torch.randn(
        grey_digits.test.shape, generator=torch.Generator().manual_seed(1)
    )
    errors = {}
    for cls, kwargs in ((Autoencoder, {}), (DenoisingAE, {"sigma": 0.5})):
        torch.manual_seed(0)
        ae = cls(64, 8, (128,), reconstruction="mse", **kwargs)
        fit_autoencoder(ae, grey_digits, epochs=6, batch_size=64, lr=3e-3, seed=0, progress=False)
        with torch.no_grad():
            errors[cls.__name__] = float(
                (ae.decode(ae.encode(noisy)) - grey_digits.test).pow(2).sum(-1).mean()
            )
    # measured: about 2.7 (denoising) vs 3.6 (vanilla) squared error per image, summed over 64 pixels
    assert errors["DenoisingAE"] < 0.9 * errors["Autoencoder"], errors


def test_corruption_is_seeded_and_has_the_right_statistics():
    x = torch.full((2000, 10), 0.5)
    g = DenoisingAE(10, 2, (), reconstruction="mse", sigma=0.2)
    a = g.corrupt(x, torch.Generator().manual_seed(0))
    b = g.corrupt(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert abs(float((a - x).std()) - 0.2) < 0.01
    m = DenoisingAE(10, 2, (), noise="mask", p=0.3)
    masked = m.corrupt(x, torch.Generator().manual_seed(0))
    assert abs(float((masked == 0).float().mean()) - 0.3) < 0.02
    assert torch.all((masked == 0) | (masked == x))
    # reconstruct never corrupts
    assert torch.equal(g.reconstruct(x), g.reconstruct(x))


def test_sparse_ae_moves_mean_code_activation_toward_rho(grey_digits):
    rho = 0.05
    torch.manual_seed(0)
    ae = SparseAE(64, 8, (64,), rho=rho, lam=2.0)
    with torch.no_grad():
        start = float(ae.encode(grey_digits.train).mean())
    fit_autoencoder(ae, grey_digits, epochs=6, batch_size=64, lr=3e-3, seed=0, progress=False)
    with torch.no_grad():
        end = ae.encode(grey_digits.train).mean(0)
    assert abs(float(end.mean()) - rho) < 0.5 * abs(start - rho), (start, end)
    assert float(end.mean()) < 0.15, end
    # the same training without the penalty keeps the code far from rho
    torch.manual_seed(0)
    free = SparseAE(64, 8, (64,), rho=rho, lam=0.0)
    fit_autoencoder(free, grey_digits, epochs=6, batch_size=64, lr=3e-3, seed=0, progress=False)
    with torch.no_grad():
        assert float(free.encode(grey_digits.train).mean()) > float(end.mean()) + 0.1


def test_bernoulli_kl_matches_its_formula_and_vanishes_at_rho():
    q = torch.tensor([0.05, 0.2, 0.5, 0.9])
    expected = 0.05 * torch.log(0.05 / q) + 0.95 * torch.log(0.95 / (1 - q))
    assert torch.allclose(bernoulli_kl(0.05, q), expected, atol=1e-6)
    assert float(bernoulli_kl(0.05, torch.tensor(0.05))) == pytest.approx(0.0, abs=1e-7)


def _autograd_frobenius(ae: ContractiveAE, x: torch.Tensor) -> torch.Tensor:
    """||d f(x_n) / d x_n||_F^2 for each row, from torch.autograd.functional.jacobian, one point at a time."""
    return torch.stack(
        [torch.autograd.functional.jacobian(ae.encode, x[n]).pow(2).sum() for n in range(len(x))]
    )


@pytest.mark.parametrize("code_activation", ["sigmoid", "tanh"])
@pytest.mark.parametrize("hidden_dims", [(), (16, 8)])
def test_contractive_penalty_equals_the_autograd_jacobian_norm(code_activation, hidden_dims):
    torch.manual_seed(0)
    ae = ContractiveAE(
        7,
        3,
        hidden_dims,
        reconstruction="mse",
        code_activation=code_activation,
        activation="tanh",
        lam=0.5,
    ).double()
    x = torch.randn(6, 7, dtype=torch.float64)
    expected = _autograd_frobenius(ae, x)
    assert ae.has_closed_form == (hidden_dims == ())
    got = ae.jacobian_norm(x)
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)
    assert torch.allclose(ae.jacobian_norm(x, method="autograd"), expected, rtol=1e-10, atol=1e-12)
    if hidden_dims == ():
        # the closed form sum_j (h_j (1 - h_j))^2 ||W_j||^2, written out once more
        h = ae.encode(x)
        slope = h * (1 - h) if code_activation == "sigmoid" else 1 - h**2
        manual = (slope**2 * ae.encoder[0].weight.pow(2).sum(1)).sum(-1)
        assert torch.allclose(got, manual)
    else:
        with pytest.raises(ValueError, match="one-layer encoder"):
            ae.jacobian_norm(x, method="closed_form")
    terms = ae.loss_terms(x)
    assert float(terms["penalty"].detach()) == pytest.approx(
        0.5 * float(expected.mean()), rel=1e-10
    )
    # and the penalty trains: it has a gradient with respect to the encoder's weights
    terms["penalty"].backward()
    assert ae.encoder[0].weight.grad is not None and ae.encoder[0].weight.grad.abs().sum() > 0


def test_same_seed_same_history_and_resume_matches_uninterrupted(grey_digits, tmp_path):
    def make() -> DenoisingAE:
        torch.manual_seed(0)
        return DenoisingAE(64, 4, (32,), reconstruction="mse", sigma=0.3)

    a, b = make(), make()
    ha = fit_autoencoder(a, grey_digits, epochs=2, batch_size=128, seed=3, progress=False)
    hb = fit_autoencoder(b, grey_digits, epochs=2, batch_size=128, seed=3, progress=False)
    assert [r["train_loss"] for r in ha] == [r["train_loss"] for r in hb]

    c = make()
    fit_autoencoder(
        c,
        grey_digits,
        epochs=1,
        batch_size=128,
        seed=3,
        progress=False,
        checkpoint_dir=tmp_path / "ck",
    )
    d = make()
    hd = fit_autoencoder(
        d,
        grey_digits,
        epochs=1,
        batch_size=128,
        seed=3,
        progress=False,
        checkpoint_dir=tmp_path / "ck",
        resume=True,
    )
    assert [r["epoch"] for r in hd] == [1, 2]
    assert hd[-1]["train_loss"] == pytest.approx(ha[-1]["train_loss"], rel=1e-6)
    for p, q in zip(a.parameters(), d.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)


def test_fit_leaves_global_rng_alone(grey_digits):
    ae = Autoencoder(64, 2, (8,), reconstruction="mse")
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    fit_autoencoder(ae, grey_digits, epochs=1, progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_nan_guard_restores_last_good_epoch(grey_digits):
    torch.manual_seed(0)
    ae = Autoencoder(64, 2, (8,), reconstruction="mse")
    saved = {}

    def poison(record):
        saved.update({k: v.clone() for k, v in ae.state_dict().items()})
        with torch.no_grad():
            ae.encoder[0].weight.fill_(float("nan"))

    with pytest.raises(TrainingDiverged, match="epoch 2"):
        fit_autoencoder(ae, grey_digits, epochs=3, progress=False, callback=poison)
    for k, v in ae.state_dict().items():
        assert torch.equal(v, saved[k]), k


def test_checkpoint_round_trip_rebuilds_every_autoencoder(tmp_path):
    x = torch.rand(5, 6)
    for kind, kwargs in (
        ("ae", {}),
        ("dae", {"noise": "mask", "p": 0.4}),
        ("sae", {"rho": 0.2}),
        ("cae", {"lam": 0.3}),
    ):
        torch.manual_seed(0)
        ae = make_autoencoder(kind, 6, 2, hidden_dims=(5,), **kwargs)
        save_checkpoint(tmp_path / kind, ae)
        loaded, config = load_checkpoint(tmp_path / kind)
        assert type(loaded) is type(ae) and loaded.config == ae.config
        assert json.loads(json.dumps(config["model"])) == ae.config
        assert torch.equal(loaded.reconstruct(x), ae.reconstruct(x))


def test_check_data_and_arguments_say_what_is_wrong():
    ae = Autoencoder(3, 2, (4,), reconstruction="bce")
    with pytest.raises(ValueError, match="reconstruction='mse'"):
        ae.check_data(torch.tensor([[0.0, 2.0, 0.5]]))
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        ae.check_data(torch.zeros(4, 5))
    with pytest.raises(ValueError, match="non-finite"):
        Autoencoder(2, 1, reconstruction="mse").check_data(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match="reconstruction must be"):
        Autoencoder(3, reconstruction="l1")
    with pytest.raises(ValueError, match="rho"):
        SparseAE(3, rho=1.5)
    with pytest.raises(ValueError, match="sigmoid"):
        SparseAE(3, code_activation="tanh")
    with pytest.raises(ValueError, match="noise"):
        DenoisingAE(3, noise="salt")
    with pytest.raises(ValueError, match="takes no option"):
        make_autoencoder("ae", 3, 2, rho=0.1)
    with pytest.raises(ValueError, match="unknown autoencoder"):
        make_autoencoder("vae2", 3, 2)


def test_evaluate_autoencoder_reports_reconstruction_and_no_likelihood(grey_digits):
    torch.manual_seed(0)
    ae = SparseAE(64, 4, (16,), rho=0.1)
    report = evaluate_autoencoder(ae, grey_digits.test)
    assert report["log_px"] is None and report["n"] == len(grey_digits.test)
    with torch.no_grad():
        rec = ae.reconstruct(grey_digits.test)
    assert report["squared_error"] == pytest.approx(
        float((rec - grey_digits.test).pow(2).sum(-1).mean()), rel=1e-5
    )
    assert report["mse"] == pytest.approx(report["squared_error"] / 64)
    assert report["bce"] == pytest.approx(report["loss"]) and report["penalty"] > 0
    json.dumps(report)


def test_train_run_and_load_run_handle_autoencoders(tmp_path):
    from ppl_vae.runs import load_run, train_run

    run = train_run(
        tmp_path / "sae",
        dataset="two_moons",
        model="sae",
        latent_dim=2,
        hidden_dims=(16,),
        epochs=2,
        progress=False,
        ae_options={"rho": 0.2, "lam": 0.5},
    )
    metrics = json.loads((tmp_path / "sae" / "metrics.json").read_text())
    assert metrics["config"]["model"]["class"] == "SparseAE"
    assert metrics["config"]["model"]["reconstruction"] == "mse"  # 2-D points: MSE
    assert metrics["config"]["data_args"]["binarize"] is None
    assert metrics["final_test_loss"] == run.history[-1]["test_loss"]
    loaded = load_run(tmp_path / "sae")
    assert isinstance(loaded.model, SparseAE) and loaded.model.rho == 0.2
    assert torch.equal(
        loaded.model.reconstruct(loaded.data.test), run.model.cpu().reconstruct(run.data.test)
    )
    # digits: BCE on the same dynamically binarised data as the VAE
    run = train_run(
        tmp_path / "ae",
        dataset="digits",
        model="ae",
        latent_dim=2,
        hidden_dims=(16,),
        epochs=1,
        progress=False,
        n_samples=200,
    )
    assert (
        run.config["model"]["reconstruction"] == "bce"
        and run.config["data_args"]["binarize"] == "dynamic"
    )
    resumed = train_run(tmp_path / "ae", resume=True, objective=None, epochs=1, progress=False)
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    with pytest.raises(ValueError, match="are for autoencoders"):
        train_run(tmp_path / "v", model="vae", ae_options={"rho": 0.1})
