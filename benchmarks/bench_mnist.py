"""MNIST test log-likelihood of a VAE and IWAEs (Burda et al., 2015) within a time budget.

    python benchmarks/bench_mnist.py --time-budget 600            # per model, seconds of training
    python benchmarks/bench_mnist.py --epochs 3280 --time-budget 0  # the paper's schedule length
    python benchmarks/bench_mnist.py --models vae --time-budget 60 --test-points 500 --final-k 1000

Setup of Burda, Grosse & Salakhutdinov (2015), one stochastic layer: dynamically
binarised MNIST (60 000 train / 10 000 test), MLP 784-200-200-50 with tanh in the
encoder (mirrored decoder), Bernoulli likelihood on logits, Adam. Models:

* ``vae``: the analytic-KL ELBO (``analytic``), trained on the fast path;
* ``iwae5``, ``iwae50``: the importance-weighted bound with k = 5 and k = 50 (``iwae:k=K``).

Each model trains for ``--epochs`` or until ``--time-budget`` seconds of training
(whichever comes first), in passes of ``--chunk-rows`` rows so that a budget can stop
mid-epoch (an IWAE-50 epoch takes tens of minutes on two CPU cores). Every ``--eval-every`` seconds of training, test NLL is
estimated with ``--curve-k`` samples on a fixed subset of ``--curve-points`` test
points (the curve of NLL against training time); at the end, test NLL with
``--final-k`` (5000, as in the paper) on ``--test-points`` test points (all 10 000
with ``--test-points 10000``), in nats per point with its standard error over points.
Beside it: the paper's figures after 3280 epochs (VAE 86.76, IWAE-5 85.54,
IWAE-50 84.78), which a budget of minutes on a CPU does not reach; the table says
how many epochs the budget bought.

The data are read from ``--data-dir`` (default ``../shared/data/mnist`` beside the
repository, else ``$PPL_VAE_DATA``). Results go to ``--out`` as JSON as well.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import print_machine  # noqa: E402

import ppl_vae as pv  # noqa: E402
from ppl_vae.estimators import iw_log_likelihood  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PAPER = {"vae": 86.76, "iwae5": 85.54, "iwae50": 84.78}
OBJECTIVES = {"vae": "analytic", "iwae5": "iwae:k=5", "iwae50": "iwae:k=50"}


def default_data_dir() -> str | None:
    shared = REPO.parent / "shared" / "data" / "mnist"
    if shared.is_dir():
        return str(shared)
    return os.environ.get("PPL_VAE_DATA")


def test_nll(vae: pv.VAE, x: torch.Tensor, k: int, seed: int = 0) -> tuple[float, float]:
    """Mean and standard error over points of ``-log p(x)`` estimated with ``k`` importance samples."""
    vae.eval()
    with torch.no_grad():
        ll = iw_log_likelihood(vae.model, vae.guide, x, num_samples=k, seed=seed)
    nll = -ll.double()
    return float(nll.mean()), float(nll.std() / math.sqrt(len(nll)))


def chunked(data: pv.Dataset, rows: int, test_rows: int) -> list[pv.Dataset]:
    """The training set cut into passes of ``rows`` rows (so a time budget can stop mid-epoch).

    Each piece keeps dynamic binarisation (its own grey levels) and a small test split for the
    per-call test ELBO. No pieces (the whole set per call) when ``rows`` covers the data.
    """
    n = len(data.train)
    if rows <= 0 or rows >= n:
        return []
    out = []
    for start in range(0, n - rows + 1, rows):
        sl = slice(start, start + rows)
        out.append(
            dataclasses.replace(
                data,
                train=data.train[sl],
                train_probs=data.train_probs[sl],
                train_labels=None,
                test=data.test[:test_rows],
                test_labels=None,
            )
        )
    return out


def train_one(name: str, data: pv.Dataset, args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    vae = pv.VAE(784, 50, (200, 200), likelihood="bernoulli", activation="tanh")
    curve_x = data.test[: args.curve_points]
    final_x = data.test[: args.test_points]
    curve = []
    trained = 0.0
    next_eval = 0.0
    epochs_done = 0
    t_wall = time.perf_counter()
    print(
        f"[{name}] objective {OBJECTIVES[name]}, batch {args.batch_size}, lr {args.lr}, fast={args.fast}",
        flush=True,
    )
    chunks = chunked(data, args.chunk_rows, args.curve_points)
    rows_seen = 0
    while epochs_done < args.epochs and (args.time_budget <= 0 or trained < args.time_budget):
        chunk = chunks[(rows_seen // args.chunk_rows) % len(chunks)] if chunks else data
        record = pv.fit(
            vae,
            chunk,
            OBJECTIVES[name],
            epochs=1,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            device=args.device,
            progress=False,
            fast=args.fast,
        )[-1]
        trained += record["seconds"]
        rows_seen += len(chunk.train)
        epochs_done = rows_seen / len(data.train)
        if trained >= next_eval or epochs_done >= args.epochs:
            t0 = time.perf_counter()
            nll, se = test_nll(vae, curve_x, args.curve_k, seed=1)
            curve.append(
                {
                    "train_seconds": round(trained, 1),
                    "epoch": epochs_done,
                    "test_elbo": record["test_elbo"],
                    f"nll_k{args.curve_k}": nll,
                    "se": se,
                }
            )
            print(
                f"[{name}] {trained:7.1f} s  epoch {epochs_done:6.2f}  test ELBO {record['test_elbo']:8.2f}  "
                f"NLL(k={args.curve_k}, {len(curve_x)} pts) {nll:7.2f} +- {se:.2f}  "
                f"(eval {time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
            next_eval = trained + args.eval_every
    t0 = time.perf_counter()
    nll, se = test_nll(vae, final_x, args.final_k, seed=2)
    eval_seconds = time.perf_counter() - t0
    print(
        f"[{name}] final: NLL(k={args.final_k}, {len(final_x)} pts) {nll:.2f} +- {se:.2f} "
        f"after {epochs_done:.2f} epochs, {trained:.0f} s of training (eval {eval_seconds:.0f} s)",
        flush=True,
    )
    return {
        "model": name,
        "objective": OBJECTIVES[name],
        "epochs": epochs_done,
        "train_seconds": trained,
        "test_nll": nll,
        "test_nll_se": se,
        "final_k": args.final_k,
        "test_points": len(final_x),
        "paper_nll": PAPER[name],
        "eval_seconds": eval_seconds,
        "wall_seconds": time.perf_counter() - t_wall,
        "curve": curve,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None, help="folder with the MNIST IDX .gz files")
    p.add_argument("--models", nargs="+", default=list(OBJECTIVES), choices=list(OBJECTIVES))
    p.add_argument(
        "--epochs", type=int, default=3280, help="epochs per model at most (paper: 3280)"
    )
    p.add_argument(
        "--time-budget", type=float, default=600.0, help="seconds of training per model (0: none)"
    )
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument(
        "--chunk-rows",
        type=int,
        default=10_000,
        help="rows per fit call (a budget stops between calls; 0: whole epochs)",
    )
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--eval-every", type=float, default=60.0, help="seconds of training between curve points"
    )
    p.add_argument("--curve-k", type=int, default=100)
    p.add_argument("--curve-points", type=int, default=500)
    p.add_argument("--final-k", type=int, default=5000)
    p.add_argument("--test-points", type=int, default=1000)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--fast",
        default="compile",
        choices=["auto", "graph", "compile", "eager", "off"],
        help="fit's speed path (default compile: one compile per model, then fused kernels; "
        "the fit calls here are passes of --chunk-rows rows, too short for auto to capture)",
    )
    p.add_argument("--out", default=str(REPO / "runs" / "bench_mnist.json"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = print_machine("bench_mnist: test log p(x) on dynamically binarised MNIST")
    data = pv.load_dataset(
        "mnist", data_dir=args.data_dir or default_data_dir(), binarize="dynamic", seed=args.seed
    )
    print(
        f"MNIST: {len(data.train)} train, {len(data.test)} test; MLP 784-200-200-50 tanh; "
        f"budget {args.time_budget:g} s of training per model, at most {args.epochs} epochs\n",
        flush=True,
    )
    results = [train_one(name, data, args) for name in args.models]
    print(
        "\ntest NLL, nats per point (lower is better); paper: Burda et al. 2015, Table 1, 3280 epochs"
    )
    print(
        f"{'model':<8} {'objective':<10} {'epochs':>7} {'train s':>8} {'NLL':>8} {'+- se':>6} "
        f"{'k':>5} {'points':>6} {'paper':>6} {'gap':>6}"
    )
    for r in results:
        print(
            f"{r['model']:<8} {r['objective']:<10} {r['epochs']:>7.2f} {r['train_seconds']:>8.0f} {r['test_nll']:>8.2f} "
            f"{r['test_nll_se']:>6.2f} {r['final_k']:>5} {r['test_points']:>6} {r['paper_nll']:>6.2f} "
            f"{r['test_nll'] - r['paper_nll']:>6.2f}"
        )
    for r in results:
        print(
            f"  {r['model']}: {r['epochs']:.2f} of the paper's 3280 epochs ({100 * r['epochs'] / 3280:.3f}%)"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": info, "args": vars(args), "results": results}, indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
