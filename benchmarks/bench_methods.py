"""Guides x objectives x gradient estimators, and two stochastic layers, on dynamically binarised MNIST.

    nice -n 10 python benchmarks/bench_methods.py --time-budget 300            # seconds of training per method
    python benchmarks/bench_methods.py --time-budget 20 --test-points 100 --final-k 500 --methods \\
        analytic iaf:n=2/iwae:k=5,grad=dreg                                  # a quick look

The grid {meanfield, fullrank, iaf:n=2} x {analytic, iwae:k=5, iwae:k=5,grad=dreg} on a one-stochastic-layer
VAE (Burda et al., 2015: MLP 784-200-200-50, tanh, Bernoulli on logits), and the two-stochastic-layer VAE
(784-200-200-100-100-100-50) with ``analytic`` and ``iwae:k=5``, all through :func:`ppl_vae.run_comparison`:
the same split, the same initial weights within a family (and the decoder shared across guide families),
the same training budget in seconds (``fit(..., time_budget=...)``, batch 128, Adam 1e-3; no per-epoch test
ELBO, so the budget is all training), and the same
evaluation: test NLL with K=5000 importance samples on the first 1000 test points, in nats per point, with
paired standard errors against the reference (mean-field, analytic). Seconds per epoch are the training
loop's (without the per-epoch test ELBO); the cost column divides by the mean-field VAE's with the same
objective.

Beside each row: Burda et al.'s figure where one exists (VAE 86.76 and IWAE-5 85.54 for one stochastic
layer, 85.33 and 83.89 for two, after 3280 passes over the data); a budget of minutes on a shared CPU buys
a few dozen passes, so the columns say how many epochs each method got.

``--cost-only`` measures instead what each method costs per epoch, robustly on a shared machine: every
method trains ``--cost-steps`` steps of batch 128 in each of ``--cost-rounds`` rounds, the methods
interleaved round by round (so a busy neighbour slows all alike), on the path ``fit`` takes in a long run
(captured graphs where the method has one); the first round warms up and is dropped; the table gives the
median seconds per 469-step epoch and the ratio to the mean-field VAE with the same objective.

The data are read from ``--data-dir`` (default ``../shared/data/mnist`` beside the repository). Results go to
``--out`` (``comparison.csv``, ``paired.csv``, ``comparison.nc``, ``comparison.png``, ``table.md``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import print_machine  # noqa: E402

import ppl_vae as pv  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GRID = [
    f"{guide}/{objective}"
    for guide in ("meanfield", "fullrank", "iaf:n=2")
    for objective in ("analytic", "iwae:k=5", "iwae:k=5,grad=dreg")
]
HVAE = ["hvae/analytic", "hvae/iwae:k=5"]
#: Burda, Grosse & Salakhutdinov (2015), Table 1, test NLL (K=5000) after 3280 passes.
PAPER = {
    "vae/meanfield/analytic": 86.76,
    "vae/meanfield/iwae:k=5": 85.54,
    "hvae/meanfield/analytic": 85.33,
    "hvae/meanfield/iwae:k=5": 83.89,
}


def default_data_dir() -> str | None:
    shared = REPO.parent / "shared" / "data" / "mnist"
    return str(shared) if shared.is_dir() else os.environ.get("PPL_VAE_DATA")


def markdown(comparison: pv.Comparison, reference: str) -> str:
    table = comparison.table.set_index("method")
    paired = comparison.paired(reference)
    paired = paired[
        (paired["metric"] == "iw_log_likelihood") & (paired["level"] == "seed")
    ].set_index("method")
    base = {
        row["objective"]: row["seconds_per_epoch"]
        for _, row in comparison.table.iterrows()
        if row["model"] == "vae" and row["guide"] == "meanfield"
    }
    k = int(comparison.table["num_samples"].iloc[0])
    lines = [
        f"| method (model/guide/objective) | test NLL, K={k} | paired diff vs {reference} | ELBO | IW - ELBO "
        "| k-hat > 0.7 | active units | epochs | s/epoch | cost vs mean-field | Burda et al. |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, row in table.iterrows():
        m = comparison.method_specs[method]
        paper = PAPER.get(f"{m.model}/{m.guide}/{m.objective}")
        if method == reference:
            diff = "reference"
        else:
            p = paired.loc[method]
            diff = (
                f"{-p['mean_diff']:+.2f} ± {p['se_points']:.2f}"  # NLL difference: lower is better
            )
        ref_cost = base.get(m.objective)
        cost = f"{row['seconds_per_epoch'] / ref_cost:.2f}" if ref_cost and m.model == "vae" else ""
        lines.append(
            f"| {m.model}/{m.guide}/{m.objective} | {-row['test_iw_log_likelihood']:.2f} ± {row['test_iw_se']:.2f} "
            f"| {diff} | {row['test_elbo']:.2f} | {row['gap']:.2f} | {row['khat_share_above_0.7']:.2f} "
            f"| {int(row['active_units'])}/{int(row['latent_dim'])} | {int(row['epochs'])} "
            f"| {row['seconds_per_epoch']:.1f} | {cost} | {'' if paper is None else paper} |"
        )
    return "\n".join(lines)


def cost_table(
    methods: list[str], data_dir: str | None, steps: int, rounds: int, batch_size: int
) -> str:
    """Seconds per MNIST epoch (469 steps of 128) of each method, interleaved rounds; see the module docstring."""
    import dataclasses
    import statistics

    data = pv.load_dataset(
        "mnist", data_dir=data_dir, binarize="dynamic", seed=0, n_samples=batch_size * steps
    )
    data = dataclasses.replace(data, test=data.test[:0], test_labels=None)  # no per-epoch test ELBO
    parsed = [pv.Method.parse(m) for m in methods]
    models = {}
    for m in parsed:
        torch.manual_seed(0)
        models[m.label] = m.build(
            784,
            latent_dim=50,
            hidden_dims=(200, 200),
            likelihood="bernoulli",
            activation="tanh",
            image_shape=(1, 28, 28),
            num_classes=10,
        )
    per_step: dict[str, list[float]] = {m.label: [] for m in parsed}
    paths: dict[str, str] = {}
    for r in range(rounds):
        for m in parsed:
            history = pv.fit(
                models[m.label],
                data,
                m.objective,
                epochs=1,
                batch_size=batch_size,
                lr=1e-3,
                progress=False,
                fast="graph",
            )
            if r:
                per_step[m.label].append(history[-1]["seconds"] / steps)
            paths[m.label] = history.meta.get("fast_path", {}).get("path", "")
        print(f"  cost round {r + 1}/{rounds} done", flush=True)
    epoch_steps = math.ceil(60_000 / batch_size)
    seconds = {k: statistics.median(v) * epoch_steps for k, v in per_step.items()}
    base = {
        m.objective: seconds[m.label] for m in parsed if m.model == "vae" and m.guide == "meanfield"
    }
    lines = [
        f"| method | s/epoch ({epoch_steps} steps of {batch_size}) | relative to mean-field, same objective | path |",
        "|---|---|---|---|",
    ]
    for m in parsed:
        ref = base.get(m.objective)
        rel = f"{seconds[m.label] / ref:.2f}" if ref and m.model == "vae" else ""
        lines.append(
            f"| {m.model}/{m.guide}/{m.objective} | {seconds[m.label]:.1f} | {rel} | {paths[m.label]} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--methods", nargs="+", default=GRID + HVAE)
    parser.add_argument(
        "--time-budget", type=float, default=300.0, help="seconds of training per method"
    )
    parser.add_argument("--max-epochs", type=int, default=100_000)
    parser.add_argument("--test-points", type=int, default=1000)
    parser.add_argument("--final-k", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--n-samples", type=int, default=None, help="keep the first n training images (smoke runs)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "methods"))
    parser.add_argument(
        "--cost-only", action="store_true", help="only the interleaved cost-per-epoch table"
    )
    parser.add_argument("--cost-steps", type=int, default=40)
    parser.add_argument("--cost-rounds", type=int, default=4)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print_machine("bench_methods: guides x objectives x gradient estimators on MNIST")
    # said in the README: the IAF's KL is sampled under 'analytic'; Pyro's mean-field ordering check on hvae;
    # methods without a captured graph (DReG) train on Pyro's path
    warnings.filterwarnings("ignore", category=pv.guides.SampledKLWarning)
    warnings.filterwarnings("ignore", message="Failed to verify mean field restriction")
    warnings.filterwarnings("ignore", category=pv.train.FastPathWarning)
    if args.cost_only:
        text = cost_table(
            args.methods, args.data_dir, args.cost_steps, args.cost_rounds, args.batch_size
        )
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "cost.md").write_text(text + "\n")
        print("\n" + text)
        return 0
    print(
        f"methods: {args.methods}\nbudget {args.time_budget:g} s of training per method, batch {args.batch_size}, "
        f"lr {args.lr:g}; test NLL with K={args.final_k} on {args.test_points} test points",
        flush=True,
    )
    t0 = time.perf_counter()

    def progress(row: dict) -> None:
        print(
            f"  {row['method']}: {row['epochs']} epochs, {row['seconds_per_epoch']:.1f} s/epoch, "
            f"NLL {-row['test_iw_log_likelihood']:.2f} (ELBO {row['test_elbo']:.2f}) "
            f"[{time.perf_counter() - t0:.0f} s]",
            flush=True,
        )

    result = pv.run_comparison(
        args.methods,
        "mnist",
        seeds=[args.seed],
        epochs=args.max_epochs,
        num_samples=args.final_k,
        latent_dim=50,
        hidden_dims=(200, 200),
        likelihood="bernoulli",
        activation="tanh",
        binarize="dynamic",
        batch_size=args.batch_size,
        lr=args.lr,
        data_dir=args.data_dir,
        device="cpu",
        n_samples=args.n_samples,
        time_budget=args.time_budget,
        test_points=args.test_points,
        test_curve=False,
        callback=progress,
    )
    out = Path(args.out)
    paths = result.save(out)
    reference = result.methods[0]
    text = markdown(result, reference)
    (out / "table.md").write_text(text + "\n")
    (out / "settings.json").write_text(
        json.dumps({**vars(args), "wall_seconds": time.perf_counter() - t0}, indent=1)
    )
    print("\n" + text)
    print("\nwrote " + ", ".join(str(p) for p in paths.values()) + f", {out / 'table.md'}")
    return 0 if math.isfinite(float(result.table["test_iw_log_likelihood"].sum())) else 1


if __name__ == "__main__":
    raise SystemExit(main())
