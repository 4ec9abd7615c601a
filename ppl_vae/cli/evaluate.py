"""``ppl-vae evaluate RUN``: per-point log p(x) (ELBO, IW, AIS) with k-hat; the outputs commit as one set."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .._checks import check_device, check_memory, check_output_path
from ..errors import UserError
from ..store.lock import is_main_process, lock_folder
from .args import (
    positive_int,
    refuse_outputs,
    seed,
)

if TYPE_CHECKING:
    import torch

    from ..diagnostics.report import Report
    from ..runs import Run

#: the output set evaluate commits: RUN/evaluation/ (evaluation.json, .csv, .nc, khat.png, gap_hist.png)
EVALUATION = "evaluation"


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="ELBO, importance-weighted log p(x), PSIS k-hat for a trained run",
        description="Evaluate a run folder on its own data split: per-point ELBO and "
        "importance-weighted log p(x) (nats per point), their gap, PSIS k-hat and "
        "ESS, active units, KL per latent dimension (and, for an m2 run, the "
        "classifier's accuracy). Writes evaluation.json "
        "(summary), evaluation.csv (per point), evaluation.nc (ArviZ), khat.png "
        "and gap_hist.png (refused if they exist, unless --force).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by `ppl-vae train`")
    p.add_argument(
        "--num-samples",
        "-k",
        type=positive_int,
        default=1000,
        help="importance samples K per point (default 1000; >= 100 for a trustworthy k-hat)",
    )
    p.add_argument(
        "--split",
        choices=["test", "train"],
        default="test",
        help="which split to evaluate (default test)",
    )
    p.add_argument(
        "--seed", type=seed, default=0, help="seed of the importance samples (default 0)"
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="points per model call (default: about 4096 / K, at least 1)",
    )
    p.add_argument(
        "--max-points", type=positive_int, default=None, help="evaluate only the first N points"
    )
    p.add_argument(
        "--fast",
        choices=["auto", "compile", "eager"],
        default="auto",
        help="auto (default): compile the importance-sampling chunk with torch.compile when N x K is "
        "at least 2 million; compile: always; eager: never (same numbers up to float rounding)",
    )
    p.add_argument(
        "--no-log-weights",
        action="store_true",
        help="leave the (N, K) log weights out of evaluation.nc (4 N K bytes otherwise)",
    )
    p.add_argument("--out", default=None, help="folder for the outputs (default: RUN_DIR)")
    p.add_argument(
        "--force", action="store_true", help="replace evaluation files that already exist"
    )
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument(
        "--estimator",
        choices=["iw", "ais"],
        default="iw",
        help="iw (default): ELBO and importance sampling from the guide; ais: also annealed importance "
        "sampling per point (HMC, Wu et al. 2017), beside IW in the table and the files",
    )
    p.add_argument(
        "--ais-steps",
        type=positive_int,
        default=None,
        metavar="T",
        help="AIS: intermediate distributions T (default 1000); the cost grows as T x chains x leapfrog",
    )
    p.add_argument(
        "--ais-chains",
        type=positive_int,
        default=None,
        metavar="C",
        help="AIS: chains per point (default 16)",
    )
    p.add_argument(
        "--ais-leapfrog",
        type=positive_int,
        default=None,
        metavar="L",
        help="AIS: leapfrog steps per HMC transition (default 10)",
    )
    p.add_argument(
        "--ais-init",
        choices=["guide", "prior"],
        default=None,
        help="AIS: start the chains from the guide (default) or the prior",
    )
    p.add_argument(
        "--ladder",
        action="store_true",
        help="also run the estimator ladder per point (ELBO -> IW with K doubling -> AIS until converged; "
        "docs/guide/diagnostics.md): ladder_* columns and summary fields",
    )
    p.add_argument(
        "--target-se",
        type=float,
        default=None,
        metavar="NATS",
        help="--ladder: the Monte Carlo s.e. a point's IW estimate must reach (default 0.05)",
    )
    p.add_argument(
        "--log",
        choices=["mlflow"],
        default=None,
        help="log the summary and files to MLflow (a run trained with --log mlflow always logs them, "
        "into its own MLflow run; needs ppl_vae[mlflow])",
    )
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ..runs import load_run

    ais_settings = _ais_settings(args)
    from ..store.tracking import MLFLOW_FILE, check_mlflow

    if args.log == "mlflow" or (Path(args.run_dir) / MLFLOW_FILE).is_file():
        check_mlflow("evaluate (the run logs to MLflow)" if args.log is None else "--log mlflow")
    out = Path(args.out) if args.out is not None else Path(args.run_dir)
    if args.out is not None:
        check_output_path(args.out, "--out")
    what = "--out" if args.out is not None else "RUN_DIR"
    if not Path(args.run_dir).is_dir() and args.out is None:
        load_run(args.run_dir)  # says what is wrong with RUN_DIR, before anything is made
    refuse_outputs(out, [EVALUATION], args.force, what)
    with lock_folder(
        out
    ):  # one writer: a second evaluate (or a train) in OUT is refused with its PID
        refuse_outputs(out, [EVALUATION], args.force, what)
        return _evaluate(args, out, ais_settings)


def _evaluate(args: argparse.Namespace, out: Path, ais_settings: dict) -> int:
    from ..diagnostics import evaluate
    from ..runs import load_run

    run = load_run(args.run_dir, device=_rank_device(args.device))
    x, labels, mask = _split_rows(run, args)
    # the (N, K) log weights (kept, put in an InferenceData, rendered as netCDF bytes), and a chunk of
    # K samples through the decoder
    check_memory(
        len(x) * args.num_samples * 8 * (0 if args.no_log_weights else 3)
        + args.num_samples * x.shape[-1] * 4 * 4,
        f"evaluate with K={args.num_samples} on {len(x)} points",
        "use a smaller --num-samples, --max-points, or --no-log-weights",
    )
    x = x.to(next(run.model.parameters()).device)
    name = f"{Path(args.run_dir).name} ({args.split}, {run.config.get('dataset', '?')})"
    report = evaluate(
        run.model,
        x if mask is None else (x, mask.to(x.device)),
        num_samples=args.num_samples,
        seed=args.seed,
        batch_size=args.batch_size,
        keep_log_weights=not args.no_log_weights,
        name=name,
        fast=args.fast,
        progress=not args.no_progress and sys.stderr.isatty(),
        estimator=args.estimator,
        **ais_settings,
    )
    if args.ladder:
        from ..estimators.ladder import add_to_report

        data = x if mask is None else (x, mask.to(x.device))
        add_to_report(report, run.model, data, args.target_se or 0.05, args.seed)
    accuracy = _accuracy(run.model, x, labels)
    if accuracy is not None:  # a model with a classifier (m2): one more summary field
        report.summary[f"{args.split}_accuracy"] = accuracy
    if not is_main_process():
        return 0  # under torchrun: every rank computed its share of the points; rank 0 writes and reports
    rows = _row_labels(run.data, args.split, len(x))
    if (
        rows is not None
    ):  # the rows as the user knows them (a CSV's row or ID column), not positions
        report.points.index = rows
    epoch = run.history[-1]["epoch"] if len(run.history) else 0
    # what was evaluated, so that a reader can tell an evaluation older than the run's last epoch
    report.summary.update(epoch=epoch, checkpoint_set=run.checkpoint, split=args.split)
    import matplotlib

    matplotlib.use("Agg")
    from ..plots import report_figure_files

    record = {"run": str(Path(args.run_dir).resolve()), "checkpoint_set": run.checkpoint}
    paths = report.save(out, figures=report_figure_files(report), record=record)
    _print_report(args, name, report, accuracy, paths, epoch, len(x))
    s = report.summary
    from ..store.tracking import log_evaluation

    logged = log_evaluation(
        Path(args.run_dir), run.settings or {}, s, paths.values(), args.split, args.log == "mlflow"
    )
    if logged is not None:
        print(f"logged to MLflow run {logged['run_id']} at {logged['tracking_uri']}")
    return 0


def _ais_settings(args: argparse.Namespace) -> dict:
    """The AIS flags given (with ``--estimator ais``); a flag that needs another one is one line."""
    ais_flags = {
        "ais_steps": args.ais_steps,
        "ais_chains": args.ais_chains,
        "ais_leapfrog": args.ais_leapfrog,
        "ais_init": args.ais_init,
    }
    if args.target_se is not None and not args.ladder:
        raise UserError("--target-se sets the estimator ladder's precision: add --ladder")
    if args.estimator != "ais" and any(v is not None for v in ais_flags.values()):
        given = ", ".join("--" + k.replace("_", "-") for k, v in ais_flags.items() if v is not None)
        raise UserError(f"{given} set(s) annealed importance sampling: add --estimator ais")
    return {k: v for k, v in ais_flags.items() if v is not None} if args.estimator == "ais" else {}


def _split_rows(
    run: Run, args: argparse.Namespace
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The split's rows, labels and mask of missing cells, cut to ``--max-points``; an empty split is one line."""
    x = run.data.test if args.split == "test" else run.data.train
    if x is None or len(x) == 0:
        raise UserError(
            f"the run's {args.split} split is empty: evaluate --split "
            f"{'train' if args.split == 'test' else 'test'}"
        )
    labels = run.data.test_labels if args.split == "test" else run.data.train_labels
    mask = getattr(run.data, "mask", lambda split: None)(args.split)  # missing cells: log p(x_obs)
    if args.max_points is not None:
        x = x[: args.max_points]
        labels = None if labels is None else labels[: args.max_points]
        mask = None if mask is None else mask[: args.max_points]
    return x, labels, mask


