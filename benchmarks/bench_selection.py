"""Choosing a model: latent size x prior, ranked by held-out log p(x) with paired standard errors.

    python benchmarks/bench_selection.py                  # digits and breast cancer, 15 models, 3 seeds
    python benchmarks/bench_selection.py --quick          # a one-minute smoke run (1 seed, 2 epochs, K=100)
    python benchmarks/bench_selection.py --seeds 0 1 --epochs 50 --threads 1

Two data sets: scikit-learn's ``digits`` (8x8 images, dynamic binarisation, Bernoulli likelihood) and its
``load_breast_cancer`` table (569 rows, the 30 measurements, through ``pv.load_dataset(DataFrame)``;
a family per column from the inferred schema, ``likelihood="table"``, standardised for the networks and
scored in the data's own units, so its log p(x) per row is in those units' nats). On each, every model of
latent size {2, 4, 8, 16, 32} x prior {N(0, I), ``mog:k=10``, ``vamp:k=50``} is trained with the
``analytic`` objective (sampled KL for the learned priors) for every seed on the same split and initial
weights (``pv.run_comparison(models=...)``), evaluated with the same K importance samples, and ranked
(``Comparison.ranking``): ``log_px`` (mean over seeds of the held-out mean IW log p(x), nats per row),
``diff`` to the best with its paired s.e. over rows and seeds and the seed-to-seed s.e., ``within_2se``
(not distinguishable from the best by the larger of the two), ``khat_share`` (rows with k-hat > 0.7).
The run time of each data set and the thread counts are printed.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import print_machine, thread_counts  # noqa: E402

import ppl_vae as pv  # noqa: E402

LATENTS = (2, 4, 8, 16, 32)
PRIORS = {"N(0,I)": None, "MoG": "mog:k=10", "Vamp": "vamp:k=50"}
SHOWN = ["rank", "model", "log_px", "log_px_se", "diff", "diff_se", "diff_se_seeds", "within_2se"]
SHOWN += ["khat_share", "unreliable"]


def models(latents: tuple[int, ...]) -> dict[str, str]:
    """``{name: model spec}`` for every latent size x prior."""
    out = {}
    for d in latents:
        for name, prior in PRIORS.items():
            spec = f"vae:latent={d}" if prior is None else f"vae:prior={prior},latent={d}"
            out[f"d={d} {name}"] = spec
    return out


def breast_cancer() -> pv.Dataset:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.drop(columns=["target"])
    return pv.load_dataset(frame, standardize=True, seed=0)


def run(name: str, data: str | pv.Dataset, args: argparse.Namespace) -> pd.DataFrame:
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", UserWarning
        )  # small-K and sampled-KL notes, said in the header
        result = pv.run_comparison(
            models=models(args.latents),
            objectives=["analytic"],
            dataset=data,
            seeds=args.seeds,
            epochs=args.epochs,
            num_samples=args.k,
            hidden_dims=(256,),
            lr=1e-3,
            batch_size=128,
            device="cpu",
            test_points=args.test_points,
        )
        ranking = result.ranking()
    seconds = time.perf_counter() - t0
    cells = len(args.latents) * len(PRIORS) * len(args.seeds)
    print(
        f"\n{name}: {cells} cells ({len(args.latents) * len(PRIORS)} models x {len(args.seeds)} seeds), "
        f"{args.epochs} epochs, K={args.k}, metric {ranking['metric'].iloc[0]}: {seconds:.1f} s "
        f"({thread_counts()})"
    )
    with pd.option_context("display.width", 200, "display.precision", 3):
        print(ranking[SHOWN].to_string(index=False))
    return ranking


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1 seed, 2 epochs, K=100, 200 test rows")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--k", type=int, default=1000, help="importance samples per test row")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args()
    args.latents, args.test_points = LATENTS, None
    if args.quick:
        args.seeds, args.epochs, args.k, args.test_points = [0], 2, 100, 200
    if args.threads:
        torch.set_num_threads(args.threads)
    print_machine("bench_selection: latent size x prior, ranked by held-out log p(x)")
    t0 = time.perf_counter()
    run("digits (binarised, Bernoulli)", "digits", args)
    run(
        "breast cancer (30 measurements, a family per column, the data's units)",
        breast_cancer(),
        args,
    )
    print(f"\ntotal {time.perf_counter() - t0:.1f} s; threads: {thread_counts()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
