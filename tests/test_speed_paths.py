"""The fast paths of the SVI loop compute Pyro's ELBO, come from the user's programs, and fall back."""

from __future__ import annotations

import warnings

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

import ppl_vae as pv
from ppl_vae.objectives import parse_objective, scale_latents
from ppl_vae.programs import as_program, inspect_program
from ppl_vae.train import FastEngine, FastPathWarning, fast_elbo_loss


def _vae(d: int = 12, likelihood: str = "bernoulli", seed: int = 0) -> pv.VAE:
    torch.manual_seed(seed)
    return pv.VAE(d, 3, (16,), likelihood=likelihood)


def _loss_and_grads(fn, params, seed=3):
    torch.manual_seed(seed)
    loss = fn()
    return loss, torch.autograd.grad(loss, params)


@pytest.mark.parametrize("analytic", [False, True])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("weight", [1.0, 0.3])
def test_fast_elbo_equals_pyro_elbo_and_its_gradients(binary_x, analytic, likelihood, weight):
    vae = _vae(likelihood=likelihood)
    params = list(vae.parameters())
    elbo = TraceMeanField_ELBO() if analytic else Trace_ELBO()
    scale = 7.5

    def pyro_loss():
        with pyro.validation_enabled(False), poutine.scale(scale=scale), scale_latents(weight):
            return elbo.differentiable_loss(vae.model, vae.guide, binary_x)

    def fast_loss():
        return fast_elbo_loss(
            vae.model, vae.guide, binary_x, analytic=analytic, scale=scale, latent_weight=weight
        )

    ref, ref_grads = _loss_and_grads(pyro_loss, params)
    got, got_grads = _loss_and_grads(fast_loss, params)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-4)
    for g, r in zip(got_grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "objective", ["trace", "analytic", "iwae:k=3", "renyi:alpha=0.5,k=2", "iwae:k=3,grad=dreg"]
)
def test_graph_and_eager_paths_train_exactly_like_pyro(digits, objective):
    """One epoch per mode from the same start: same parameters, same history (incl. the short last batch).

    For the importance-weighted objectives the eager step is Pyro's loss and the graph is captured from it."""
    results = {}
    for mode in ("off", "eager", "graph"):
        vae = _vae(64, seed=1)
        h = pv.fit(
            vae,
            digits,
            objective,
            epochs=1,
            batch_size=200,
            seed=5,
            device="cpu",
            progress=False,
            fast=mode,
        )
        results[mode] = (vae, h[-1], h)
    engine = results["graph"][2].state.engine
    shapes = sorted(key[0] for key, run in engine.graphs.items() if run is not None)
    assert shapes == [((digits.meta.n_train % 200, 64),), ((200, 64),)], "one graph per batch shape"
    ref_vae, ref_rec, _ = results["off"]
    for mode in ("eager", "graph"):
        vae, rec, _ = results[mode]
        assert rec["train_elbo"] == pytest.approx(ref_rec["train_elbo"], rel=1e-6)
        assert rec["test_elbo"] == pytest.approx(ref_rec["test_elbo"], rel=1e-6)
        for p, q in zip(vae.parameters(), ref_vae.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=f"fast={mode}")


