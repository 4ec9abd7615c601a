"""Every refusal of the program contract names what is wrong and a fix; here each fix is followed and works."""

from __future__ import annotations

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import ppl_vae as pv

X = (torch.rand(96, 6, generator=torch.Generator().manual_seed(0)) < 0.4).float()


def _vae_pair(plate_args=(), plate_kwargs=None, guide_z=True, dec=None):
    dec = dec if dec is not None else nn.Linear(2, 6)
    enc = nn.Linear(6, 2)

    def model(x):
        pyro.module("dec", dec)
        with pyro.plate("data", *(plate_args or (len(x),)), **(plate_kwargs or {})):
            z = pyro.sample("z", dist.Normal(x.new_zeros(len(x), 2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=dec(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("enc", enc)
        with pyro.plate("data", *(plate_args or (len(x),)), **(plate_kwargs or {})):
            if guide_z:
                pyro.sample("z", dist.Normal(enc(x), 1.0).to_event(1))

    return model, guide


def test_a_plate_sized_to_the_full_data_is_refused_and_subsample_size_fixes_it():
    model, guide = _vae_pair(plate_args=(len(X),))  # size N, but fit passes batches of 32
    with pytest.raises(
        pv.ProgramError, match=r"(?s)sized differently from the batch.*subsample_size=len\(x\)"
    ):
        pv.fit(pv.Program(model, guide), X, epochs=1, batch_size=32, progress=False)

    # the advice: declare the full size with subsample_size=len(x)
    dec, enc = nn.Linear(2, 6), nn.Linear(6, 2)

    def model2(x):
        pyro.module("dec", dec)
        with pyro.plate("data", len(X), subsample_size=len(x)):
            z = pyro.sample("z", dist.Normal(x.new_zeros(len(x), 2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=dec(z)).to_event(1), obs=x)

    def guide2(x):
        pyro.module("enc", enc)
        with pyro.plate("data", len(X), subsample_size=len(x)):
            pyro.sample("z", dist.Normal(enc(x), 1.0).to_event(1))

    h = pv.fit(pv.Program(model2, guide2), X, epochs=2, batch_size=32, progress=False)
    assert len(h) == 2


def test_latent_sites_that_do_not_match_are_named():
    model, guide = _vae_pair(guide_z=False)
    with pytest.raises(
        pv.ProgramError, match=r"model-only \{'z'\}.*needs a guide site of the same name"
    ):
        pv.fit(pv.Program(model, guide), X, epochs=1, progress=False)
    model, guide = _vae_pair()  # the advice: a guide site of the same name
    assert len(pv.fit(pv.Program(model, guide), X, epochs=1, progress=False)) == 1


def test_a_sequential_data_plate_is_refused_and_a_vectorised_one_works():
    dec = nn.Linear(2, 6)

    def model(x):
        pyro.module("dec", dec)
        for i in pyro.plate("data", len(x)):
            z = pyro.sample(f"z_{i}", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample(f"x_{i}", dist.Bernoulli(logits=dec(z)).to_event(1), obs=x[i])

    def guide(x):
        for i in pyro.plate("data", len(x)):
            pyro.sample(f"z_{i}", dist.Normal(x.new_zeros(2), 1.0).to_event(1))

    with pytest.raises(pv.ProgramError, match="sequential.*`with pyro.plate"):
        pv.iw_log_likelihood(model, guide, X[:4], 5)
    model, guide = _vae_pair(dec=dec)
    assert pv.iw_log_likelihood(model, guide, X[:4], 5).shape == (4,)


def test_a_discrete_guide_site_under_analytic_is_refused_and_trace_or_enum_train_it():
    class Mixture(nn.Module):
        def __init__(self):
            super().__init__()
            self.means = nn.Parameter(torch.randn(3, 6))
            self.q = nn.Linear(6, 3)

        def model(self, x):
            pyro.module("mix", self)
            with pyro.plate("data", len(x)):
                c = pyro.sample("c", dist.Categorical(logits=x.new_zeros(len(x), 3)))
                pyro.sample("x", dist.Bernoulli(logits=self.means[c]).to_event(1), obs=x)

        def guide(self, x):
            pyro.module("mix", self)
            with pyro.plate("data", len(x)):
                pyro.sample(
                    "c", dist.Categorical(logits=self.q(x)), infer={"enumerate": "parallel"}
                )

    with pytest.raises(
        pv.ProgramError, match=r"guide site\(s\) \{'c'\} have no rsample.*'trace'.*'enum'"
    ):
        pv.fit(Mixture(), X, "analytic", epochs=1, progress=False)
    for objective in ("trace", "enum"):
        torch.manual_seed(0)
        h = pv.fit(
            Mixture(), X, objective, epochs=30, batch_size=32, lr=5e-2, test_data=X, progress=False
        )
        assert h[-1]["test_elbo"] > h[0]["test_elbo"], objective


def test_iwae_refuses_a_global_latent_and_analytic_trains_it():
    dec, enc = nn.Linear(2, 6), nn.Linear(6, 2)

    def model(x):
        pyro.module("dec", dec)
        b = pyro.sample("b", dist.Normal(x.new_zeros(6), 1.0).to_event(1))
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(x.new_zeros(len(x), 2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=dec(z) + b).to_event(1), obs=x)

    def guide(x):
        pyro.module("enc", enc)
        loc = pyro.param("b_loc", torch.zeros(6))
        pyro.sample("b", dist.Normal(loc, 0.1).to_event(1))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(enc(x), 1.0).to_event(1))

    program = pv.Program(model, guide)
    with pytest.raises(
        pv.ProgramError, match=r"'iwae:k=3' needs every latent.*\{'b'\} are global.*'analytic'"
    ):
        pv.fit(program, X, "iwae:k=3", epochs=1, progress=False)
    assert len(pv.fit(program, X, "analytic", epochs=1, progress=False)) == 1


def test_a_model_only_enumerated_site_trains_under_enum_and_the_estimators_ask_for_a_guide_site():
    means = nn.Parameter(torch.randn(3, 6))

    def model(x):
        pyro.module("m", nn.ParameterList([means]))
        with pyro.plate("data", len(x)):
            c = pyro.sample(
                "c",
                dist.Categorical(logits=x.new_zeros(len(x), 3)),
                infer={"enumerate": "parallel"},
            )
            pyro.sample("x", dist.Bernoulli(logits=means[c]).to_event(1), obs=x)

    def guide(x):
        pass

    program = pv.Program(model, guide)
    with pytest.raises(
        pv.ProgramError, match=r"\{'c'\} are enumerated in the model.*only the 'enum' objective"
    ):
        pv.fit(program, X, "trace", epochs=1, progress=False)
    h = pv.fit(program, X, "enum", epochs=5, lr=5e-2, test_data=X, progress=False)
    assert h[-1]["test_elbo"] > h[0]["test_elbo"]
    with pytest.raises(pv.ProgramError, match=r"add them to the guide"):
        pv.iw_log_likelihood(program, X, 10)

    q = nn.Linear(6, 3)

    def guide_with_c(x):  # the advice: a q(c | x) in the guide
        pyro.module("q", q)
        with pyro.plate("data", len(x)):
            pyro.sample("c", dist.Categorical(logits=q(x)))

    assert pv.iw_log_likelihood(model, guide_with_c, X, 10).shape == (96,)


def test_module_parameters_never_registered_are_reported_and_registering_them_trains_them():
    class Forgetful(nn.Module):
        def __init__(self, register: bool):
            super().__init__()
            self.dec, self.enc, self.register = nn.Linear(2, 6), nn.Linear(6, 2), register

        def model(self, x):
            pyro.module("dec", self.dec)
            with pyro.plate("data", len(x)):
                z = pyro.sample("z", dist.Normal(x.new_zeros(len(x), 2), 1.0).to_event(1))
                pyro.sample("x", dist.Bernoulli(logits=self.dec(z)).to_event(1), obs=x)

        def guide(self, x):
            if self.register:
                pyro.module("enc", self.enc)
            with pyro.plate("data", len(x)):
                pyro.sample("z", dist.Normal(self.enc(x), 1.0).to_event(1))

    forgetful = Forgetful(register=False)
    before = forgetful.enc.weight.detach().clone()
    with pytest.warns(UserWarning, match=r"not trained: enc.weight, enc.bias.*pyro.module"):
        pv.fit(forgetful, X, epochs=1, progress=False)
    assert torch.equal(forgetful.enc.weight, before)
    fixed = Forgetful(register=True)
    before = fixed.enc.weight.detach().clone()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        pv.fit(fixed, X, epochs=1, progress=False)
    assert not torch.equal(fixed.enc.weight, before)


def test_a_program_that_breaks_under_a_particle_plate_is_told_to_index_from_the_right():
    dec = nn.Linear(1, 6)

    def fragile(x):
        pyro.module("dec", dec)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(x.new_zeros(len(x)), 1.0))
            pyro.sample("x", dist.Bernoulli(logits=dec(z[:, None])).to_event(1), obs=x)

    def sturdy(x):  # the advice: index from the right
        pyro.module("dec", dec)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(x.new_zeros(len(x)), 1.0))
            pyro.sample("x", dist.Bernoulli(logits=dec(z[..., None])).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(x.new_zeros(len(x)), 1.0))

    with pytest.raises(
        pv.ProgramError, match=r"(?s)vectorised over particles.*Index tensors from the right"
    ):
        pv.iw_log_likelihood(fragile, guide, X, 5)
    assert pv.iw_log_likelihood(sturdy, guide, X, 5).shape == (96,)


def test_a_conditioning_input_joined_with_torch_cat_is_told_to_expand_it():
    # the CVAE idiom: the decoder takes [z, y]; a particle dimension on z breaks torch.cat with y
    dec = nn.Linear(3, 6)
    y = torch.randn(len(X), 2)

    def joined(expand):
        def model(x, y):
            pyro.module("dec", dec)
            with pyro.plate("data", len(x)):
                z = pyro.sample("z", dist.Normal(x.new_zeros(len(x), 1), 1.0).to_event(1))
                yy = y.expand(*z.shape[:-1], -1) if expand else y
                pyro.sample(
                    "x", dist.Bernoulli(logits=dec(torch.cat([z, yy], -1))).to_event(1), obs=x
                )

        return model

    def guide(x, y):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(x.new_zeros(len(x), 1), 1.0).to_event(1))

    with pytest.raises(
        pv.ProgramError, match=r"(?s)vectorised over particles.*y\.expand\(\*z\.shape\[:-1\], -1\)"
    ):
        pv.iw_log_likelihood(joined(False), guide, (X, y), 5)
    assert pv.iw_log_likelihood(joined(True), guide, (X, y), 5).shape == (96,)
