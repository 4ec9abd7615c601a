"""The three changes a newcomer makes (docs/guide/extending.md): a likelihood, a gradient estimator and a guide
family, each one module and one test, taken from the page itself, written to a temporary folder and run.

Each module, once imported, is in ``REGISTRY.help_text``, ``available_*()``, the docs table generator
(:mod:`ppl_vae.registry_docs`) and ``ppl-vae train --help`` (named in ``PPL_VAE_PLUGINS``), with no edit
anywhere else; a plugin that does not import is one line, exit status 2.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import one_line_error

import ppl_vae as pv
from ppl_vae import registry_docs
from ppl_vae.cli import main
from ppl_vae.guides import GUIDES
from ppl_vae.plugins import ENV, PluginError, load_plugins
from ppl_vae.registry import REGISTRY

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGE = DOCS / "guide" / "extending.md"
BLOCK = re.compile(r"```python\n# file: (\S+)\n(.*?)```", re.S)
#: module -> (kind, entry name, the --help flag that lists it, the available_*() of the kind)
EXAMPLES = {
    "laplace_likelihood": ("likelihood", "laplace", "--likelihood", pv.available_likelihoods),
    "score_function_elbo": ("objective", "score_function", "--objective", pv.available_objectives),
    "lowrank_guide": ("guide", "lowrank", "--guide", lambda: dict(GUIDES)),
}


def _forget_examples() -> None:
    for kind, name, *_ in EXAMPLES.values():
        REGISTRY.unregister(kind, name)
    for module in list(sys.modules):
        if module.removeprefix("test_") in EXAMPLES:
            del sys.modules[module]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """The page's files written to ``tmp_path`` (on the path); the entries they register removed after."""
    for name, text in BLOCK.findall(PAGE.read_text(encoding="utf-8")):
        (tmp_path / name).write_text(text, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    _forget_examples()
    yield tmp_path
    _forget_examples()


def _table_page(kind: str) -> Path:
    (page,) = [
        p for p in (DOCS / "guide").glob("*.md") if f"<!-- registry:{kind} -->" in p.read_text()
    ]
    return page


def test_each_change_is_one_module_and_one_test(folder):
    files = sorted(p.name for p in folder.iterdir())
    assert files == sorted([f"{m}.py" for m in EXAMPLES] + [f"test_{m}.py" for m in EXAMPLES])


@pytest.mark.parametrize("module", list(EXAMPLES))
def test_the_module_registers_its_entry_everywhere_and_passes_its_own_test(folder, module):
    kind, name, _, available = EXAMPLES[module]
    page = _table_page(kind).read_text(encoding="utf-8")
    assert name not in REGISTRY.names(kind) and name not in available()
    assert registry_docs.stale_kinds(page) == []
    importlib.import_module(module)
    assert re.search(rf"(^|, ){name}( \(|,|$)", REGISTRY.help_text(kind)), REGISTRY.help_text(kind)
    assert name in available()
    assert f"| `{name}` |" in REGISTRY.markdown(kind)
    # the generator now writes the entry into the guide's table of its kind (and the check sees the
    # committed page as stale): nothing but the module was needed
    assert f"| `{name}` |" in registry_docs.render(page)
    assert registry_docs.stale_kinds(page) == [kind]
    tests = importlib.import_module(f"test_{module}")
    ran = [getattr(tests, t) for t in dir(tests) if t.startswith("test_")]
    assert ran
    for test in ran:
        test()


def _console_script() -> list[str]:
    """``ppl-vae`` as installed next to this Python (``python -m ppl_vae.cli`` where it is not)."""
    script = Path(sys.executable).with_name("ppl-vae")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "ppl_vae.cli"]


def test_ppl_vae_train_help_lists_the_plugins_named_in_the_environment(folder):
    env = {**os.environ, ENV: ",".join(EXAMPLES), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [*_console_script(), "train", "--help"],
        cwd=folder,  # the current folder is looked in first, as --program does
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for kind, name, flag, _ in EXAMPLES.values():
        # the flag's own help (an option line starts with two spaces), rejoined where argparse wrapped it
        section = " ".join(out.split(f"\n  {flag} ", 1)[1].split("\n  -", 1)[0].split())
        assert re.search(rf"\b{name}\b", section), (flag, section[:400])
        assert name not in REGISTRY.help_text(kind)  # this process did not import them


def test_a_plugin_that_does_not_import_is_one_line(folder, monkeypatch, capsys):
    monkeypatch.setenv(ENV, "laplace_likelihood, no_such_module")
    assert main(["train", "--help"]) == 2
    one_line_error(capsys, ENV, "'no_such_module'", "not on the Python path")
    (folder / "broken_plugin.py").write_text("raise RuntimeError('boom')\n", encoding="utf-8")
    with pytest.raises(PluginError, match=r"importing 'broken_plugin' failed: RuntimeError: boom"):
        load_plugins("broken_plugin")


def test_an_installed_entry_point_is_a_plugin_too(folder):
    """A package's ``[project.entry-points."ppl_vae.plugins"]``: a module, or ``module:function`` (called)."""
    info = folder / "my_entries-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-entries\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[ppl_vae.plugins]\nlik = laplace_likelihood\nguides = setup_guides:setup\n"
    )
    (folder / "setup_guides.py").write_text(
        "def setup():\n    import lowrank_guide  # noqa: F401\n", encoding="utf-8"
    )
    loaded = load_plugins("")
    assert {"laplace_likelihood", "setup_guides"} <= set(loaded)
    assert "laplace" in REGISTRY.names("likelihood") and "lowrank" in REGISTRY.names("guide")
    sys.modules.pop("setup_guides", None)
