"""Any Pyro program: fit trains it, the estimators and evaluate score it, and the numbers agree with an
independent plain-torch importance sampler on the same networks (tests/programs/)."""

from __future__ import annotations

import math
import warnings

import pyro
import pytest
import torch
from programs.structures import M2, GlobalBiasVAE, PixelLatentModel
from programs.vaes import (
    ConditionalVAE,
    ConvVAE,
    IAFGuideVAE,
    PyroExampleVAE,
    SubsampledPlateVAE,
    UnsizedPlateVAE,
)

import ppl_vae as pv
from ppl_vae.programs import ProgramWarning

K = 200


@pytest.fixture(scope="module")
def splits():
    data = pv.load_dataset("digits", binarize="dynamic", seed=0)
    g = torch.Generator().manual_seed(0)
    labelled = torch.rand(len(data.train_labels), generator=g) < 0.3
    return {
        "x": data.train,
        "xt": data.test[:120],
        "y": data.train_labels,
        "yt": data.test_labels[:120],
        "y_partial": torch.where(labelled, data.train_labels, -torch.ones_like(data.train_labels)),
    }


def _cases(s):
    """name -> (program, train data, test data, objective, fit kwargs, torch reference's test data)."""
    unlabelled = -torch.ones_like(s["yt"])
    conv = ConvVAE()
    return {
        "pyro_example": (PyroExampleVAE(), s["x"], s["xt"], "analytic", {}),
        "unsized_plate": (UnsizedPlateVAE(), s["x"], s["xt"], "analytic", {}),
        "subsampled_plate": (
            SubsampledPlateVAE(n_full=len(s["x"])),
            s["x"],
            s["xt"],
            "analytic",
            {},
        ),
        # the data plate is named "images": the refusal says data_plate="images", which this follows
        "conv_images": (
            pv.Program(conv.model, conv.guide, data_plate="images", owner=conv),
            s["x"].reshape(-1, 1, 8, 8),
            s["xt"].reshape(-1, 1, 8, 8),
            "analytic",
            {},
        ),
        "conditional": (ConditionalVAE(), (s["x"], s["y"]), (s["xt"], s["yt"]), "analytic", {}),
        "iaf_guide": (IAFGuideVAE(), s["x"], s["xt"], "trace", {}),
        "m2_enumerated": (
            M2(alpha=50.0),
            (s["x"], s["y_partial"]),
            (s["xt"], unlabelled),
            "enum",
            {"lr": 3e-3},
        ),
    }


def _owner(program):
    return program.owner if isinstance(program, pv.Program) else program


@pytest.mark.parametrize(
    "name",
    [
        "pyro_example",
        "unsized_plate",
        "subsampled_plate",
        "conv_images",
        "conditional",
        "iaf_guide",
        "m2_enumerated",
    ],
)
def test_fit_trains_and_the_estimators_agree_with_plain_torch(splits, name):
    torch.manual_seed(0)
    program, train, test, objective, kw = _cases(splits)[name]
    history = pv.fit(
        program, train, objective, epochs=3, batch_size=64, test_data=test, progress=False, **kw
    )
    elbos = [r["test_elbo"] for r in history]
    assert all(math.isfinite(v) for v in elbos) and elbos[-1] > elbos[0] + 1.0, elbos
    # IW of the library against an independent plain-torch IW on the same networks, same K
    iw = pv.iw_log_likelihood(program, test, K, seed=0)
    rows = test if isinstance(test, tuple) else (test,)
    with torch.no_grad():
        lw = _owner(program).torch_log_weights(
            *rows, k=K, generator=torch.Generator().manual_seed(1)
        )
    ref = lw.logsumexp(0) - math.log(K)
    diff = iw - ref
    se = float(diff.std() / math.sqrt(len(diff)))
    assert abs(float(diff.mean())) < 4 * se + 1e-3, (float(diff.mean()), se)
    # evaluate: IW >= ELBO per point (same draws), finite k-hat, and the discrete site reported as sampled
    report = pv.evaluate(program, test, K, seed=0)
    assert (report.points["gap"] >= -1e-4).all()
    assert report.points["khat"].notna().all()
    assert report.summary["active_units"] is not None
    if name == "m2_enumerated":
        assert report.summary["discrete_sites"] == ["y_unobserved"]


