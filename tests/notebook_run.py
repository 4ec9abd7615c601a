"""Run a notebook for the tests, or reuse the copy ``make docs`` executed from the same sources.

``docs/execute_notebooks.py`` runs every notebook into ``docs/tutorials/generated/`` and stamps the copy with a
hash of the notebook and of the whole package (and the seconds it took). When such a copy exists and its hash is
the current one, it *is* this notebook run top to bottom on this code (same kernel, ``OMP_NUM_THREADS=1``), so the
tests check its outputs instead of running it a second time: ``.ci/run`` builds the docs before the tests, and
each notebook runs once per CI. Otherwise (``make test`` alone, or a change since the docs were built) the
notebook is run here, in a fresh kernel, with the executed copy written to pytest's tmp folder.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import nbclient
import nbformat

ROOT = Path(__file__).resolve().parents[1]


def _docs_executor():
    spec = importlib.util.spec_from_file_location(
        "execute_notebooks", ROOT / "docs" / "execute_notebooks.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def executed(path: Path, out_dir: Path, timeout: int = 600) -> tuple[object, float, str]:
    """The executed notebook, the seconds its run took, and who ran it (``"docs"`` or ``"here"``)."""
    docs = _docs_executor()
    copy = docs.OUT / path.name
    if copy.is_file():
        nb = nbformat.read(copy, as_version=4)
        if nb.metadata.get(docs.KEY) == docs.source_hash(path) and docs.SECONDS in nb.metadata:
            return nb, float(nb.metadata[docs.SECONDS]), "docs"
    nb = nbformat.read(path, as_version=4)
    env = dict(
        os.environ, OMP_NUM_THREADS="1", MPLBACKEND="module://matplotlib_inline.backend_inline"
    )
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=timeout, resources={"metadata": {"path": str(out_dir)}}
    )
    t0 = time.perf_counter()
    client.execute(env=env)
    seconds = time.perf_counter() - t0
    nbformat.write(nb, out_dir / path.name)
    return nb, seconds, "here"
