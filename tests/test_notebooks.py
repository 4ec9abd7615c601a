"""The notebooks run top to bottom on a CPU (nbclient, the venv's ``python3`` kernel), and the
committed copies carry no outputs.

Each notebook runs in a fresh kernel with the notebooks folder as working directory. The
kernel gets ``OMP_NUM_THREADS=1``: the networks are tiny, and on a shared two-core machine two
spinning OpenMP threads make them many times slower (the numbers do not depend on it). The
executed copy is written to pytest's tmp folder, never over the committed file.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
MINE = [
    "01_quickstart.ipynb",
    "03_diagnostics.ipynb",
    "04_autoencoders.ipynb",
    "05_your_own_program.ipynb",
    "06_a_table.ipynb",
    "07_missing_values.ipynb",
    "08_choosing_a_model.ipynb",
]


def execute(path: Path, out_dir: Path, timeout: int = 600) -> tuple[object, float]:
    """Run a notebook in a fresh kernel; return the executed notebook and the seconds it took."""
    nb = nbformat.read(path, as_version=4)
    env = dict(
        os.environ, OMP_NUM_THREADS="1", MPLBACKEND="module://matplotlib_inline.backend_inline"
    )
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=timeout,
        resources={"metadata": {"path": str(path.parent)}},
    )
    t0 = time.perf_counter()
    client.execute(env=env)
    seconds = time.perf_counter() - t0
    nbformat.write(nb, out_dir / path.name)
    return nb, seconds


@pytest.mark.slow
@pytest.mark.parametrize("name", MINE)
def test_notebook_executes_without_error(name, tmp_path):
    nb, seconds = execute(NOTEBOOKS / name, tmp_path)
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.output_type == "error"
    ]
    assert not errors, errors
    images = sum(
        1
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    )
    assert images >= 3, f"{name}: expected figures inline, got {images}"
    print(f"{name}: {seconds:.1f} s")


@pytest.mark.parametrize("name", MINE)
def test_committed_notebook_has_no_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{name}: strip outputs before committing"
            )