def test_m2_is_refused_by_analytic_naming_the_site_and_its_classifier_learns_under_enum(splits):
    with pytest.raises(
        pv.ProgramError, match=r"'analytic' needs reparameterised.*'y_unobserved'.*'enum'"
    ):
        pv.fit(M2(), (splits["x"], splits["y_partial"]), "analytic", epochs=1, progress=False)
    torch.manual_seed(0)
    m2 = M2(alpha=50.0)
    before = m2.entropy(splits["xt"])
    pv.fit(
        m2,
        (splits["x"], splits["y_partial"]),
        "enum",
        epochs=10,
        batch_size=64,
        lr=3e-3,
        progress=False,
    )
    after = m2.entropy(splits["xt"])
    assert before > 2.2 and after < 1.0, (before, after)  # log 10 = 2.303 for a uniform q(y | x)
    assert m2.accuracy(splits["xt"], splits["yt"]) > 0.6


def test_a_global_latent_is_scaled_once_its_pyro_params_train_and_fix_globals_evaluates_it(splits):
    x, xt = splits["x"], splits["xt"]
    torch.manual_seed(0)
    g = GlobalBiasVAE()
    history = pv.fit(g, x, "analytic", epochs=4, lr=3e-3, test_data=xt, progress=False)
    trained = history.state.trained_params
    assert set(trained) == {"b_loc", "b_scale"}
    assert not torch.allclose(trained["b_loc"], torch.zeros(64)), "pyro.param sites are optimised"
    torch.testing.assert_close(pv.trained_params(g)["b_loc"], trained["b_loc"])
    # per-point estimates refuse a global latent and name the remedy; following it works
    with pytest.raises(pv.ProgramError, match=r"'bias'.*pv.fix_globals"):
        pv.iw_log_likelihood(g, xt, K)
    fixed = pv.fix_globals(g, xt)
    iw = pv.iw_log_likelihood(fixed, xt, K, seed=0)
    with torch.no_grad():
        lw = g.torch_log_weights_given_bias(
            xt, trained["b_loc"], k=K, generator=torch.Generator().manual_seed(1)
        )
    diff = iw - (lw.logsumexp(0) - math.log(K))
    assert abs(float(diff.mean())) < 4 * float(diff.std() / math.sqrt(len(diff))) + 1e-3


def test_a_global_latent_train_elbo_does_not_depend_on_the_batch_size(splits):
    """With the networks frozen, the train ELBO is an estimate of the same full-data ELBO per point at any
    batch size (scaling the global site by N/|B| made it fall from -138 to -152 as B shrank)."""
    x = splits["x"]
    torch.manual_seed(0)
    g = GlobalBiasVAE()
    pv.fit(g, x, "analytic", epochs=2, lr=3e-3, progress=False)
    for p in g.parameters():
        p.requires_grad_(False)
    g.eval()
    values = {}
    for batch_size in (len(x), 256, 32):
        state = pv.TrainState()  # a fresh state: no Adam moments
        state.params = {
            "params": {
                k: v.detach().clone().requires_grad_()
                for k, v in pv.train.state_of(g).params["params"].items()
                if "$$$" not in k
            },
            "constraints": dict(pv.train.state_of(g).params["constraints"]),
        }
        h = pv.fit(
            g, x, "trace", epochs=3, batch_size=batch_size, lr=1e-12, state=state, progress=False
        )
        values[batch_size] = [r["train_elbo"] for r in h]
    means = {b: sum(v) / len(v) for b, v in values.items()}
    spread = max(means.values()) - min(means.values())
    assert spread < 0.3, means  # Monte Carlo noise of one-draw ELBO averages over 3 epochs is ~0.1


def test_a_global_latent_posterior_matches_the_full_batch_one(splits):
    x = splits["x"][:512]
    scales = {}
    for batch_size, epochs in ((len(x), 400), (32, 25)):
        torch.manual_seed(0)
        g = GlobalBiasVAE()
        h = pv.fit(g, x, "analytic", epochs=epochs, batch_size=batch_size, lr=1e-2, progress=False)
        scales[batch_size] = h.state.trained_params["b_scale"].mean().item()
    assert scales[32] == pytest.approx(scales[len(x)], rel=0.25), scales


