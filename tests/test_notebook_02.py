"""notebooks/02_compare_inference.ipynb runs top to bottom (nbclient, the ``python3`` kernel) within
its time budget, prints its computed conclusions, and is committed without outputs.

The kernel gets ``OMP_NUM_THREADS=1`` (tiny networks on a shared CPU; the numbers do not depend on
it) and runs in pytest's tmp folder, so nothing is written next to the committed notebook.
"""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
from notebook_run import executed  # noqa: E402

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "02_compare_inference.ipynb"
BUDGET_S = 300  # the notebook takes well under a minute on an idle 2-core CPU


@pytest.mark.slow
def test_notebook_02_executes(tmp_path):
    nb, seconds, _ = executed(NOTEBOOK, tmp_path, timeout=BUDGET_S)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    images = sum("image/png" in o.get("data", {}) for o in outputs)
    assert images >= 4, f"expected the comparison, KL, gap and NUTS figures inline; got {images}"
    conclusions = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    for phrase in ("nats per point", "active units", "amortisation", "R-hat"):
        assert phrase in conclusions, phrase
    assert seconds < BUDGET_S, f"notebook took {seconds:.0f} s"


def test_committed_notebook_02_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                "strip outputs before committing"
            )
