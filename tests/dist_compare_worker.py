"""Run by ``torchrun`` in tests/test_distributed_compare.py: ``run_comparison`` on each rank, then ``ppl-vae compare``.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/dist_compare_worker.py OUT -- COMPARE ARGS...

Every rank runs the small comparison of :data:`SETTINGS` (its cells spread over the ranks, gathered on every
rank), then one where rank 1 fails in its cell, and saves what it got to ``OUT/rank{RANK}.pkl``; then the CLI
runs unchanged with the arguments after ``--``.
"""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import ppl_vae as pv
from ppl_vae.cli import main

#: 2 methods (two guide families of one model: shared weights) x 2 seeds on 120 digits, 1 epoch, K = 20
SETTINGS = {
    "methods": ["analytic", "fullrank/trace"],
    "dataset": "digits",
    "seeds": [0, 1],
    "epochs": 1,
    "num_samples": 20,
    "n_samples": 120,
    "latent_dim": 2,
    "hidden_dims": (16,),
    "device": "cpu",
}


def comparison() -> dict:
    """What the test compares with one process (also called by the test itself)."""
    result = pv.run_comparison(**SETTINGS)
    return {
        "table": result.table,
        "points": result.points,
        "curves": result.curves,
        "settings": result.settings,
        "kl": result.kl_per_dim,
        "paired": result.paired(),
    }


def failure() -> str:
    """The error this rank raises when rank 1 fails in its cell (rank 0 must not wait for it)."""
    import ppl_vae.analysis.compare as compare
    from ppl_vae.errors import UserError

    fit_and_score = compare._fit_and_score

    def failing(method, model, seed, *args):
        if os.environ["RANK"] == "1":
            raise UserError(f"made to fail in cell {method.label} (seed {seed})")
        return fit_and_score(method, model, seed, *args)

    compare._fit_and_score = failing
    try:
        pv.run_comparison(**{**SETTINGS, "seeds": [0]})
    except UserError as err:
        return str(err)
    finally:
        compare._fit_and_score = fit_and_score
    return "no error"


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")
    out = Path(sys.argv[1])
    values = comparison()
    values["failure"] = failure()
    (out / f"rank{os.environ['RANK']}.pkl").write_bytes(pickle.dumps(values))
    sys.exit(main(sys.argv[sys.argv.index("--") + 1 :]))
