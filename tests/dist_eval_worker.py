"""Run by ``torchrun`` in tests/test_distributed_eval.py: the estimators on each rank, then ``ppl-vae evaluate``.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/dist_eval_worker.py RUN OUT -- EVALUATE ARGS...

Every rank computes IW, ELBO, log weights, AIS and ``pv.evaluate`` on the first 60 test points of run folder RUN
(each estimator shards the points over the ranks and gathers them) and saves what it got to
``OUT/rank{RANK}.pt``; then the CLI runs unchanged with the arguments after ``--``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

import ppl_vae as pv
from ppl_vae.cli import main
from ppl_vae.estimators.importance import points_shard
from ppl_vae.runs import load_run

POINTS, K, BATCH = 60, 50, 8


def estimates(run_dir: str) -> dict:
    """The per-point values the test compares with one process (also called by the test itself)."""
    run = load_run(run_dir, device="cpu")
    x = run.data.test[:POINTS]
    vae = run.model
    ais = pv.ais_log_likelihood(  # 6 chunks of 10 points; eager: capturing a graph per chunk costs more here
        vae,
        x,
        num_steps=4,
        num_chains=3,
        leapfrog_steps=2,
        batch_size=10,
        seed=2,
        fast="eager",
        return_diagnostics=True,
    )
    report = pv.evaluate(vae, x, num_samples=K, seed=3, batch_size=BATCH)
    shard = points_shard((x,), K, BATCH, None)
    return {
        "span": torch.tensor([shard.lo, shard.hi, shard.world]),
        "iw": pv.iw_log_likelihood(vae, x, K, batch_size=BATCH, seed=1),
        "iw_default_chunks": pv.iw_log_likelihood(vae, x, 500, seed=1),
        "elbo": pv.elbo(vae, x, 4, batch_size=BATCH, seed=1),
        "log_weights": pv.log_weights(vae, x, 6, batch_size=BATCH, seed=1),
        "ais": ais.log_likelihood,
        "ais_acceptance": ais.acceptance,
        "ais_log_weights": ais.log_weights,
        "evaluate": torch.tensor(report.points.to_numpy()),
        "evaluate_log_weights": torch.from_numpy(report.log_weights),
    }


def failure(run_dir: str) -> str:
    """The error this rank raises when rank 1 fails on its first chunk (rank 0 must not wait for it)."""
    import ppl_vae.estimators.importance as importance
    from ppl_vae.errors import UserError

    run_chunk = importance._run_chunk

    def failing(run, batch, k, program, info, span, vectorize):
        if span[0] >= POINTS // 2:
            raise UserError(f"made to fail at rows {span[0]}-{span[1] - 1}")
        return run_chunk(run, batch, k, program, info, span, vectorize)

    importance._run_chunk = failing
    run = load_run(run_dir, device="cpu")
    try:
        pv.iw_log_likelihood(run.model, run.data.test[:POINTS], K, batch_size=BATCH)
    except UserError as err:
        return str(err)
    finally:
        importance._run_chunk = run_chunk
    return "no error"


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")
    run_dir, out = sys.argv[1], Path(sys.argv[2])
    values = estimates(run_dir)
    values["failure"] = failure(run_dir)
    torch.save(values, out / f"rank{os.environ['RANK']}.pt")
    sys.exit(main(sys.argv[sys.argv.index("--") + 1 :]))
