"""Objectives: parsing, beta and annealing, the IWAE/Renyi loss, and the JIT ELBOs' caching and scales."""

from __future__ import annotations

import math
import warnings

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import JitTraceMeanField_ELBO, RenyiELBO, Trace_ELBO, TraceMeanField_ELBO

import ppl_vae as pv
from ppl_vae.estimators import iw_log_likelihood
from ppl_vae.models import standard_normal_kl
from ppl_vae.objectives import (
    CachedJitTrace_ELBO,
    format_objective,
    kl_schedule,
    parse_objective,
    scale_latents,
)


@pytest.fixture(autouse=True)
def _one_thread_and_scoped_store():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pyro.get_param_store().scope():
        yield
    torch.set_num_threads(threads)


def _vae(d_in: int = 12, seed: int = 0) -> pv.VAE:
    torch.manual_seed(seed)
    return pv.VAE(d_in, 3, (16,))


def _seeded(fn, seed: int = 3):
    torch.manual_seed(seed)
    return fn()


# ----------------------------------------------------------------------------- names and parameters


@pytest.mark.parametrize(
    "spec",
    [
        "iwae:k=7",
        "renyi:alpha=0.25,k=3",
        "analytic:beta=4",
        "trace:anneal=10",
        "analytic:anneal_steps=100,beta=0.5",
        "jit_analytic:beta=2",
        "trace",
        "iwae",
        "analytic:beta=0.1234567",
    ],
)
def test_spec_round_trips(spec):
    obj = parse_objective(spec)
    again = parse_objective(obj.spec)
    assert again.name == obj.name and again.params == obj.params
    assert format_objective(obj.name, obj.params) == obj.spec


