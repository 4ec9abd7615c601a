"""Tests of annealed importance sampling and the BDMC sandwich (ppl_vae.estimators.ais) against exact answers.

Ground truths: the linear-Gaussian VAE (exact log p(x)), a 1-D nonlinear model integrated on a dense grid,
a Gamma-scale model whose marginal is a multivariate t (a constrained latent), and a conditional linear
model with tuple data ``(x, y)``. Parameters are set by hand, not trained. Tolerances come from standard
errors over points (stated beside each assertion).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from programs.exact import TanhModel, make_linear_vae

import ppl_vae as pv
from ppl_vae.errors import ArgumentTypeError, ProgramError, ResourceError, UserError
from ppl_vae.estimators.ais import AISResult, schedule_betas


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one intra-op thread is as fast and immune to OpenMP stalls on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def linear():
    vae = make_linear_vae()
    torch.manual_seed(1)
    x = vae.marginal().sample((200,)).detach()
    return vae, x, vae.exact_log_likelihood(x).detach()


def _se(v: torch.Tensor | np.ndarray) -> float:
    v = np.asarray(v, dtype=np.float64)
    return float(v.std(ddof=1) / math.sqrt(len(v)))


# ----------------------------------------------------------------------------- exact answers
def test_exact_guide_gives_the_exact_value_at_every_T(linear):
    """With q = p(z | x), log p(x, z) - log q(z | x) = log p(x) for every z: each chain's weight is exact,
    whatever the schedule and transitions (checks that the increments sum to one path)."""
    vae, x, exact = linear
    for t in (1, 7):
        ll = pv.ais_log_likelihood(
            vae.model, vae.exact_guide, x[:50], num_steps=t, num_chains=3, leapfrog_steps=2
        )
        torch.testing.assert_close(ll, exact[:50], atol=2e-4, rtol=0)


def test_one_step_is_importance_sampling_from_the_guide(linear):
    """T = 1: no transition, each chain's weight is log p(x, z) - log q(z | x) with z ~ q, so the mean over
    chains is the ELBO and the log-mean-exp IW_C (compared with the IW estimators, within 4 s.e.)."""
    vae, x, _ = linear
    res = pv.ais_log_likelihood(vae, x[:20], num_steps=1, num_chains=2000, return_diagnostics=True)
    assert torch.isnan(res.acceptance).all() and torch.isnan(res.step_size).all()
    lw = res.log_weights
    elbo = pv.elbo(vae, x[:20], num_samples=2000, seed=1).double()
    se = lw.std(1) / math.sqrt(2000)
    assert bool(((lw.mean(1) - elbo).abs() < 4 * math.sqrt(2) * se).all())
    iw = pv.iw_log_likelihood(vae, x[:20], num_samples=2000, seed=1).double()
    assert bool(
        ((res.log_likelihood.double() - iw).abs() < 4 * math.sqrt(2) * res.se.double() + 1e-3).all()
    )


def test_ais_within_0_01_nats_of_exact_and_error_falls_with_T(linear):
    """Mean-field guide (IW_5000 is 0.02 nats off here). AIS with C=256 chains, L=1: mean |error| per point
    falls with T, and at T=1000 is under 0.01 nats (expected 0.005: per-chain log-weight variance ~0.01 at
    T=1000, so s.e. per point ~ sqrt(0.01/256) = 0.006); its mean error is within 3 s.e. of 0."""
    vae, x, exact = linear
    x, exact = x[:25], exact[:25]
    errors = {}
    for t in (10, 100, 1000):
        res = pv.ais_log_likelihood(
            vae,
            x,
            num_steps=t,
            num_chains=256,
            leapfrog_steps=1,
            batch_size=25,
            return_diagnostics=True,
        )
        errors[t] = res.log_likelihood - exact
        _check_against_truth(res, exact, f"T={t}")
    mae = {t: float(e.abs().mean()) for t, e in errors.items()}
    assert mae[10] > mae[100] > mae[1000], mae
    assert mae[1000] < 0.01, mae
    assert abs(float(errors[1000].mean())) < 3 * _se(errors[1000]) + 1e-3, float(
        errors[1000].mean()
    )
    assert 0.5 < float(res.acceptance.mean()) < 0.8  # adapted toward 0.65


def test_bdmc_sandwich_brackets_exact_and_gap_shrinks(linear):
    """BDMC from the prior with one chain (the bounds are far apart at small T): on average over 200 simulated
    points the forward estimate lies below the exact log p(x) and the reverse one above it (significantly at
    T=10, within 2 s.e. at T=200), and the gap shrinks with T by many standard errors."""
    vae, x, _ = linear
    gaps = {}
    for t in (10, 200):
        frame, sim = pv.bdmc(
            vae,
            x,
            num_steps=t,
            num_chains=1,
            leapfrog_steps=1,
            init="prior",
            seed=t,
            batch_size=200,
            return_simulated=True,
        )
        assert list(frame.columns) == ["lower", "upper", "gap"] and len(frame) == len(x)
        assert sim[0].shape == x.shape and not torch.equal(sim[0], x)
        truth = vae.exact_log_likelihood(sim[0]).detach().double().numpy()
        lower, upper = frame["lower"].to_numpy() - truth, frame["upper"].to_numpy() - truth
        assert lower.mean() < 2 * _se(lower), (t, lower.mean(), _se(lower))
        assert upper.mean() > -2 * _se(upper), (t, upper.mean(), _se(upper))
        if t == 10:
            assert lower.mean() < -3 * _se(lower) and upper.mean() > 3 * _se(upper)
        gaps[t] = frame["gap"].to_numpy()
    assert gaps[10].mean() - gaps[200].mean() > 3 * math.hypot(_se(gaps[10]), _se(gaps[200])), (
        gaps[10].mean(),
        gaps[200].mean(),
    )


def _check_against_truth(res: AISResult, truth: torch.Tensor, what: str) -> None:
    """The error per point is as large as the reported s.e. over chains says (rms ratio in [0.5, 2]); its mean
    over points is within 3 of its standard errors (plus 0.005 for the Jensen bias, about -se^2 / 2)."""
    err = res.log_likelihood.double() - truth.double()
    rms_se = float(res.se.double().square().mean().sqrt())
    ratio = float(err.square().mean().sqrt()) / rms_se
    assert 0.5 < ratio < 2, (what, ratio, rms_se)
    assert abs(float(err.mean())) < 3 * rms_se / math.sqrt(len(err)) + 0.005, (
        what,
        float(err.mean()),
        rms_se,
    )


def test_ais_matches_quadrature_on_nonlinear_1d_model():
    """A rough guide, and the prior, as starts; the truth by a dense grid. T=200, C=128, L=2: per-point s.e.
    over chains about 0.03 nats."""
    tm = TanhModel()
    x = tm.sample(60)
    quad = pv.quadrature_log_likelihood(tm.model, x, data_plate="points")
    kw = dict(
        num_steps=200,
        num_chains=128,
        leapfrog_steps=2,
        data_plate="points",
        batch_size=60,
        return_diagnostics=True,
    )
    from_guide = pv.ais_log_likelihood(tm.model, tm.guide, x, **kw)
    from_prior = pv.ais_log_likelihood(
        tm.model, x, init="prior", **kw
    )  # a model alone: no guide from the prior
    for res, what in ((from_guide, "guide"), (from_prior, "prior")):
        _check_against_truth(res, quad, what)
        assert float((res.log_likelihood - quad).abs().mean()) < 0.05, what


def test_constrained_latent_moves_in_unconstrained_space():
    """z ~ Gamma(a, b) scales x_j ~ N(0, 1/z): the marginal is a multivariate t (closed form). The guide is a
    LogNormal (support z > 0): HMC runs on log z with the log |det J| term."""
    a, b, dim = 3.0, 2.0, 4

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Gamma(x.new_full((x.shape[0],), a), b))
            pyro.sample(
                "x",
                dist.Normal(0.0, z.rsqrt()[..., None].expand(z.shape + (dim,))).to_event(1),
                obs=x,
            )

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.LogNormal(-0.3 * x.square().sum(-1).log1p() + 0.5, 0.5))

    x = torch.distributions.StudentT(2 * a, 0.0, math.sqrt(b / a)).sample((60, dim))
    sq = x.square().sum(-1)
    exact = (
        a * math.log(b)
        - math.lgamma(a)
        - dim / 2 * math.log(2 * math.pi)
        + math.lgamma(a + dim / 2)
        - (a + dim / 2) * torch.log(b + sq / 2)
    )
    res = pv.ais_log_likelihood(
        model,
        guide,
        x,
        num_steps=200,
        num_chains=128,
        leapfrog_steps=2,
        batch_size=60,
        return_diagnostics=True,
    )
    _check_against_truth(res, exact, "gamma scale")


def test_tuple_data_with_a_conditioning_input():
    """model(x, y): x | z, y ~ N(W z + V y + b, s^2 I) with y a conditioning input; log p(x | y) is Gaussian.
    AIS matches it; BDMC simulates x and keeps y as given."""
    w = torch.tensor([[1.0, 0.5], [0.3, -0.8], [0.6, 0.4]])
    v = torch.tensor([[0.5], [-1.0], [0.2]])
    bias, s = torch.tensor([0.1, 0.0, -0.2]), 0.4

    def model(x, y):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ w.T + y @ v.T + bias, s).to_event(1), obs=x)

    def guide(x, y):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.5 * (x - y @ v.T) @ w, 0.5).to_event(1))

    torch.manual_seed(3)
    y = torch.randn(50, 1)
    marginal = dist.MultivariateNormal(y @ v.T + bias, w @ w.T + s**2 * torch.eye(3))
    x = marginal.sample()
    exact = marginal.log_prob(x)
    res = pv.ais_log_likelihood(
        model,
        guide,
        (x, y),
        num_steps=200,
        num_chains=128,
        leapfrog_steps=2,
        batch_size=50,
        return_diagnostics=True,
    )
    assert res.log_likelihood.shape == (50,)
    _check_against_truth(res, exact, "tuple data")
    frame, sim = pv.bdmc(
        model, guide, (x, y), num_steps=20, num_chains=4, leapfrog_steps=1, return_simulated=True
    )
    assert sim[1] is y and sim[0].shape == x.shape and not torch.equal(sim[0], x)
    assert len(frame) == 50 and np.isfinite(frame.to_numpy()).all()


def test_nested_plate_inside_the_data_plate():
    """Pixels in a plate at dim -2 inside the data plate (dim -1), a scalar latent: per-point sums keep the
    program's own shapes; the truth is Gaussian."""
    x = torch.randn(30, 4)

    def model(data):
        with pyro.plate("data", data.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(data.new_zeros(len(data)), 1.0))
            with pyro.plate("pix", 4, dim=-2):
                pyro.sample("x", dist.Normal(z, 1.0), obs=data.T)

    def guide(data):
        with pyro.plate("data", data.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(data.mean(-1), 0.6))

    exact = dist.MultivariateNormal(torch.zeros(4), torch.eye(4) + 1.0).log_prob(x)
    res = pv.ais_log_likelihood(
        model,
        guide,
        x,
        num_steps=100,
        num_chains=128,
        leapfrog_steps=2,
        batch_size=30,
        return_diagnostics=True,
    )
    _check_against_truth(res, exact, "nested plate")


