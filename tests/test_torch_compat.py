"""The compat seam (ppl_vae/_torch_compat.py): each non-public torch/Pyro behaviour ppl_vae relies on, pinned;
the fallbacks; and no private torch/Pyro name anywhere else in the package."""

from __future__ import annotations

import re
from pathlib import Path

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch

from ppl_vae import _torch_compat as compat
from ppl_vae.objectives.jit import _outer_scales

PACKAGE = Path(compat.__file__).parent
#: A private torch/Pyro name: torch._x (not a dunder such as torch.__version__), Pyro's handler stack,
#: a distribution's ._param, a tensor's ._version.
PRIVATE = re.compile(r"torch\._(?!_)|_PYRO_STACK|\._param\b|\._version\b|\btorch\._inductor")


def test_no_module_but_the_compat_seam_names_a_private_torch_or_pyro_api():
    hits = [
        f"{path.relative_to(PACKAGE.parent)}:{n}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "_torch_compat.py"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if PRIVATE.search(line) or "_allow_non_fake_inputs" in line
    ]
    assert hits == []


def test_capture_records_aten_ops_through_pyro_with_real_constants_and_the_same_draws():
    """What capture relies on: Pyro's messengers run at trace time and leave only tensor ops; a real
    tensor read inside (not an input) is allowed; the graph draws from torch's generator like eager.
    (A torch without the keyword raises CaptureUnavailable, which every caller reports and runs eagerly.)"""
    constant = torch.tensor([0.5, -1.0])  # a real tensor the function reads, not an input

    def f(x: torch.Tensor) -> torch.Tensor:
        with poutine.trace() as tr, pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x + constant, 1.0).to_event(1))
        return tr.trace.nodes["z"]["fn"].log_prob(z)

    x = torch.randn(3, 2)
    with pyro.validation_enabled(
        False
    ):  # validation reads values: data-dependent (callers turn it off)
        graph = compat.capture(f, x)
    assert isinstance(graph, torch.fx.GraphModule)
    assert not any("pyro" in str(node.target) for node in graph.graph.nodes)
    torch.manual_seed(1)
    eager = f(x)
    torch.manual_seed(1)
    torch.testing.assert_close(graph(x), eager)


def test_compile_graph_draws_the_eager_random_numbers():
    def f(x: torch.Tensor) -> torch.Tensor:
        return (x + torch.randn_like(x)).exp().sum(-1)

    x = torch.randn(4, 3)
    run = compat.compile_graph(compat.capture(f, x))
    torch.manual_seed(5)
    eager = f(x)
    torch.manual_seed(5)
    torch.testing.assert_close(run(x), eager, rtol=1e-5, atol=1e-6)


def test_the_pyro_handler_stack_lists_active_messengers_outermost_first():
    assert compat.pyro_handler_stack() == ()
    with poutine.scale(scale=2.0) as outer, poutine.mask(mask=True) as inner:
        stack = compat.pyro_handler_stack()
        assert stack is not None and list(stack)[-2:] == [outer, inner]
    with poutine.scale(scale=3.0):
        assert _outer_scales() == (3.0, 3.0)  # what the JIT objectives read from it


def test_without_the_handler_stack_the_jit_objectives_treat_scales_as_unknown(monkeypatch):
    monkeypatch.setattr("ppl_vae.objectives.jit.pyro_handler_stack", lambda: None)
    with poutine.scale(scale=3.0):
        assert _outer_scales() is None


def test_tensor_edits_change_with_every_in_place_edit_and_never_match_without_a_counter():
    t = torch.zeros(3)
    before = compat.tensor_edits(t)
    assert compat.tensor_edits(t) == before
    t.add_(1)
    assert compat.tensor_edits(t) != before

    class NoCounter:
        pass

    assert compat.tensor_edits(NoCounter()) != compat.tensor_edits(NoCounter())  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["torch", "pyro-ppl"])
def test_the_installed_torch_and_pyro_are_in_the_declared_tested_range(name):
    """pyproject.toml declares the ranges this seam was tested with (an upper bound included); the
    installed versions must be in them."""
    from importlib.metadata import version

    from packaging.requirements import Requirement

    text = (PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8")
    (line,) = re.findall(rf'^\s*"({re.escape(name)}[<>=!~][^"]*)",', text, flags=re.M)
    req = Requirement(line)
    assert any(s.operator == "<" for s in req.specifier), f"{req}: no upper bound"
    assert req.specifier.contains(version(name).split("+")[0]), (str(req), version(name))


def test_compile_step_compiles_a_captured_graph_drawing_the_eager_random_numbers():
    def f(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y.add_(1.0)  # the compiled whole step updates its inputs in place
        return (x + torch.randn_like(x)).exp().sum(-1)

    x, y = torch.randn(4, 3), torch.zeros(2)
    run = compat.compile_step(compat.capture(f, x, y), [x, y])
    torch.manual_seed(5)
    eager = f(x, torch.zeros(2))
    torch.manual_seed(5)
    torch.testing.assert_close(run(x, y), eager, rtol=1e-5, atol=1e-6)
    assert torch.equal(y, torch.ones(2))


def test_the_inductor_cache_is_per_user_and_session_unless_the_user_set_one(monkeypatch, tmp_path):
    import os

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    default = compat.inductor_cache_dir()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == default
    assert Path(default).name.endswith(f"_{os.getsid(0)}")
    assert "ppl_vae_inductor_" in default
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    assert compat.inductor_cache_dir() == str(tmp_path)