def test_per_pixel_latents_in_a_nested_plate_give_exact_per_point_values():
    pm = PixelLatentModel(16)
    x = torch.randn(32, 16) * 1.3
    u, v, w = pm.exact_guide_params()
    with pyro.get_param_store().scope():
        pyro.param("u", u.clone())
        pyro.param("v", v.clone())
        pyro.param("w", w.clone(), constraint=pyro.distributions.constraints.positive)
        iw = pv.iw_log_likelihood(pm, x, 256, seed=0)
        el = pv.elbo(pm, x, 8, seed=0)
    exact = pm.exact_log_likelihood(x)
    torch.testing.assert_close(
        iw, exact, rtol=0, atol=1e-4
    )  # the exact posterior: every weight is p(x)
    torch.testing.assert_close(el, exact, rtol=0, atol=1e-4)
    # trained by fit (pyro.param guide, nested plates), it gets there too
    h = pv.fit(pm, x, "analytic", epochs=150, batch_size=32, lr=3e-2, progress=False)
    assert set(h.state.trained_params) == {"u", "v", "w"}
    assert float((pv.iw_log_likelihood(pm, x, 256, seed=0) - exact).abs().max()) < 0.1


def test_a_subsampled_plate_is_honoured_and_a_wrong_full_size_refused(splits):
    x, xt = splits["x"], splits["xt"]
    torch.manual_seed(0)
    sub = SubsampledPlateVAE(n_full=len(x))
    history = pv.fit(sub, x, "analytic", epochs=1, test_data=xt, progress=False)
    # the test ELBO is per point (not multiplied by the plate's N / len(x)): it matches mean_elbo
    assert history[-1]["test_elbo"] == pytest.approx(pv.train.mean_elbo(sub, xt), abs=0.5)
    assert history[-1]["test_elbo"] > -60
    with pytest.raises(pv.ProgramError, match=r"declares 60000 rows .* trains on 1437"):
        pv.fit(SubsampledPlateVAE(n_full=60000), x, epochs=1, progress=False)


def test_the_data_plate_is_found_by_name_or_as_the_one_plate_around_the_observations(splits):
    """No plate is named "data": the one plate enclosing every observed site is the data plate, said once;
    data_plate= names it and gives the same numbers (issue 19; before, a refusal asking for data_plate=)."""
    conv = ConvVAE()
    images = splits["xt"].reshape(-1, 1, 8, 8)
    with pytest.warns(ProgramWarning, match=r"plate 'images' encloses every observed site"):
        found = pv.iw_log_likelihood(conv, images, 10, seed=0)
    assert torch.equal(found, pv.iw_log_likelihood(conv, images, 10, data_plate="images", seed=0))
    with warnings.catch_warnings():  # said once per program: fit of the same program is quiet
        warnings.simplefilter("error", ProgramWarning)
        h = pv.fit(conv, splits["x"].reshape(-1, 1, 8, 8), epochs=1, progress=False)
    assert len(h) == 1
    h = pv.fit(
        conv, splits["x"].reshape(-1, 1, 8, 8), epochs=1, progress=False, data_plate="images"
    )
    assert len(h) == 2


def test_plain_pyro_params_reach_the_estimators_after_fit():
    """A free-function program: its pyro.param values are trained in a scoped store, kept for the program,
    and seen by every later call given the same functions."""
    x = torch.randn(200, 3) + torch.tensor([2.0, -1.0, 0.5])

    def model(data):
        with pyro.plate("data", len(data)):
            z = pyro.sample(
                "z", pyro.distributions.Normal(data.new_zeros(len(data), 3), 1.0).to_event(1)
            )
            loc = pyro.param("loc", lambda: torch.zeros(3))
            pyro.sample("obs", pyro.distributions.Normal(loc + z, 0.5).to_event(1), obs=data)

    def guide(data):
        w = pyro.param("w", lambda: torch.zeros(3))
        with pyro.plate("data", len(data)):
            pyro.sample("z", pyro.distributions.Normal(w * data, 0.5).to_event(1))

    program = pv.Program(model, guide)
    before = len(pyro.get_param_store())
    h = pv.fit(program, x, "analytic", epochs=100, batch_size=50, lr=0.1, progress=False)
    loc, w = h.state.trained_params["loc"], h.state.trained_params["w"]
    # at the optimum of this guide family E_q[z | x] = w x absorbs part of x and loc the rest of its mean
    torch.testing.assert_close(loc + w * x.mean(0), x.mean(0), rtol=0, atol=0.15)
    assert len(pyro.get_param_store()) == before, "the global store is left alone"
    trained = pv.iw_log_likelihood(model, guide, x, 50, seed=0).mean()
    with pyro.get_param_store().scope():  # the same functions with fresh (zero) parameters
        pyro.param("loc", torch.zeros(3))
        pyro.param("w", torch.zeros(3))
        untrained = pv.iw_log_likelihood(
            pv.Program(lambda d: model(d), lambda d: guide(d)), x, 50, seed=0
        ).mean()
    assert trained > untrained + 1.0


