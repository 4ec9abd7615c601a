"""Sphinx configuration of the ppl_vae documentation (``make docs``: warnings are errors).

Everything builds offline: CI and the developers' machines reach no site but the package registries, so
intersphinx (which downloads each project's ``objects.inv`` at build time) is not used; links to torch,
Pyro, ArviZ, pandas and scikit-learn are plain external links (``extlinks``: ``:pyro:`...```).
The API pages are generated from ``ppl_vae.__all__`` (``_ext/apipages.py``), the notebooks are
rendered from the executed copies ``execute_notebooks.py`` writes into ``tutorials/generated/``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))

import ppl_vae  # noqa: E402

project = "ppl_vae"
author = "The ppl_vae authors"
copyright = "2026, The ppl_vae authors"
release = ppl_vae.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.extlinks",
    "sphinx.ext.viewcode",
    "sphinxarg.ext",
    "myst_nb",
    "apipages",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints", "README.md"]
templates_path: list[str] = []

# -- autodoc / napoleon: the docstrings are Google style ("Args:", "Returns:") with numpydoc-ish prose
autodoc_default_options = {"members": True, "show-inheritance": True, "member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_class_signature = "separated"
autodoc_inherit_docstrings = False
napoleon_google_docstring = True
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_preprocess_types = False

# -- notebooks: rendered with the outputs of one execution (execute_notebooks.py), never re-run here
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# -- links to the libraries we build on, without intersphinx (no network at build time)
extlinks = {
    "pyro": ("https://docs.pyro.ai/en/stable/%s", "%s"),
    "torch": ("https://docs.pytorch.org/docs/stable/%s", "%s"),
    "arviz": ("https://python.arviz.org/en/stable/api/generated/%s.html", "%s"),
    "pandas": ("https://pandas.pydata.org/docs/reference/api/%s.html", "%s"),
    "sklearn": ("https://scikit-learn.org/stable/modules/generated/%s.html", "%s"),
    "mlflow": ("https://mlflow.org/docs/latest/%s", "%s"),
}

# code without a language is shown as typed (the CLI's usage lines, plain ``` blocks), and `--flag` stays
# `--flag` (Sphinx's smart quotes would print an en dash)
highlight_language = "text"
smartquotes = False

html_theme = "furo"
html_title = f"ppl_vae {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
