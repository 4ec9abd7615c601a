"""STL and DReG: the same bound and decoder gradient, an unbiased encoder gradient with less variance.

Run with ``-s`` to see the variance ratios (plain / new); they are also recorded as test properties
(``--junitxml``)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pyro
import pytest
import torch

import ppl_vae as pv
from ppl_vae.models import HierarchicalVAE, LinearGaussianVAE, SemiSupervisedVAE, standard_normal_kl
from ppl_vae.objectives import PathwiseELBO, parse_objective

W = torch.tensor([[1.0, 0.8], [0.9, 1.0], [0.5, 0.6], [1.2, 1.0], [0.3, 0.1]])


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings(), pyro.validation_enabled(False):
        warnings.filterwarnings("ignore", message=".*k-hat.*", category=UserWarning)
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fixed_model():
    """A linear-Gaussian model with its decoder fixed and a mean-field guide trained near its optimum."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    lg = LinearGaussianVAE(5, 2, noise_scale=0.7)
    with torch.no_grad():
        lg.weight.copy_(W)
        lg.bias.zero_()
    lg.freeze_decoder()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 2, generator=g) @ W.T + 0.7 * torch.randn(400, 5, generator=g)
    pv.fit(lg, x, "analytic", epochs=40, batch_size=100, lr=2e-2, progress=False)
    return lg, x[:8]


def draws(program, x, spec: str, m: int, params: list[torch.Tensor], seed: int) -> torch.Tensor:
    """``m`` independent gradient estimates of ``-bound`` w.r.t. ``params``: ``(m, P)``."""
    objective = parse_objective(spec)
    torch.manual_seed(seed)
    out = []
    for _ in range(m):
        loss = objective.loss(program.model, program.guide, x)
        out.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]))
    return torch.stack(out)


def exact_elbo(lg: LinearGaussianVAE, x: torch.Tensor) -> torch.Tensor:
    """The ELBO of a linear-Gaussian model with a mean-field guide, in closed form (summed over x)."""
    loc, scale = lg.encoder(x)
    w, s2 = lg.weight, lg.noise_variance()
    resid = x - loc @ w.T - lg.bias
    expected = (
        -0.5 * ((resid.pow(2) + scale.pow(2) @ w.pow(2).T) / s2).sum(-1)
        - 0.5 * torch.log(2 * math.pi * s2).sum()
    )
    return (expected - standard_normal_kl(loc, scale).sum(-1)).sum()


def zscores(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.mean(0) - b.mean(0)) / (a.var(0) / len(a) + b.var(0) / len(b)).sqrt()


# ----------------------------------------------------------------------------- same bound, same decoder gradient
@pytest.mark.parametrize(
    "plain, new",
    [
        ("trace", "trace:grad=stl"),
        ("trace:particles=3", "trace:particles=3,grad=stl"),
        ("iwae:k=5", "iwae:k=5,grad=dreg"),
        ("iwae:k=5", "iwae:k=5,grad=stl"),
    ],
)
def test_value_and_decoder_gradient_are_the_plain_ones(plain, new):
    torch.manual_seed(0)
    lg = LinearGaussianVAE(5, 2, noise_scale=0.7)
    x = torch.randn(16, 5)
    out = {}
    for spec in (plain, new):
        torch.manual_seed(4)
        loss = parse_objective(spec).loss(lg.model, lg.guide, x)
        dec = torch.autograd.grad(loss, list(lg.decoder.parameters()), retain_graph=True)
        enc = torch.autograd.grad(loss, list(lg.encoder.parameters()))
        out[spec] = (loss.detach(), dec, enc)
    torch.testing.assert_close(out[new][0], out[plain][0])  # the bound's value, on the same draws
    for a, b in zip(out[new][1], out[plain][1], strict=True):
        torch.testing.assert_close(a, b)  # the decoder's gradient
    assert any(
        not torch.allclose(a, b) for a, b in zip(out[new][2], out[plain][2], strict=True)
    )  # the encoder's differs
    assert isinstance(parse_objective(new).elbo, PathwiseELBO)


# ----------------------------------------------------------------------------- unbiased, lower variance
def test_stl_is_unbiased_for_the_elbo_and_has_lower_variance(fixed_model, record_property):
    lg, x = fixed_model
    params = list(lg.encoder.parameters())
    exact = torch.cat([g.flatten() for g in torch.autograd.grad(-exact_elbo(lg, x), params)])
    plain = draws(lg, x, "trace", 600, params, seed=1)
    stl = draws(lg, x, "trace:grad=stl", 600, params, seed=2)
    for name, g in (("trace", plain), ("trace:grad=stl", stl)):
        z = (g.mean(0) - exact) / (g.var(0) / len(g)).sqrt()
        assert z.abs().max() < 4.5, (
            name,
            z,
        )  # 24 coordinates: P(max |z| > 4.5) ~ 2e-4 for an unbiased mean
    ratio = float(plain.var(0).sum() / stl.var(0).sum())
    record_property("variance_ratio_trace_over_stl", ratio)
    print(f"\nELBO encoder gradient, total variance trace / trace:grad=stl = {ratio:.2f}")
    assert ratio > 1.5