def test_posterior_tools_take_users_programs(splits):
    """NUTS reference posteriors with the latent site named "latent" (Pyro's example), the amortisation gap on
    a conditional program with tuple data, and on a flow prior (no closed-form KL: sampled, and said so)."""
    torch.manual_seed(0)
    vae = PyroExampleVAE(z_dim=2)
    pv.fit(vae, splits["x"], epochs=2, progress=False)
    ref = pv.reference_posterior(
        vae, splits["xt"][:10], [0, 3], num_chains=2, num_samples=60, warmup=60
    )
    assert ref.site == "latent" and list(ref.distances.index) == [0, 3]
    assert ref.idata.posterior["latent"].dims == ("chain", "draw", "point", "latent_dim")
    cvae = ConditionalVAE(z_dim=2)
    pv.fit(cvae, (splits["x"], splits["y"]), epochs=2, progress=False)
    gap = pv.amortization_gap(
        cvae, (splits["xt"][:8], splits["yt"][:8]), steps=30, num_samples=100, elbo_samples=50
    )
    assert len(gap) == 8 and gap.attrs["settings"]["analytic_kl"] is True
    assert (gap["inference_gap"] > -0.5).all()

    class FlowPrior(
        PyroExampleVAE
    ):  # the prior pushed through an affine flow: KL(q || p) has no closed form
        def __init__(self):
            super().__init__(z_dim=2)
            self.flow = pyro.distributions.transforms.AffineTransform(
                torch.tensor([0.5, -0.5]), torch.tensor(2.0)
            )

        def model(self, x):
            pyro.module("decoder", self.decoder)
            with pyro.plate("data", x.shape[0]):
                base = pyro.distributions.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1)
                z = pyro.sample(
                    "latent", pyro.distributions.TransformedDistribution(base, [self.flow])
                )
                pyro.sample(
                    "obs",
                    pyro.distributions.Bernoulli(self.decoder(z), validate_args=False).to_event(1),
                    obs=x,
                )

    flow = FlowPrior()
    pv.fit(flow, splits["x"], "trace", epochs=1, progress=False)
    with pytest.raises(pv.ProgramError, match="analytic_kl='auto' or False"):
        pv.amortization_gap(flow, splits["xt"][:6], steps=5, analytic_kl=True)
    gap = pv.amortization_gap(flow, splits["xt"][:6], steps=20, num_samples=100, elbo_samples=50)
    assert gap.attrs["settings"]["analytic_kl"] is False and gap["log_px_iw"].notna().all()


def test_compare_takes_users_programs_beside_built_in_methods():
    """The grid harness on a user's conditional VAE (labels through the dataset_inputs hook) under two
    objectives, beside a built-in method, with paired differences."""
    data = pv.load_dataset("digits", binarize="dynamic", seed=0, n_samples=400)
    methods = [
        pv.ProgramMethod("cvae", lambda: ConditionalVAE(z_dim=4), "analytic"),
        pv.ProgramMethod("cvae", lambda: ConditionalVAE(z_dim=4), "iwae:k=3"),
        pv.ProgramMethod("pyro_example", PyroExampleVAE, "analytic"),
        pv.ProgramMethod("iaf_guide", IAFGuideVAE, "trace"),
        "analytic",
    ]
    result = pv.run_comparison(
        methods,
        data,
        seeds=[0],
        epochs=2,
        num_samples=50,
        batch_size=64,
        test_points=60,
        reference="cvae/analytic",
    )
    assert list(result.table["method"]) == [
        "cvae/analytic",
        "cvae/iwae:k=3",
        "pyro_example/analytic",
        "iaf_guide/trace",
        "analytic",
    ]
    assert result.table["test_iw_log_likelihood"].notna().all()
    paired = result.paired()
    assert set(paired["method"]) == {
        "cvae/iwae:k=3",
        "pyro_example/analytic",
        "iaf_guide/trace",
        "analytic",
    }
    # both cvae runs started from the same weights (one factory, one seed)
    assert len({d for k, d in result.settings["init"]["0"].items() if k.startswith("cvae")}) == 1


