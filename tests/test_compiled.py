"""The compiled chunk path of the IW estimators (``fast="compile"``/``"auto"``): same draws, same numbers.

Each test compiles at most a few small graphs (a few seconds each the first time in a process).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

import ppl_vae as pv
import ppl_vae.estimators.compiled as compiled
import ppl_vae.estimators.importance as ev


@pytest.fixture(autouse=True)
def _fresh_cache():
    compiled.clear_cache()
    yield
    compiled.clear_cache()


@pytest.fixture(scope="module")
def small_vae():
    torch.manual_seed(0)
    vae = pv.VAE(12, 2, hidden_dims=(16,)).eval()
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(40, 12, generator=g) < 0.4).float()
    return vae, x


@pytest.mark.parametrize(
    ("fn", "kwargs"),
    [
        (ev.iw_log_likelihood, {}),
        (ev.log_weights, {}),
        (ev.elbo, {"analytic_kl": True}),
        (ev.elbo, {}),
    ],
    ids=["iw", "log_weights", "elbo_analytic", "elbo_sampled"],
)
def test_compiled_chunks_give_the_eager_numbers(small_vae, fn, kwargs):
    vae, x = small_vae
    eager = fn(vae.model, vae.guide, x, 100, batch_size=8, seed=4, fast="eager", **kwargs)
    fast = fn(vae.model, vae.guide, x, 100, batch_size=8, seed=4, fast="compile", **kwargs)
    assert len(compiled._CACHE) == 1, "the chunk was not compiled"
    torch.testing.assert_close(fast, eager, rtol=1e-5, atol=1e-4)
    other_seed = fn(vae.model, vae.guide, x, 100, batch_size=8, seed=5, fast="compile", **kwargs)
    assert not torch.allclose(other_seed, fast), (
        "the compiled chunk must draw from the seeded stream"
    )


def test_compiled_iw_on_linear_gaussian_is_within_0_02_nats_of_exact():
    from test_diagnostics import make_linear_vae

    vae = make_linear_vae()
    torch.manual_seed(1)
    x = vae.marginal().sample((200,)).detach()
    exact = vae.exact_log_likelihood(x).detach()
    fast = ev.iw_log_likelihood(vae.model, vae.guide, x, 4000, batch_size=1, seed=0, fast="compile")
    eager = ev.iw_log_likelihood(vae.model, vae.guide, x, 4000, batch_size=1, seed=0, fast="eager")
    assert compiled._CACHE, "the chunk was not compiled"
    torch.testing.assert_close(fast, eager, rtol=1e-5, atol=1e-4)
    assert float((fast - exact).abs().mean()) < 0.02


def test_parameters_changed_in_place_are_seen_by_a_reused_graph(small_vae):
    vae, x = small_vae
    vae = pv.VAE(12, 2, hidden_dims=(16,)).eval()
    vae.load_state_dict(small_vae[0].state_dict())
    before = ev.iw_log_likelihood(vae.model, vae.guide, x, 50, batch_size=8, fast="compile")
    graph = next(iter(compiled._CACHE.values()))
    with torch.no_grad():
        for p in vae.parameters():
            p.mul_(1.5)  # as an optimizer step would: same tensors, new values
    after = ev.iw_log_likelihood(vae.model, vae.guide, x, 50, batch_size=8, fast="compile")
    assert next(iter(compiled._CACHE.values())) is graph and len(compiled._CACHE) == 1, (
        "graph not reused"
    )
    eager = ev.iw_log_likelihood(vae.model, vae.guide, x, 50, batch_size=8, fast="eager")
    torch.testing.assert_close(after, eager, rtol=1e-5, atol=1e-4)
    assert float((after - before).abs().max()) > 0.1


def test_program_with_data_dependent_python_runs_eagerly_with_a_warning(small_vae):
    vae, x = small_vae

    def model(data):
        if float(data.sum()) > 0:  # Python branching on values: cannot be traced on fake tensors
            vae.model(data)

    with pytest.warns(RuntimeWarning, match="running it eagerly"):
        fast = ev.iw_log_likelihood(model, vae.guide, x, 50, batch_size=8, seed=2, fast="compile")
    eager = ev.iw_log_likelihood(model, vae.guide, x, 50, batch_size=8, seed=2, fast="eager")
    torch.testing.assert_close(fast, eager, rtol=0, atol=0)
    assert not compiled._CACHE


def test_nan_log_weights_still_stop_the_compiled_path(small_vae):
    vae, x = small_vae
    x = x.clone()
    x[30] = 1.0  # the one row whose log-likelihood is NaN, past the 16 rows checked up front
    w = torch.randn(2, 12)

    def model(data):
        with pyro.plate("data", data.shape[0]):
            z = pyro.sample("z", dist.Normal(data.new_zeros(len(data), 2), 1.0).to_event(1))
            bad = torch.log(11.5 - data.sum(-1, keepdim=True))  # NaN where all 12 pixels are on
            pyro.sample("obs", dist.Bernoulli(logits=z @ w + bad).to_event(1), obs=data)

    with pytest.raises(ValueError, match="log weights are NaN for 1 point.*first at row 30"):
        ev.iw_log_likelihood(model, vae.guide, x, 50, batch_size=8, fast="compile")
    assert compiled._CACHE, "the chunk with the NaN was meant to run compiled"


def test_auto_compiles_only_jobs_of_at_least_compile_min_rows(small_vae, monkeypatch):
    vae, x = small_vae
    monkeypatch.setattr(ev, "COMPILE_MIN_ROWS", 40 * 100)
    ev.iw_log_likelihood(vae.model, vae.guide, x, 99, batch_size=8)  # 3960 rows: eager
    assert not compiled._CACHE
    ev.iw_log_likelihood(vae.model, vae.guide, x, 100, batch_size=8)  # 4000 rows: compiled
    assert len(compiled._CACHE) == 1


def test_compile_shapes_count_chunks():
    # 10 points in chunks of 4 -> 4, 4, 2; K=1000 in chunks of 400 -> 400, 400, 200
    assert ev._compile_shapes(10, 1000, 4, 400, "compile") == {
        (4, 400),
        (4, 200),
        (2, 400),
        (2, 200),
    }
    assert ev._compile_shapes(10, 1000, 4, 400, "auto") == set()  # under COMPILE_MIN_ROWS
    assert ev._compile_shapes(10**4, 1000, 4, 1000, "auto") == {
        (4, 1000)
    }  # 2500 chunks of one shape
    assert ev._compile_shapes(10**4, 1000, 4, 1000, "eager") == set()


def test_fast_argument_is_checked(small_vae):
    vae, x = small_vae
    for fn in (ev.iw_log_likelihood, ev.log_weights, ev.elbo):
        with pytest.raises(
            ValueError, match="fast must be one of 'auto', 'compile', 'eager'; got 'graph'"
        ):
            fn(vae.model, vae.guide, x, 10, fast="graph")
    with pytest.raises(ValueError, match="fast must be one of"):
        pv.evaluate(vae, x, 100, fast=None)


def test_user_program_with_closure_parameters_compiles(small_vae):
    vae, x = small_vae
    w = torch.randn(2, 12)

    def model(data):
        with pyro.plate("rows", data.shape[0]):
            z = pyro.sample("code", dist.Normal(data.new_zeros(len(data), 2), 1.0).to_event(1))
            pyro.sample("obs", dist.Bernoulli(logits=z @ w).to_event(1), obs=data)

    def guide(data):
        loc, scale = vae.encode(data)
        with pyro.plate("rows", data.shape[0]):
            pyro.sample("code", dist.Normal(loc, scale).to_event(1))

    fast = ev.iw_log_likelihood(
        model, guide, x, 64, batch_size=8, seed=1, fast="compile", data_plate="rows"
    )
    eager = ev.iw_log_likelihood(
        model, guide, x, 64, batch_size=8, seed=1, fast="eager", data_plate="rows"
    )
    assert compiled._CACHE
    torch.testing.assert_close(fast, eager, rtol=1e-5, atol=1e-4)