# ----------------------------------------------------------------------------- refusals and arguments
def test_discrete_latent_is_refused_with_the_site_named():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("cluster", dist.Bernoulli(x.new_full((x.shape[0],), 0.5)))
            pyro.sample("x", dist.Normal(c[..., None] * 2.0, 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("cluster", dist.Bernoulli(torch.sigmoid(x.sum(-1))))

    def enum_model(x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample(
                "cluster",
                dist.Bernoulli(x.new_full((x.shape[0],), 0.5)),
                infer={"enumerate": "parallel"},
            )
            pyro.sample("x", dist.Normal(c[..., None] * 2.0, 1.0).to_event(1), obs=x)

    x = torch.randn(10, 3)
    for args, kwargs in (((model, guide, x), {}), ((enum_model, x), {"init": "prior"})):
        with pytest.raises(ProgramError, match="'cluster'.*discrete"):
            pv.ais_log_likelihood(*args, num_steps=5, **kwargs)
    with pytest.raises(ProgramError, match="'cluster'"):
        pv.bdmc(model, guide, x, num_steps=5)


def test_arguments_are_checked_before_any_work(linear):
    vae, x, _ = linear
    bad = [
        ({"num_steps": 0}, "num_steps"),
        ({"num_chains": 0}, "num_chains"),
        ({"leapfrog_steps": 1.5}, "leapfrog"),
        ({"init": "posterior"}, "init"),
        ({"target_accept": 1.0}, "target_accept"),
        ({"schedule": "cosine"}, "schedule"),
        ({"schedule": torch.linspace(0, 1, 5)}, "num_steps \\+ 1"),
        ({"batch_size": 0}, "batch_size"),
        ({"tune_chains": 0}, "tune_chains"),
        ({"seed": 1.5}, "seed"),
    ]
    for kwargs, match in bad:
        with pytest.raises(UserError, match=match):
            pv.ais_log_likelihood(vae, x[:5], **{"num_steps": 10, **kwargs})
    with pytest.raises(ArgumentTypeError, match="by name"):
        pv.ais_log_likelihood(vae, x[:5], 100)
    with pytest.raises(ArgumentTypeError, match="pass the data"):
        pv.ais_log_likelihood(vae)
    with pytest.raises(ResourceError, match="chains"):  # sized before anything is allocated
        pv.ais_log_likelihood(vae, x[:5], num_steps=10, num_chains=10**10)
    with pytest.raises(UserError, match="estimator"):
        pv.evaluate(vae, x[:5], num_samples=100, estimator="nuts")
    with pytest.raises(UserError, match="init"):
        pv.evaluate(vae, x[:5], num_samples=100, estimator="ais", ais_init="posterior")


def test_schedules():
    for t in (1, 2, 10, 1000):
        for schedule in ("sigmoid", "linear"):
            b = schedule_betas(t, schedule)
            assert (
                b.shape == (t + 1,)
                and float(b[0]) == 0.0
                and float(b[-1]) == 1.0
                and bool((b.diff() > 0).all())
            )
    b = schedule_betas(100, "sigmoid")
    torch.testing.assert_close(b + b.flip(0), torch.ones_like(b))  # symmetric
    assert (
        float(b[1]) < 0.01 / 2 < float(b[51] - b[50])
    )  # small steps at the ends, large in the middle
    custom = torch.tensor([0.0, 0.2, 1.0])
    torch.testing.assert_close(schedule_betas(2, custom), custom.double())


# ----------------------------------------------------------------------------- shapes, seeds, diagnostics
def test_shapes_diagnostics_seeds_and_callers_state(linear, capsys):
    vae, x, exact = linear
    x = x[:23]
    pyro.clear_param_store()
    pyro.param("mine", torch.ones(2))
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    res = pv.ais_log_likelihood(
        vae,
        x,
        num_steps=20,
        num_chains=5,
        leapfrog_steps=2,
        batch_size=7,
        return_diagnostics=True,
        progress=True,
    )
    assert torch.equal(torch.random.get_rng_state(), before)
    assert set(pyro.get_param_store().keys()) == {"mine"}
    pyro.clear_param_store()
    assert "AIS T=20, C=5, 23 points" in capsys.readouterr().err
    assert isinstance(res, AISResult)
    for name in ("log_likelihood", "se", "acceptance", "ess", "step_size"):
        assert getattr(res, name).shape == (23,), name
    assert res.log_weights.shape == (23, 5)
    assert bool(((res.ess >= 1 - 1e-6) & (res.ess <= 5 + 1e-6)).all())
    assert bool(((res.acceptance >= 0) & (res.acceptance <= 1)).all()) and bool(
        (res.step_size > 0).all()
    )
    torch.testing.assert_close(
        res.log_likelihood.double(), res.log_weights.logsumexp(1) - math.log(5)
    )
    assert list(res.frame().columns) == ["log_likelihood", "se", "acceptance", "ess", "step_size"]
    assert res.settings["num_steps"] == 20 and res.settings["tune_chains"] == 2
    again = pv.ais_log_likelihood(
        vae, x, num_steps=20, num_chains=5, leapfrog_steps=2, batch_size=7
    )
    torch.testing.assert_close(again, res.log_likelihood, atol=0, rtol=0)
    other = pv.ais_log_likelihood(
        vae, x, num_steps=20, num_chains=5, leapfrog_steps=2, batch_size=7, seed=1
    )
    assert not torch.equal(other, again)
    err = (again - exact[:23]).double()  # T=20, C=5: rough, below the truth on average, but sane
    assert float(err.mean()) < 3 * _se(err) and float(err.abs().mean()) < 0.5


def test_captured_graph_gives_the_eager_numbers(linear):
    """ppl_vae's own programs evaluate through a captured ATen graph by default (fast="auto"); the same seed
    gives the eager path's numbers up to float rounding, and a user's program can ask for the graph."""
    from ppl_vae.estimators.path_density import graph_safe
    from ppl_vae.programs import as_program

    vae, x, _ = linear
    assert graph_safe(as_program(vae)) and not graph_safe(as_program(vae.model, vae.exact_guide))
    kw = dict(num_steps=30, num_chains=4, leapfrog_steps=3, batch_size=9, return_diagnostics=True)
    graph = pv.ais_log_likelihood(vae, x[:20], **kw)
    eager = pv.ais_log_likelihood(vae, x[:20], fast="eager", **kw)
    torch.testing.assert_close(graph.log_weights, eager.log_weights, atol=1e-4, rtol=1e-5)
    tm = TanhModel()
    xt = tm.sample(10)
    kw = dict(num_steps=20, num_chains=4, leapfrog_steps=2, data_plate="points")
    torch.testing.assert_close(
        pv.ais_log_likelihood(tm.model, tm.guide, xt, fast="graph", **kw),
        pv.ais_log_likelihood(tm.model, tm.guide, xt, **kw),
        atol=1e-4,
        rtol=1e-5,
    )
    with pytest.raises(UserError, match="fast"):
        pv.ais_log_likelihood(vae, x[:5], num_steps=5, fast="compile")


def test_evaluate_puts_ais_beside_iw(linear, tmp_path):
    vae, x, exact = linear
    report = pv.evaluate(
        vae,
        x[:40],
        num_samples=200,
        seed=0,
        estimator="ais",
        ais_steps=100,
        ais_chains=16,
        ais_leapfrog=1,
    )
    pts, s = report.points, report.summary
    assert list(pts.columns[:4]) == ["elbo", "iw_log_likelihood", "ais_log_likelihood", "gap"]
    assert {"ais_se", "ais_acceptance", "ais_ess", "ais_minus_iw"} <= set(pts.columns)
    np.testing.assert_allclose(
        pts["ais_minus_iw"], pts["ais_log_likelihood"] - pts["iw_log_likelihood"]
    )
    assert (
        abs(s["ais_mean"] - float(exact[:40].mean())) < 0.05
        and s["ais_steps"] == 100
        and s["ais_chains"] == 16
    )
    assert s["ais_minus_iw_se"] > 0 and 0 < s["ais_acceptance_mean"] < 1
    frame = report.summary_frame()
    assert "AIS log p(x), T=100" in frame.index and "AIS - IW" in frame.index
    paths = report.save(tmp_path)
    assert json.loads(paths["json"].read_text())["ais_mean"] == pytest.approx(s["ais_mean"])
    default = pv.evaluate(vae, x[:10], num_samples=100, seed=0)
    assert "ais_log_likelihood" not in default.points and "ais_mean" not in default.summary


def test_cli_evaluate_with_ais(tmp_path, capsys):
    from ppl_vae.cli import main
    from ppl_vae.runs import train_run

    run = tmp_path / "run"
    train_run(run, dataset="digits", epochs=1, progress=False, latent_dim=2, hidden_dims=(32,))
    assert (
        main(
            [
                "evaluate",
                str(run),
                "-k",
                "100",
                "--max-points",
                "20",
                "--estimator",
                "ais",
                "--ais-steps",
                "10",
                "--ais-chains",
                "4",
                "--ais-leapfrog",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "AIS log p(x), T=10" in printed and "AIS - IW" in printed
    summary = json.loads((run / "evaluation" / "evaluation.json").read_text())
    assert (
        summary["ais_steps"] == 10
        and summary["ais_chains"] == 4
        and math.isfinite(summary["ais_mean"])
    )
    with pytest.raises(SystemExit) as err:
        main(["evaluate", str(run), "--force", "--estimator", "ais", "--ais-steps", "0"])
    assert err.value.code == 2
    capsys.readouterr()
    assert (
        main(["evaluate", str(run), "--force", "--ais-steps", "10"]) == 2
    )  # AIS flags without --estimator ais
    assert "add --estimator ais" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_data_device(linear):
    vae, x, exact = linear
    vae = make_linear_vae().cuda()
    est = pv.ais_log_likelihood(vae, x[:50].cuda(), num_steps=100, num_chains=32, leapfrog_steps=2)
    assert est.device.type == "cuda"
    assert float((est.cpu() - exact[:50]).abs().mean()) < 0.05