def test_reference_posterior_refuses_a_subsampled_plate_and_the_advice_works(splits):
    """Pyro's NUTS refuses subsample sites (NotImplementedError); ours names the plate and the fix, and the
    same networks with the plate written as advised (unsized) get their reference posterior."""
    torch.manual_seed(0)
    sub = SubsampledPlateVAE(n_full=len(splits["x"]))
    pv.fit(sub, splits["x"], epochs=1, progress=False)
    with pytest.raises(pv.ProgramError, match=r"subsample_size=.*pyro.plate\('data'\)"):
        pv.reference_posterior(sub, splits["xt"][:4], [0], num_chains=1, num_samples=5, warmup=5)
    fixed = UnsizedPlateVAE()
    fixed.load_state_dict(sub.state_dict())
    ref = pv.reference_posterior(
        fixed, splits["xt"][:4], [0], num_chains=1, num_samples=20, warmup=20
    )
    assert ref.site == "latent" and list(ref.distances.index) == [0]


def test_compare_takes_a_program_whose_data_plate_has_another_name():
    """ProgramMethod(..., data_plate=) reaches fit and evaluate, as fit(..., data_plate=) does; without it the
    one plate around the observations is the data plate, said once (issue 19)."""

    class FlatConv(
        ConvVAE
    ):  # a Dataset's rows are flat: the program reshapes them, as Pyro's examples do
        def model(self, x):
            super().model(x.reshape(-1, 1, 8, 8))

        def guide(self, x):
            super().guide(x.reshape(-1, 1, 8, 8))

    data = pv.load_dataset("digits", binarize="dynamic", seed=0, n_samples=300)
    with pytest.warns(ProgramWarning, match="data_plate='images'"):
        found = pv.run_comparison(
            [pv.ProgramMethod("conv", FlatConv)], data, epochs=1, num_samples=20, test_points=30
        )
    assert found.table["test_iw_log_likelihood"].notna().all()
    result = pv.run_comparison(
        [pv.ProgramMethod("conv", FlatConv, data_plate="images"), "analytic"],
        data,
        epochs=1,
        num_samples=20,
        test_points=30,
    )
    assert result.table["test_iw_log_likelihood"].notna().all()
    with pytest.raises(pv.UserError, match="data_plate must be a plate's name"):
        pv.ProgramMethod("conv", FlatConv, data_plate="")


def test_compare_evaluates_a_global_latent_program_at_its_guide_means_and_says_so():
    data = pv.load_dataset("digits", binarize="dynamic", seed=0, n_samples=300)
    with pytest.warns(UserWarning, match=r"global latent site\(s\) \['bias'\].*pv.fix_globals"):
        result = pv.run_comparison(
            [pv.ProgramMethod("global", GlobalBiasVAE), "analytic"],
            data,
            epochs=1,
            num_samples=20,
            test_points=30,
        )
    assert result.table["test_iw_log_likelihood"].notna().all()


def test_a_batchnorm_that_would_normalise_over_the_rows_without_an_error_is_said():
    """BatchNorm1d(C) on a particle-expanded (K, N, C) batch reads N as its channels: with N != C it fails
    (and the failure is explained), with N == C it normalises over the rows silently; that case is said."""
    import pyro
    import pyro.distributions as dist
    from torch import nn

    from ppl_vae.program_sites import ProgramWarning

    class Normed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4))

        def model(self, x):
            pyro.module("normed", self)
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
                pyro.sample("x", dist.Normal(self.net(z), 1.0).to_event(1), obs=x)

        def guide(self, x):
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))

    program = Normed()
    x = torch.randn(4, 4)  # N = 4 rows, C = 4 features
    with pytest.warns(ProgramWarning, match=r"BatchNorm1d 'net\.1'.*\(-1, C\)"):
        pv.iw_log_likelihood(program, x, num_samples=8, seed=0)
    assert program.training  # the mode comes back
