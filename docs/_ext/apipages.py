"""Generate the API reference from ``ppl_vae.__all__``: one page per public name, grouped by module.

A name added to ``__all__`` gets its page on the next build with no edit here; a name whose module has no
section of its own is listed under "Other" (add its prefix to ``SECTIONS`` to give it one).
``tests/test_docs.py`` checks that every public name has a page and that no page is left over.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Literal

import ppl_vae

Kind = Literal["class", "exception", "function", "data"]

#: (module prefix, section title), first match wins
SECTIONS: tuple[tuple[str, str], ...] = (
    ("ppl_vae.data", "Data"),
    ("ppl_vae.models", "Models"),
    ("ppl_vae.autoencoders", "Models"),
    ("ppl_vae.programs", "Programs"),
    ("ppl_vae.params", "Programs"),
    ("ppl_vae.likelihoods", "Likelihoods, guides and the registry"),
    ("ppl_vae.guides", "Likelihoods, guides and the registry"),
    ("ppl_vae.registry", "Likelihoods, guides and the registry"),
    ("ppl_vae.objectives", "Objectives"),
    ("ppl_vae.train", "Training"),
    ("ppl_vae.estimators", "Estimators of log p(x)"),
    ("ppl_vae.diagnostics", "Diagnostics"),
    ("ppl_vae.analysis", "Comparing methods and models"),
    ("ppl_vae.runs", "Checkpoints and runs"),
    ("ppl_vae.store", "Checkpoints and runs"),
    ("ppl_vae.errors", "Errors"),
)
OTHER = "Other"
FOLDER = "api"  # docs/api/ is generated (git-ignored): index.rst and one page per name
INTRO = """API reference
=============

Every name in ``ppl_vae.__all__``, one page each (``import ppl_vae as pv``; ``pv.fit``, ``pv.VAE``, ...).
The pages are generated from the docstrings at build time, so a name added to ``__all__`` appears here
with no edit; the examples on them run as doctests in ``make test``.

"""


def kind_of(obj: object) -> Kind:
    if inspect.isclass(obj):
        return "exception" if issubclass(obj, BaseException) else "class"
    return "function" if callable(obj) else "data"


def section_of(obj: object) -> str:
    module = getattr(obj, "__module__", "") or ""
    for prefix, title in SECTIONS:
        if module == prefix or module.startswith(prefix + "."):
            return title
    return OTHER


def summary(obj: object) -> str:
    """The first sentence-line of the docstring (empty when there is none)."""
    doc = inspect.getdoc(obj) or ""
    return doc.strip().split("\n\n")[0].replace("\n", " ").strip()


def page(name: str, obj: object) -> str:
    """The reStructuredText of one name's page."""
    title = f"ppl_vae.{name}"
    directive = {
        "class": f".. autoclass:: {name}\n   :members:\n   :show-inheritance:\n",
        "exception": f".. autoexception:: {name}\n   :show-inheritance:\n",
        "function": f".. autofunction:: {name}\n",
        "data": f".. autodata:: {name}\n",
    }[kind_of(obj)]
    return f"{title}\n{'=' * len(title)}\n\n.. currentmodule:: ppl_vae\n\n{directive}"


def pages(names: list[str] | None = None) -> dict[str, str]:
    """``{file name: text}`` of every API page and of the index, for the names in ``__all__``."""
    names = list(ppl_vae.__all__ if names is None else names)
    out: dict[str, str] = {}
    groups: dict[str, list[str]] = {}
    for name in names:
        obj = getattr(ppl_vae, name)
        out[f"ppl_vae.{name}.rst"] = page(name, obj)
        groups.setdefault(section_of(obj), []).append(name)
    order = [t for _, t in SECTIONS] + [OTHER]
    lines = [INTRO]
    for title in dict.fromkeys(order):
        members = sorted(groups.get(title, []), key=str.lower)
        if not members:
            continue
        lines += [title, "-" * len(title), "", ".. list-table::", "   :widths: 35 65", ""]
        for name in members:
            role = {"class": "class", "exception": "exc", "function": "func", "data": "data"}
            ref = f":{role[kind_of(getattr(ppl_vae, name))]}:`~ppl_vae.{name}`"
            lines += [f"   * - {ref}", f"     - {summary(getattr(ppl_vae, name)) or ' '}"]
        lines += ["", ".. toctree::", "   :hidden:", ""]
        lines += [f"   ppl_vae.{name}" for name in members] + [""]
    out["index.rst"] = "\n".join(lines)
    return out


def write_pages(folder: Path) -> list[str]:
    """Write the pages into ``folder`` (only the files whose text changed); return the file names."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = pages()
    for old in folder.glob("*.rst"):
        if old.name not in texts:
            old.unlink()  # a name that left __all__ (docs/api/ is ours: generated, git-ignored)
    for fname, text in texts.items():
        path = folder / fname
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
    return sorted(texts)


def _generate(app) -> None:
    write_pages(Path(app.srcdir) / FOLDER)


def setup(app):
    app.connect("builder-inited", _generate)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
