"""``ppl-vae compare``: several methods (and seeds) trained and evaluated on one split; --out checked first."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .._checks import check_output_path
from ..store.files import refuse_link
from ..store.lock import lock_folder
from .args import (
    add_data_args,
    add_model_args,
    positive_float,
    positive_int,
    refuse_nonempty,
    refuse_outputs,
    seed,
)

#: the output set compare commits: OUT/comparison/ (comparison.csv, paired.csv, comparison.nc, .png)
COMPARISON = "comparison"
#: every finished (method, seed) cell, committed as it finishes: OUT/cells/<cell>/ (a re-run resumes)
CELLS = "cells"


def add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="train objectives x seeds on the same split and compare them",
        description="Train every --methods objective for every seed on the same data split and "
        "the same initial weights, evaluate all on the test split with the same "
        "estimator (K importance samples, one seed), and write OUT/comparison.csv "
        "(one row per method and seed), OUT/paired.csv (per-point differences "
        "against --reference, SEs across points and seeds), OUT/comparison.nc "
        "(ArviZ InferenceData) and OUT/comparison.png. Each finished method x seed is committed at once "
        "in OUT/cells/: a compare killed part-way, run again with the same settings and --out, reuses "
        "the finished cells and trains the rest (other settings are refused; --force starts again).",
    )
    axis = p.add_mutually_exclusive_group(required=True)
    axis.add_argument(
        "--models",
        nargs="+",
        help="the model axis: model specs of the registry, each named by itself, e.g. vae:latent=2 "
        "vae:latent=8 linear:latent=4/fullrank; crossed with --objectives; the ranking table "
        "(OUT/comparison/ranking.csv) ranks them by held-out log p(x)",
    )
    p.add_argument(
        "--objectives",
        nargs="+",
        default=None,
        help="objectives for every --models model (default: analytic)",
    )
    axis.add_argument(
        "--methods",
        nargs="+",
        help="methods: an objective (trace analytic iwae:k=5 analytic:beta=4 trace:anneal=10), or "
        "[model/][guide/]objective, e.g. fullrank/analytic iaf:n=2/iwae:k=5,grad=dreg hvae/trace "
        "m2:labelled=0.1/enum vae:nets=conv/meanfield/analytic",
    )
    p.add_argument(
        "--seeds", nargs="+", type=seed, default=[0], help="seeds (split, init, SVI); default 0"
    )
    p.add_argument("--epochs", type=positive_int, default=20, help="epochs per run (default 20)")
    p.add_argument(
        "--time-budget",
        type=positive_float,
        default=None,
        help="seconds of training per run (each stops after the epoch that passes it; at most --epochs)",
    )
    p.add_argument(
        "--num-samples",
        type=positive_int,
        default=1000,
        help="K importance samples per test point for every evaluation (default 1000)",
    )
    p.add_argument("--eval-seed", type=seed, default=0, help="seed of every evaluation (default 0)")
    p.add_argument(
        "--reference", default=None, help="method for paired differences (default: the first)"
    )
    p.add_argument(
        "--out",
        required=True,
        help="folder for the CSVs, netCDF and PNG (refused if it exists and is "
        "not empty, unless --force)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="write into an existing --out, replacing its outputs; its cells of other settings are "
        "removed (cells of the same settings are still reused)",
    )
    p.add_argument(
        "--batch-size", type=positive_int, default=128, help="mini-batch size (default 128)"
    )
    p.add_argument(
        "--lr", type=positive_float, default=1e-3, help="Adam learning rate (default 1e-3)"
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch CPU threads (1 is fastest for small models on a busy machine)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    add_data_args(p, plain=True)
    add_model_args(p, plain=True)
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    from ..analysis.compare import run_comparison
    from ..analysis.methods import Method, model_axis

    out = check_output_path(args.out, "--out")
    _refuse_unless_resumable(out, args.force)
    refuse_outputs(out, [COMPARISON], True, "--out")  # a link, or files of the user's in the set
    refuse_link(out / CELLS)  # never written through
    # unknown models, guides, objectives or parameters: exit 2 listing the valid ones
    methods, _ = model_axis(args.methods, _models_of(args), args.objectives)
    for method in methods:
        Method.parse(method)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with lock_folder(out):  # one writer: a second compare --out OUT is refused, naming this PID
        _refuse_unless_resumable(out, args.force)  # again, now that no other writer can be in it
        return _compare(args, out, run_comparison)


def _refuse_unless_resumable(out: Path, force: bool) -> None:
    """``--out`` empty, or holding only the cells of a killed compare (resumed), unless ``--force``."""
    from ..store.lock import LOCK_FILE

    entries = {p.name for p in out.iterdir()} - {LOCK_FILE} if out.is_dir() else set()
    if entries <= {CELLS} and (out / CELLS).is_dir():
        return  # a compare killed before it committed its comparison: resumed (same settings only)
    refuse_nonempty(out, "--out", force)


def _models_of(args: argparse.Namespace) -> dict[str, str] | None:
    """``--models`` as ``{spec: spec}`` (each model named by its spec), or None."""
    return None if args.models is None else {m: m for m in args.models}


def _print_ranking(result: Any) -> None:
    """The ranking table of a ``--models`` comparison (models by held-out log p(x), best first)."""
    import warnings

    with warnings.catch_warnings():  # the unreliable-estimate warning was given once, by save
        warnings.simplefilter("ignore", UserWarning)
        ranking = result.ranking()
    print(
        f"\nranking by held-out {ranking['metric'].iloc[0]} (nats per row; diff to the best, its "
        "paired s.e. over rows and seeds; khat_share: rows with k-hat > 0.7):"
    )
    print(ranking.drop(columns=["method", "metric"]).to_string(index=False))


def _compare(args: argparse.Namespace, out: Path, run_comparison) -> int:
    import pandas as pd

    from ..analysis.resume import CellStore

    cells = CellStore(out / CELLS, replace=args.force)
    result = run_comparison(
        args.methods,
        args.dataset,
        models=_models_of(args),
        objectives=args.objectives,
        seeds=args.seeds,
        epochs=args.epochs,
        num_samples=args.num_samples,
        eval_seed=args.eval_seed,
        reference=args.reference,
        latent_dim=args.latent_dim,
        hidden_dims=args.hidden_dims,
        likelihood=args.likelihood,
        activation=args.activation,
        binarize=args.binarize,
        batch_size=args.batch_size,
        lr=args.lr,
        n_samples=args.n_samples,
        data_dir=args.data_dir,
        device=args.device,
        progress=not args.no_progress and sys.stderr.isatty(),
        time_budget=args.time_budget,
        cells=cells,
    )
    from ..train.distributed import is_main_process

    if not is_main_process():
        return 0  # under torchrun: every rank ran its cells and holds the result; rank 0 writes and reports
    if cells.reused:
        print(
            f"resumed: {len(cells.reused)} finished cell(s) read back from {out / CELLS} (same settings): "
            f"{', '.join(cells.reused)}; trained {len(cells.trained)}"
        )
    paths = result.save(out)
    k = args.num_samples
    cols = [
        "method",
        "seed",
        "test_elbo",
        "test_iw_log_likelihood",
        "gap",
        "khat_share_above_0.7",
        "active_units",
        "kl_per_dim_mean",
        "reconstruction_error",
        "seconds_per_epoch",
    ]
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 3):
        print(
            f"{args.dataset}: {len(result.methods)} methods x {len(args.seeds)} seeds, {args.epochs} epochs; "
            f"test set, nats per point, IW with K={k}"
        )
        print(result.table[[c for c in cols if c in result.table]].to_string(index=False))
        paired = result.paired()
        overall = paired[paired["level"] == "all"][
            ["method", "reference", "metric", "mean_diff", "se_points", "se_seeds", "n_seeds"]
        ]
        if len(overall):
            print("\npaired differences (method - reference), per test point, averaged over seeds:")
            print(overall.to_string(index=False))
        if args.models is not None:
            _print_ranking(result)
    print("\nwrote " + ", ".join(str(p) for p in paths.values()))
    return 0