def _print_report(
    args: argparse.Namespace,
    name: str,
    report: Report,
    accuracy: float | None,
    paths: dict,
    epoch: int,
    n: int,
) -> None:
    """What ``ppl-vae evaluate`` prints: the settings, the table, the columns, the accuracy, the files."""
    s = report.summary
    print(
        f"{name}: {s['n']} points, K={s['num_samples']} importance samples, seed {s['seed']}, "
        f"{s['seconds']:.1f} s ({s['points_per_second']:.0f} points/s)"
    )
    if args.estimator == "ais":
        print(
            f"AIS: T={s['ais_steps']}, {s['ais_chains']} chains from the {s['ais_init']}, L={s['ais_leapfrog']} "
            f"leapfrog steps, {s['ais_seconds']:.1f} s"
        )
    if args.ladder:
        print(
            f"ladder (target s.e. {s['ladder_target_se']:g}): mean {s['ladder_log_likelihood_mean']:.4f} "
            f"(Monte Carlo s.e. {s['ladder_mc_se']:.4f}); stopped at {s['ladder_stopped_at']}"
        )
    print("values in nats per data point; se = standard error over points\n")
    print(report.format_table())
    if s.get("columns"):
        from ..diagnostics.columns import format_columns

        print("\n" + format_columns(s["columns"]))
    if accuracy is not None:
        print(
            f"\n{args.split} accuracy of q(y | x): {accuracy:.4f} (share of the {n} points whose most probable "
            f"class is their label; {args.split}_accuracy in evaluation.json)"
        )
    print("\nk-hat: < 0.5 good, 0.5-0.7 usable, > 0.7 the IW estimate is unreliable for that point")
    folder = next(iter(paths.values())).parent
    print(
        f"wrote {folder}: {', '.join(p.name for p in paths.values())} (epoch {epoch}, committed as "
        "one set)"
    )


def _rank_device(device: str) -> str:
    """``--device`` for this process: under ``torchrun`` the group is started here (gloo on the CPU, NCCL on
    CUDA, each rank on ``cuda:LOCAL_RANK``) so that the estimators share the points between the ranks."""
    from ..train.distributed import env_world_size, setup

    if env_world_size() <= 1:
        return device
    return str(setup(check_device(device)).device)


def _row_labels(data, split: str, n: int):
    """The first ``n`` rows' labels of ``split`` when the dataset offers them (``Dataset.index``), else None."""
    index = getattr(data, "index", None)
    try:
        labels = index(split) if callable(index) else None
    except UserError:
        return None
    if labels is None or len(labels) < n:
        return None
    import pandas as pd

    return pd.Index(list(labels[:n]), name="point")


def _accuracy(model, x, labels) -> float | None:
    """The classifier's accuracy on ``(x, labels)`` for a model that has one (m2), else None."""
    if labels is None or not callable(getattr(model, "accuracy", None)):
        return None
    model.eval()
    return float(model.accuracy(x, labels))
