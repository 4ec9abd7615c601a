"""The notebooks run top to bottom on a CPU (nbclient, the venv's ``python3`` kernel), and the
committed copies carry no outputs.

Each notebook runs in a fresh kernel with the notebooks folder as working directory. The
kernel gets ``OMP_NUM_THREADS=1``: the networks are tiny, and on a shared two-core machine two
spinning OpenMP threads make them many times slower (the numbers do not depend on it). The
executed copy is written to pytest's tmp folder, never over the committed file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
from notebook_run import executed  # noqa: E402

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


@pytest.mark.slow
@pytest.mark.parametrize("name", MINE)
def test_notebook_executes_without_error(name, tmp_path):
    nb, seconds, by = executed(NOTEBOOKS / name, tmp_path)
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
    print(f"{name}: {seconds:.1f} s (run {by})")


@pytest.mark.parametrize("name", MINE)
def test_committed_notebook_has_no_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{name}: strip outputs before committing"
            )
