"""The one registry and its spec grammar (``name:key=value,...``): parsing, errors, canonical strings,
and a user's own likelihood registered once and used by the built-in VAE, through fit and a checkpoint."""

from __future__ import annotations

import re

import pyro.distributions as dist
import pytest
import torch

import ppl_vae as pv
from ppl_vae.errors import UserError
from ppl_vae.likelihoods import Likelihood, make_likelihood
from ppl_vae.registry import REGISTRY, Param, Registry, parse_spec


def _toy() -> Registry:
    reg = Registry()
    reg.register(
        "objective",
        "iw",
        lambda k, grad, beta, sizes: (k, grad, beta, sizes),
        params=(
            Param("k", 5),
            Param("grad", "reparam", choices=("reparam", "stl", "dreg")),
            Param("beta", 1.0),
            Param("sizes", (200, 200), tuple),
        ),
        doc="a toy",
        fast_paths=frozenset({"graph"}),
    )
    return reg


def test_parse_converts_values_and_prints_a_canonical_spec():
    reg = _toy()
    spec = reg.parse("objective", " iw:k=7, beta=0.5 ,sizes=100-50")
    assert spec.given == {"k": 7, "beta": 0.5, "sizes": (100, 50)}
    assert spec.values == {"k": 7, "grad": "reparam", "beta": 0.5, "sizes": (100, 50)}
    assert str(spec) == "iw:k=7,beta=0.5,sizes=100-50"
    assert str(reg.parse("objective", "iw:k=5,grad=reparam")) == "iw"  # defaults left out
    assert reg.parse("objective", spec) is spec
    assert spec.build() == (7, "reparam", 0.5, (100, 50))
    assert spec.entry.trait("fast_paths") == {"graph"} and spec.entry.trait("memory") is None


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("nope", "unknown objective 'nope'; choose one of: iw - a toy"),
        ("iw:q=1", "has no parameter 'q'.*valid parameters: k, grad, beta, sizes"),
        ("iw:k=1,k=2", "'k' is given more than once"),
        ("iw:k=abc", "parameter 'k' must be of type int; got 'abc'"),
        ("iw:grad=magic", "choose one of reparam, stl, dreg"),
        ("iw:k", "parameters are written key=value; got 'k'"),
        ("", "must be a non-empty string"),
        ("i w", "is not a name"),
    ],
)
def test_a_wrong_spec_is_one_user_error_naming_what_is_valid(text, needle):
    with pytest.raises(UserError, match=needle):
        _toy().parse("objective", text)


def test_registering_twice_needs_replace_and_unknown_kinds_are_refused():
    reg = _toy()
    with pytest.raises(UserError, match="registered already; pass replace=True"):
        reg.register("objective", "iw", lambda: None, doc="again")
    reg.register("objective", "iw", lambda: None, doc="again", replace=True)
    assert reg.describe("objective") == {"iw": "again"}
    with pytest.raises(UserError, match="unknown kind"):
        reg.register("widget", "x", lambda: None, doc="?")  # type: ignore[arg-type]
    assert parse_spec("a:b=1,c=2") == ("a", [("b", "1"), ("c", "2")])


def test_the_built_in_likelihoods_are_registry_entries_with_their_traits():
    assert {"bernoulli", "continuous_bernoulli", "gaussian"} <= set(pv.available_likelihoods())
    gauss = REGISTRY.entry("likelihood", "gaussian")
    assert gauss.trait("reconstruction") == "mse" and list(gauss.params) == ["scale"]
    assert REGISTRY.entry("likelihood", "bernoulli").trait("reconstruction") == "nll"
    assert make_likelihood("gaussian:scale=0.25", 3).spec == "gaussian:scale=0.25"


class StudentT(Likelihood):
    """A user's likelihood: Student-t with a fixed number of degrees of freedom and a learned scale."""

    name = "student_t"

    def __init__(self, input_dim: int, df: float = 4.0) -> None:
        super().__init__(input_dim)
        self.df = df
        self.log_scale = torch.nn.Parameter(torch.zeros(input_dim))

    @property
    def spec(self) -> str:
        return f"student_t:df={self.df:g}"

    def dist(self, out):
        return dist.StudentT(self.df, out, self.log_scale.exp()).to_event(1)

    def mean(self, out):
        return out