class _DiscreteGuideVAE(pv.VAE):
    """A user's program the fast ELBO cannot take: a discrete latent needs a score-function term."""

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            flip = pyro.sample("flip", dist.Bernoulli(x.new_full((x.shape[0],), 0.5)))
            z = pyro.sample(
                "z", dist.Normal(x.new_zeros(x.shape[0], self.latent_dim), 1.0).to_event(1)
            )
            logits = self.decoder(z) + flip.unsqueeze(-1)
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("flip", dist.Bernoulli(x.new_full((x.shape[0],), 0.5)))
            loc, scale = self.encoder(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


def test_a_program_the_fast_path_cannot_take_falls_back_to_pyro_and_says_why(binary_x):
    runs = {}
    for mode in ("auto", "off"):
        torch.manual_seed(0)
        m = _DiscreteGuideVAE(12, 3, (16,))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runs[mode] = (
                m,
                pv.fit(
                    m,
                    binary_x,
                    "trace",
                    epochs=2,
                    batch_size=16,
                    device="cpu",
                    progress=False,
                    fast=mode,
                ),
            )
        reported = [w for w in caught if issubclass(w.category, FastPathWarning)]
        assert len(reported) == (1 if mode == "auto" else 0), [str(w.message) for w in reported]
    history = runs["auto"][1]
    assert (
        history.meta["fast_path"]["path"] == "pyro"
        and "flip" in history.meta["fast_path"]["reason"]
    )
    assert "flip" in history.state.engine.problem
    assert [r["train_elbo"] for r in runs["auto"][1]] == [r["train_elbo"] for r in runs["off"][1]]
    for p, q in zip(runs["auto"][0].parameters(), runs["off"][0].parameters(), strict=True):
        assert torch.equal(p, q)
    with warnings.catch_warnings(
        record=True
    ) as caught:  # reported once per training state, not per call
        warnings.simplefilter("always")
        pv.fit(
            runs["auto"][0],
            binary_x,
            "trace",
            epochs=1,
            batch_size=16,
            device="cpu",
            progress=False,
        )
    assert not [w for w in caught if issubclass(w.category, FastPathWarning)]


class _CountingVAE(pv.VAE):
    """A user's model with a Python side effect: the eager fast path runs it every step."""

    calls = 0

    def model(self, x):
        self.calls += 1
        super().model(x)


def _engine(vae, rows):
    program = as_program(vae)
    info = inspect_program(program, (rows,))
    engine = FastEngine(program, parse_objective("analytic"), "auto", info, [])
    engine.begin_call({(tuple(rows.shape),): 10**6})
    return engine


def test_user_programs_run_eagerly_every_step_and_get_graphs_only_when_asked(binary_x):
    torch.manual_seed(0)
    vae = _CountingVAE(12, 3, (16,))
    engine = _engine(vae, binary_x)
    calls = vae.calls
    engine.check((binary_x,), 1.0)
    assert engine.problem is None and vae.calls == calls, "the up-front check runs on a copy"
    assert not engine.graph_safe() and engine.graph_for((binary_x,), 1.0) is None
    before = vae.calls
    pv.fit(vae, binary_x, "analytic", epochs=3, batch_size=40, device="cpu", progress=False)
    assert vae.calls - before >= 3, "the user's model runs (with its side effect) on every step"
    ours = _engine(_vae(), binary_x)
    assert ours.graph_safe() and ours.graph_for((binary_x,), 1.0) is not None


def test_kl_weight_schedules_use_the_fast_path_with_the_weight(binary_x):
    """An annealed objective (if registered) trains on the fast path and matches Pyro's ELBO with scale_latents."""
    try:
        obj = parse_objective("analytic:anneal=2")
    except ValueError:
        pytest.skip("this objectives registry has no KL annealing")
    runs = {}
    for mode in ("eager", "off"):
        vae = _vae(seed=2)
        runs[mode] = (
            vae,
            pv.fit(
                vae, binary_x, obj, epochs=2, batch_size=16, device="cpu", progress=False, fast=mode
            ),
        )
    assert runs["eager"][1].state.engine.problem is None
    for p, q in zip(runs["eager"][0].parameters(), runs["off"][0].parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_fit_fuses_adam_for_large_models_only_and_rejects_unknown_fast_modes(binary_x):
    from ppl_vae.train import FUSED_ADAM_MIN_CPU, adam

    small = _vae()
    h = pv.fit(small, binary_x, epochs=1, batch_size=16, device="cpu", progress=False)
    assert not h.state.optimizer.defaults.get("fused")
    big = [torch.zeros(FUSED_ADAM_MIN_CPU, requires_grad=True)]
    assert adam(big, 1e-3).defaults.get("fused") in (
        True,
        None,
    )  # None: a torch without CPU fused Adam
    vae = _vae()
    with pytest.raises(ValueError, match="fast must be one of"):
        pv.fit(vae, binary_x, epochs=1, progress=False, fast="turbo")


def test_short_calls_check_the_data_once_and_again_after_an_in_place_edit(binary_x, monkeypatch):
    """fit(..., epochs=1) in a loop: the data are converted and scanned on the first call only, and again
    when the tensor changes in place (its version counter moves), so a NaN written later is still refused."""
    import ppl_vae.train.svi as svi
    from ppl_vae.errors import DataError

    calls = []
    real = svi.as_train_data
    monkeypatch.setattr(svi, "as_train_data", lambda *a, **k: calls.append(1) or real(*a, **k))
    vae, x = _vae(), binary_x.clone()
    for _ in range(3):
        pv.fit(vae, x, epochs=1, batch_size=16, device="cpu", progress=False)
    assert len(calls) == 1
    x[0, 0] = 1 - x[0, 0]
    pv.fit(vae, x, epochs=1, batch_size=16, device="cpu", progress=False)
    assert len(calls) == 2
    x[0, 0] = float("inf")  # (a NaN is a missing cell since issue 21; an inf is still refused)
    with pytest.raises(DataError, match="non-finite"):
        pv.fit(vae, x, epochs=1, batch_size=16, device="cpu", progress=False)


def test_a_loop_over_chunks_checks_each_chunk_once_and_holds_none_of_them(digits, monkeypatch):
    """fit over a few rotating chunks of a Dataset (as benchmarks/bench_mnist.py trains): each chunk is
    scanned on its first call only; the memo keeps weak references, so a dropped chunk is freed, and an
    in-place edit of a chunk is scanned again."""
    import dataclasses
    import gc
    import weakref

    from ppl_vae.errors import DataError

    chunks = [
        dataclasses.replace(
            digits,
            train=digits.train[i::3].clone(),
            train_probs=digits.train_probs[i::3],
            train_labels=digits.train_labels[i::3],
        )
        for i in range(3)
    ]
    vae = pv.VAE(64, 2, (16,))
    scanned = []
    real = vae.likelihood.check
    monkeypatch.setattr(vae.likelihood, "check", lambda x, arg: scanned.append(arg) or real(x, arg))
    for i in range(9):
        pv.fit(vae, chunks[i % 3], epochs=1, batch_size=64, device="cpu", progress=False)
    assert len(scanned) == 3 * 3, scanned  # train, test and the grey levels of each chunk, once
    gone = weakref.ref(chunks[0].train)
    chunks[0] = dataclasses.replace(chunks[0], train=chunks[0].train.clone())
    gc.collect()
    assert gone() is None, "the memo must not keep a chunk alive"
    chunks[1].train[0, 0] = float("nan")
    with pytest.raises(DataError, match="non-finite"):
        pv.fit(vae, chunks[1], epochs=1, batch_size=64, device="cpu", progress=False)