def test_dreg_is_unbiased_for_the_iwae_bound_and_has_lower_variance(fixed_model, record_property):
    lg, x = fixed_model
    params = list(lg.encoder.parameters())
    plain = draws(lg, x, "iwae:k=10", 600, params, seed=3)
    dreg = draws(lg, x, "iwae:k=10,grad=dreg", 600, params, seed=4)
    z = zscores(dreg, plain)  # both unbiased for the gradient of the IWAE-10 bound
    assert z.abs().max() < 4.5, z
    ratio = float(plain.var(0).sum() / dreg.var(0).sum())
    record_property("variance_ratio_iwae10_over_dreg", ratio)
    print(
        f"\nIWAE-10 encoder gradient, total variance iwae:k=10 / iwae:k=10,grad=dreg = {ratio:.2f}"
    )
    assert ratio > 1.2


def test_stl_on_the_iwae_bound_is_biased(fixed_model):
    """Tucker et al. (2018), section 3: dropping the score term of the IWAE gradient biases it; DReG does not."""
    lg, x = fixed_model
    params = list(lg.encoder.parameters())
    big = x.repeat(500, 1)  # 4000 rows: each estimate averages 500 independent draws per point
    means = {
        spec: draws(lg, big, spec, 8, params, seed=5) / 500
        for spec in ("iwae:k=10", "iwae:k=10,grad=dreg", "iwae:k=10,grad=stl")
    }
    assert zscores(means["iwae:k=10,grad=dreg"], means["iwae:k=10"]).abs().max() < 4.5
    assert zscores(means["iwae:k=10,grad=stl"], means["iwae:k=10"]).abs().max() > 8


def test_hierarchical_guides_get_the_path_through_every_site():
    """A guide whose second site depends on the first: d log q(z2 | z1) / d z1 must be in the path derivative."""
    torch.manual_seed(0)
    hvae = HierarchicalVAE(6, (2, 2), ((8,), (8,)), likelihood="gaussian:scale=0.5")
    x = torch.randn(6, 6)
    params = list(hvae.encoder.parameters())
    plain = draws(hvae, x, "trace", 400, params, seed=6)
    stl = draws(hvae, x, "trace:grad=stl", 400, params, seed=7)
    z = zscores(stl, plain)
    assert z.abs().max() < 4.5, z
    assert float(plain.var(0).sum() / stl.var(0).sum()) > 1.0


# ----------------------------------------------------------------------------- names and refusals
def test_specs_round_trip_and_refusals():
    obj = parse_objective("iwae:k=7,grad=dreg")
    assert obj.spec == "iwae:k=7,grad=dreg" and obj.params == {"k": 7, "grad": "dreg"}
    assert parse_objective(obj.spec).params == obj.params
    assert (
        parse_objective("iwae:k=5,grad=dreg").spec == "iwae:grad=dreg"
    )  # defaults left out, as always
    assert parse_objective("trace:grad=reparam").spec == "trace"
    with pytest.raises(
        ValueError, match="grad=dreg is the doubly reparameterised gradient of the IWAE bound"
    ):
        parse_objective("trace:grad=dreg")
    with pytest.raises(ValueError, match="grad must be one of reparam, stl, dreg"):
        parse_objective("iwae:grad=rep")
    with pytest.raises(ValueError, match="no parameter 'grad'"):
        parse_objective("analytic:grad=stl")
    m2 = SemiSupervisedVAE(12, 2, 2, (8,))
    x = (torch.rand(20, 12) > 0.5).float()
    with pytest.raises(ValueError, match="no rsample"):
        pv.fit(m2, (x, torch.full((20,), -1)), "trace:grad=stl", epochs=1, progress=False)


@pytest.mark.parametrize("spec", ["iwae:k=5,grad=dreg", "trace:grad=stl,anneal=2"])
def test_training_with_pathwise_gradients(spec, digits):
    torch.manual_seed(0)
    vae = pv.VAE(64, 4, (64,))
    history = pv.fit(vae, digits, spec, epochs=3, batch_size=128, lr=3e-3, progress=False)
    elbos = [r["test_elbo"] for r in history]
    assert np.isfinite(elbos).all() and elbos[-1] > elbos[0]
    assert history.meta["objective"] == parse_objective(spec).spec