@pytest.mark.parametrize(
    "spec, message",
    [
        ("bogus", "unknown objective 'bogus'; choose one of: trace"),
        ("iwae:k=0", "k must be an integer >= 1; got 0"),
        ("iwae:alpha=0.5", "has no parameter 'alpha'; valid parameters: k"),
        ("renyi:alpha=1", "alpha must be a finite number other than 1"),
        ("iwae:k=two", "parameter 'k' must be of type int; got 'two'"),
        ("analytic:beta=-1", "beta must be a finite number >= 0"),
        ("trace:anneal=5,anneal_steps=100", "choose one warm-up"),
        ("trace:anneal=-2", "anneal must be an integer >= 0"),
        ("analytic:particles", "parameters are written key=value"),
    ],
)
def test_bad_objective_strings_say_what_is_valid(spec, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_objective(spec)


def test_unknown_objective_lists_every_registered_name():
    with pytest.raises(ValueError) as err:
        parse_objective("iwea:k=5")
    for name in ("trace", "analytic", "jit_trace", "jit_analytic", "iwae", "renyi"):
        assert f"{name} - " in str(err.value)


# ----------------------------------------------------------------------------- beta and annealing


def test_annealing_schedules():
    epochs = parse_objective("trace:anneal=4")
    assert [epochs.kl_weight(0, e) for e in range(1, 7)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    steps = parse_objective("analytic:anneal_steps=10,beta=2")
    assert [steps.kl_weight(s, 1) for s in (0, 5, 10, 20)] == [0.0, 1.0, 2.0, 2.0]
    assert parse_objective("analytic:beta=4").kl_weight(123, 9) == 4.0
    assert parse_objective("analytic").kl_weight(0, 1) == 1.0
    assert parse_objective("iwae:k=3").kl_weight(0, 1) == 1.0
    assert kl_schedule(3, 2, beta=0.5, anneal=2) == 0.25


@pytest.mark.parametrize("cls", [Trace_ELBO, TraceMeanField_ELBO])
def test_beta_one_is_the_plain_elbo_and_beta_scales_the_kl(cls, binary_x):
    vae = _vae()
    elbo = cls(max_plate_nesting=1)

    def loss(weight):
        with scale_latents(weight):
            return _seeded(lambda: elbo.differentiable_loss(vae.model, vae.guide, binary_x)).item()

    plain = _seeded(lambda: elbo.differentiable_loss(vae.model, vae.guide, binary_x)).item()
    assert loss(1.0) == pytest.approx(plain, rel=1e-7)
    # the loss is affine in beta: -E log p(x|z) + beta * (KL term)
    assert loss(3.0) - loss(1.0) == pytest.approx(2 * (loss(1.0) - loss(0.0)), rel=1e-4)
    if cls is TraceMeanField_ELBO:  # the KL term is the closed form
        with torch.no_grad():
            kl = standard_normal_kl(*vae.encode(binary_x)).sum().item()
        assert loss(4.0) - loss(1.0) == pytest.approx(3 * kl, rel=1e-4)


def test_beta_one_trains_exactly_like_the_plain_objective(digits):
    histories = []
    for spec in ("analytic", "analytic:beta=1"):
        vae = _vae(64)
        histories.append(
            [r["train_elbo"] for r in pv.fit(vae, digits, spec, epochs=1, progress=False)]
        )
    assert histories[0] == histories[1]
    annealed = pv.fit(_vae(64), digits, "analytic:anneal=2", epochs=3, progress=False)
    assert [r["kl_weight"] for r in annealed] == [0.0, 0.5, 1.0]  # the weight used in each epoch
    steps = math.ceil(digits.meta.n_train / 128)  # batch 128: steps 0 .. steps-1 in epoch 1
    by_steps = pv.fit(
        _vae(64), digits, f"analytic:anneal_steps={4 * steps}", epochs=1, progress=False
    )
    assert by_steps[0]["kl_weight"] == pytest.approx(
        (steps - 1) / (4 * steps)
    )  # the last step's weight


# ----------------------------------------------------------------------------- IWAE and Renyi


@pytest.mark.parametrize(
    "spec", ["iwae:k=5", "iwae:k=1", "renyi:alpha=0.5,k=4", "renyi:alpha=-0.5,k=3"]
)
def test_renyi_loss_equals_pyro_renyi_elbo_loss(spec, binary_x):
    vae = _vae()
    obj = parse_objective(spec)
    ours = _seeded(lambda: obj.loss(vae.model, vae.guide, binary_x))
    pyros = RenyiELBO(
        alpha=obj.elbo.alpha,
        num_particles=obj.elbo.num_particles,
        vectorize_particles=True,
        max_plate_nesting=1,
    )
    theirs = _seeded(lambda: pyros.loss(vae.model, vae.guide, binary_x))
    assert ours.requires_grad
    assert ours.item() == pytest.approx(theirs, rel=1e-6)


def test_iwae_loss_is_minus_the_sum_of_iw_log_likelihood_on_the_same_samples(binary_x):
    vae = _vae()
    k, seed = 6, 11
    loss = _seeded(
        lambda: parse_objective(f"iwae:k={k}").loss(vae.model, vae.guide, binary_x), seed
    )
    iw = iw_log_likelihood(
        vae.model,
        vae.guide,
        binary_x,
        num_samples=k,
        seed=seed,
        batch_size=len(binary_x),
        particle_chunk=k,
    )
    assert loss.item() == pytest.approx(-iw.sum().item(), rel=1e-6)
    per_point = _seeded(
        lambda: parse_objective(f"iwae:k={k}").elbo.per_point_bound(vae.model, vae.guide, binary_x),
        seed,
    )
    assert torch.allclose(per_point, iw, atol=1e-5)


def test_iwae_with_one_sample_is_the_trace_elbo(binary_x):
    vae = _vae()
    iwae = _seeded(lambda: parse_objective("iwae:k=1").loss(vae.model, vae.guide, binary_x)).item()
    trace = _seeded(lambda: Trace_ELBO(max_plate_nesting=1).loss(vae.model, vae.guide, binary_x))
    assert iwae == pytest.approx(trace, rel=1e-6)


def test_iwae_gradient_matches_pyro_loss_and_grads(binary_x):
    vae = _vae()
    params = list(vae.parameters())
    _seeded(lambda: parse_objective("iwae:k=4").loss(vae.model, vae.guide, binary_x)).backward()
    ours = [p.grad.clone() for p in params]
    vae.zero_grad()
    elbo = RenyiELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
    _seeded(lambda: elbo.loss_and_grads(vae.model, vae.guide, binary_x))
    for a, p in zip(ours, params, strict=True):
        assert torch.allclose(a, p.grad, rtol=1e-4, atol=1e-5)


def test_minibatch_scale_acts_linearly_on_the_iw_bound(binary_x):
    vae = _vae()
    obj = parse_objective("iwae:k=5")
    plain = _seeded(lambda: obj.loss(vae.model, vae.guide, binary_x)).item()
    with poutine.scale(scale=7.5):
        scaled = _seeded(lambda: obj.loss(vae.model, vae.guide, binary_x)).item()
    assert scaled == pytest.approx(7.5 * plain, rel=1e-6)


def test_iwae_trains_and_its_bound_beats_the_elbo(digits):
    vae = _vae(64)
    history = pv.fit(vae, digits, "iwae:k=5", epochs=2, progress=False)
    assert all(math.isfinite(r["train_elbo"]) for r in history)
    x = digits.test[:50]
    k5 = _seeded(lambda: parse_objective("iwae:k=5").elbo.per_point_bound(vae.model, vae.guide, x))
    k1 = _seeded(lambda: parse_objective("iwae:k=1").elbo.per_point_bound(vae.model, vae.guide, x))
    assert k5.mean() > k1.mean()


# ----------------------------------------------------------------------------- JIT


def _count_traces(monkeypatch) -> list[int]:
    count = [0]
    original = torch.jit.trace

    def counting(*args, **kwargs):
        count[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.jit, "trace", counting)
    return count


@pytest.mark.parametrize(
    "spec, eager", [("jit_trace", Trace_ELBO), ("jit_analytic", TraceMeanField_ELBO)]
)
def test_jit_smaller_last_batch_and_scales_match_the_eager_loss(spec, eager, binary_x):
    vae = _vae()
    obj = parse_objective(spec)
    n = len(binary_x)
    for rows, weight in ((16, 1.0), (16, 0.3), (5, 1.0), (16, 0.0), (5, 0.3)):
        xb = binary_x[:rows]
        with poutine.scale(scale=n / rows), scale_latents(weight):
            jit = _seeded(lambda xb=xb: obj.loss(vae.model, vae.guide, xb)).item()
            ref = _seeded(
                lambda xb=xb: eager(max_plate_nesting=1).differentiable_loss(
                    vae.model, vae.guide, xb
                )
            )
        assert jit == pytest.approx(ref.item(), rel=1e-5), (rows, weight)
    assert obj.elbo.num_compiled == 2  # one graph per batch shape, scales are inputs


@pytest.mark.parametrize("spec", ["jit_trace", "jit_analytic"])
def test_jit_fit_traces_once_per_batch_shape_and_matches_eager_training(spec, digits, monkeypatch):
    count = _count_traces(monkeypatch)
    obj = parse_objective(spec + ":anneal=2")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        jit_history = pv.fit(_vae(64), digits, obj, epochs=3, batch_size=100, progress=False)
    assert len(digits.train) % 100 != 0  # an irregular last batch
    assert count[0] == 2 and obj.elbo.num_compiled == 2
    assert not [w for w in caught if "jit" in str(w.message)], [str(w.message) for w in caught]
    eager_history = pv.fit(
        _vae(64),
        digits,
        spec.replace("jit_", "") + ":anneal=2",
        epochs=3,
        batch_size=100,
        progress=False,
    )
    for a, b in zip(jit_history, eager_history, strict=True):
        assert a["train_elbo"] == pytest.approx(b["train_elbo"], rel=1e-4)
        assert a["test_elbo"] == pytest.approx(b["test_elbo"], rel=1e-4)


def test_pyro_jit_meanfield_retraces_every_call_but_ours_does_not(binary_x, monkeypatch):
    """Upstream behaviour in pyro-ppl 1.9.2 (DESIGN.md): if this starts failing, Pyro fixed it."""
    count = _count_traces(monkeypatch)
    vae = _vae()
    model, guide = vae.model, vae.guide
    pyro_elbo = JitTraceMeanField_ELBO(max_plate_nesting=1, ignore_jit_warnings=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for _ in range(3):
            pyro_elbo.differentiable_loss(model, guide, binary_x)
    assert count[0] == 3
    count[0] = 0
    ours = parse_objective("jit_analytic")
    for _ in range(3):
        ours.loss(vae.model, vae.guide, binary_x)  # a new bound-method object each time
    assert count[0] == 1


def test_jit_under_an_unknown_handler_falls_back_to_the_eager_loss(binary_x):
    vae = _vae()
    elbo = CachedJitTrace_ELBO(max_plate_nesting=1)
    with poutine.mask(mask=True), pytest.warns(RuntimeWarning, match="eager"):
        value = _seeded(lambda: elbo.differentiable_loss(vae.model, vae.guide, binary_x))
    ref = _seeded(
        lambda: Trace_ELBO(max_plate_nesting=1).differentiable_loss(vae.model, vae.guide, binary_x)
    )
    assert value.item() == pytest.approx(ref.item(), rel=1e-6)
    assert elbo.num_compiled == 0


def test_jit_rejects_non_tensor_positional_arguments(binary_x):
    vae = _vae()
    elbo = CachedJitTrace_ELBO(max_plate_nesting=1)
    with pytest.raises(TypeError, match="argument 1 is int"):
        elbo.differentiable_loss(lambda x, n: vae.model(x), lambda x, n: vae.guide(x), binary_x, 3)


def test_log_mean_exp_is_exact_and_its_gradient_has_no_subnormal_weights():
    """The IWAE bound's log-mean-exp: the value of torch.logsumexp - log K, the gradient softmax's except that
    weights below the smallest normal float are exactly 0 (they would slow the CPU's backward pass), and a
    -inf log weight gives no NaN."""
    from ppl_vae.objectives.renyi import log_mean_exp

    log_w = torch.tensor(
        [[0.0, -1.0], [-50.0, -2.0], [-95.0, -3.0], [-120.0, float("-inf")]], requires_grad=True
    )
    value = log_mean_exp(log_w, 0)
    torch.testing.assert_close(value, torch.logsumexp(log_w, 0) - math.log(4), rtol=0, atol=0)
    (grad,) = torch.autograd.grad(value.sum(), log_w)
    soft = torch.softmax(log_w.detach(), 0)
    tiny = torch.finfo(torch.float32).tiny
    assert bool(((soft > 0) & (soft < tiny)).any()), "the case must hold subnormal weights"
    assert torch.isfinite(grad).all()
    assert not bool(((grad != 0) & (grad.abs() < tiny)).any())
    keep = soft >= tiny
    torch.testing.assert_close(grad[keep], soft[keep], rtol=1e-6, atol=0)
    assert bool((grad[~keep] == 0).all())