def test_a_users_likelihood_trains_evaluates_and_reloads_from_a_checkpoint(tmp_path):
    pv.register_likelihood(
        "student_t",
        StudentT,
        params=(Param("df", 4.0, float, "degrees of freedom"),),
        doc="Student-t, fixed df, learned scale",
        replace=True,
    )
    try:
        x = torch.randn(64, 3)
        vae = pv.VAE(3, 2, (8,), likelihood="student_t:df=3")
        assert vae.likelihood.df == 3.0 and vae.config["likelihood"] == "student_t:df=3"
        history = pv.fit(vae, x, "analytic", epochs=2, batch_size=32, seed=0)
        ll = pv.iw_log_likelihood(vae, x[:8], num_samples=50, seed=0)
        assert ll.shape == (8,) and torch.isfinite(ll).all()
        assert len(history.to_frame()) == 2
        pv.save_checkpoint(tmp_path / "ck", vae)
        back, _config = pv.load_checkpoint(tmp_path / "ck")
        assert isinstance(back.likelihood, StudentT) and back.likelihood.df == 3.0
        torch.testing.assert_close(back.likelihood.log_scale, vae.likelihood.log_scale)
    finally:
        REGISTRY.unregister("likelihood", "student_t")
    with pytest.raises(UserError, match="unknown likelihood 'student_t'"):
        make_likelihood("student_t", 3)


def test_every_kind_is_in_the_registry_with_the_traits_the_code_reads():
    assert set(pv.available_objectives()) >= {"trace", "analytic", "enum", "iwae", "renyi"}
    assert pv.parse_objective("trace").fast_paths == {"fast_elbo"}
    assert pv.parse_objective("trace:particles=2").fast_paths == set()
    assert pv.parse_objective("iwae:k=3,grad=dreg").fast_paths == {"graph"}
    assert REGISTRY.entry("objective", "iwae").trait("local_only")
    assert REGISTRY.entry("guide", "fullrank").trait("closed_form_kl")
    assert not REGISTRY.entry("guide", "iaf").trait("closed_form_kl")
    from ppl_vae.guides import GUIDES, encoder_outputs

    assert encoder_outputs("fullrank", 3) == 3 + 6 and encoder_outputs("iaf:context=4", 3) == 10
    assert GUIDES["iaf"] == {"n": 2, "hidden": None, "context": None}
    from ppl_vae.models.names import MODEL_NAMES

    assert MODEL_NAMES["hvae"] is pv.HierarchicalVAE
    assert REGISTRY.entry("dataset", "mnist").trait("idx")
    assert REGISTRY.names("prior") == ("standard_normal", "mog", "vamp")
    assert REGISTRY.entry("prior", "standard_normal").trait("closed_form_kl")
    assert not REGISTRY.entry("prior", "vamp").trait("closed_form_kl")
    assert REGISTRY.entry("prior", "vamp").trait("needs_encoder")


def test_the_docs_tables_are_the_registrys():
    """A registered entry the user guide does not list, or a table edited by hand, fails here: rewrite
    them with ``python -m ppl_vae.registry_docs --write docs/guide/PAGE.md`` (the tables moved there
    from the README)."""
    from pathlib import Path

    from ppl_vae.registry_docs import render, stale_kinds

    pages = {
        page: page.read_text(encoding="utf-8")
        for page in sorted((Path(__file__).parents[1] / "docs").rglob("*.md"))
        if "_build" not in page.parts
    }
    text = "".join(pages.values())
    assert {"objective", "guide", "likelihood", "prior", "model", "dataset"} <= set(
        re.findall(r"<!-- registry:(\w+) -->", text)
    )
    for page, page_text in pages.items():
        assert stale_kinds(page_text) == [] and render(page_text) == page_text, page
    REGISTRY.register("prior", "toy_prior", lambda latent_dim: None, doc="a toy", replace=True)
    try:
        assert stale_kinds(text) == ["prior"] and "`toy_prior`" in render(text)
    finally:
        REGISTRY.unregister("prior", "toy_prior")
