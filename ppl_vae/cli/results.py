"""``ppl-vae compare | evaluate | plot | sample``: outputs checked (and never silently replaced) first."""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from .._checks import check_memory, check_output_path
from ..errors import UserError
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


# ---------------------------------------------------------------- compare
def add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="train objectives x seeds on the same split and compare them",
        description="Train every --methods objective for every seed on the same data split and "
        "the same initial weights, evaluate all on the test split with the same "
        "estimator (K importance samples, one seed), and write OUT/comparison.csv "
        "(one row per method and seed), OUT/paired.csv (per-point differences "
        "against --reference, SEs across points and seeds), OUT/comparison.nc "
        "(ArviZ InferenceData) and OUT/comparison.png.",
    )
    p.add_argument(
        "--methods",
        nargs="+",
        required=True,
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
        "--force", action="store_true", help="write into an existing --out, replacing its outputs"
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
    from ..analysis.methods import Method

    out = check_output_path(args.out, "--out")
    refuse_nonempty(out, "--out", args.force)
    refuse_outputs(out, [COMPARISON], True, "--out")  # a link, or files of the user's in the set
    for method in args.methods:
        Method.parse(
            method
        )  # unknown models, guides, objectives or parameters: exit 2 listing the valid ones
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with lock_folder(out):  # one writer: a second compare --out OUT is refused, naming this PID
        refuse_nonempty(out, "--out", args.force)  # again, now that no other writer can be in it
        return _compare(args, out, run_comparison)


def _compare(args: argparse.Namespace, out: Path, run_comparison) -> int:
    import pandas as pd

    result = run_comparison(
        args.methods,
        args.dataset,
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
            f"{args.dataset}: {len(args.methods)} methods x {len(args.seeds)} seeds, {args.epochs} epochs; "
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
    print("\nwrote " + ", ".join(str(p) for p in paths.values()))
    return 0


# ---------------------------------------------------------------- evaluate
#: the output set evaluate commits: RUN/evaluation/ (evaluation.json, .csv, .nc, khat.png, gap_hist.png)
EVALUATION = "evaluation"
#: the output set compare commits: OUT/comparison/ (comparison.csv, paired.csv, comparison.nc, .png)
COMPARISON = "comparison"


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
        "--log",
        choices=["mlflow"],
        default=None,
        help="log the summary and files to MLflow (a run trained with --log mlflow always logs them, "
        "into its own MLflow run; needs ppl_vae[mlflow])",
    )
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ..runs import load_run

    ais_flags = {
        "ais_steps": args.ais_steps,
        "ais_chains": args.ais_chains,
        "ais_leapfrog": args.ais_leapfrog,
        "ais_init": args.ais_init,
    }
    if args.estimator != "ais" and any(v is not None for v in ais_flags.values()):
        given = ", ".join("--" + k.replace("_", "-") for k, v in ais_flags.items() if v is not None)
        raise UserError(f"{given} set(s) annealed importance sampling: add --estimator ais")
    ais_settings = (
        {k: v for k, v in ais_flags.items() if v is not None} if args.estimator == "ais" else {}
    )
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

    run = load_run(args.run_dir, device=args.device)
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
    accuracy = _accuracy(run.model, x, labels)
    if accuracy is not None:  # a model with a classifier (m2): one more summary field
        report.summary[f"{args.split}_accuracy"] = accuracy
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
    print("values in nats per data point; se = standard error over points\n")
    print(report.format_table())
    if accuracy is not None:
        print(
            f"\n{args.split} accuracy of q(y | x): {accuracy:.4f} (share of the {len(x)} points whose most probable "
            f"class is their label; {args.split}_accuracy in evaluation.json)"
        )
    print("\nk-hat: < 0.5 good, 0.5-0.7 usable, > 0.7 the IW estimate is unreliable for that point")
    folder = next(iter(paths.values())).parent
    print(
        f"wrote {folder}: {', '.join(p.name for p in paths.values())} (epoch {epoch}, committed as "
        "one set)"
    )
    from ..store.tracking import log_evaluation

    logged = log_evaluation(
        Path(args.run_dir), run.settings or {}, s, paths.values(), args.split, args.log == "mlflow"
    )
    if logged is not None:
        print(f"logged to MLflow run {logged['run_id']} at {logged['tracking_uri']}")
    return 0


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


# ---------------------------------------------------------------- plot
PLOT_KINDS = ["latent", "recon", "samples", "interpolate", "curves", "overview", "khat", "gap"]


def add_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot",
        help="draw a run's figures as PNGs (latent map, reconstructions, samples, ...)",
        description="Draw figures of a trained run: latent map (PCA when d > 2), reconstructions, "
        "prior samples (VAE only), an interpolation, training curves; for 2-D data "
        "an overview scatter; khat/gap run the importance-weighted evaluation first.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by `ppl-vae train`")
    p.add_argument(
        "--kind",
        nargs="+",
        default=["all"],
        choices=[*PLOT_KINDS, "all"],
        help="which figures (default all: latent, recon, samples, interpolate, curves, and overview "
        "for 2-D data)",
    )
    p.add_argument("--out", default=None, help="folder for the PNGs (default: RUN_DIR)")
    p.add_argument("--force", action="store_true", help="replace PNGs that already exist")
    p.add_argument(
        "--num-samples",
        type=positive_int,
        default=1000,
        help="importance samples per test point for --kind khat/gap (default 1000)",
    )
    p.set_defaults(func=_cmd_plot)


def _cmd_plot(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from ..plots import plot_run
    from ..runs import load_run

    out = Path(args.out) if args.out is not None else Path(args.run_dir)
    kinds = PLOT_KINDS[:6] if "all" in args.kind else args.kind
    what = "--out" if args.out is not None else "RUN_DIR"
    names = [f"{k}.png" for k in kinds]
    if not Path(args.run_dir).is_dir() and args.out is None:
        load_run(args.run_dir)  # says what is wrong with RUN_DIR, before anything is made
    refuse_outputs(out, names, args.force, what)
    skipped: list[str] = []
    with lock_folder(out):  # one writer per folder
        refuse_outputs(out, names, args.force, what)
        paths = plot_run(
            args.run_dir, args.kind, args.out, num_samples=args.num_samples, skipped=skipped
        )
    for path in paths:
        print(f"wrote {path}")
    for reason in skipped:
        print(f"skipped {reason}")
    return 0


# ---------------------------------------------------------------- sample
def add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample",
        help="draw from a trained VAE's prior and decode (PNG grid or .npy array)",
        description="Draw z ~ N(0, I), decode to the mean of p(x | z), and write an image grid or "
        "scatter (.png) or the (n, D) array (.npy). Autoencoders have no prior.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by `ppl-vae train`")
    p.add_argument(
        "-n", "--num", type=positive_int, default=64, help="number of samples (default 64)"
    )
    p.add_argument(
        "--out",
        required=True,
        help="FILE.png (a picture) or FILE.npy (the decoded means, (n, D)); "
        "refused if it exists, unless --force",
    )
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--seed", type=seed, default=0, help="seed of the draws of z")
    p.set_defaults(func=_cmd_sample)


def _cmd_sample(args: argparse.Namespace) -> int:
    out = check_output_path(args.out, "--out", kind="file", force=args.force)
    if out.suffix.lower() not in (".png", ".npy"):
        raise UserError(f"--out must end in .png or .npy; got {str(out)!r}")
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    import torch

    from ..plots import can_sample, model_label, plot_samples, png_bytes
    from ..runs import load_run
    from ..store.files import write_bytes

    run = load_run(args.run_dir)
    if not can_sample(run.model):
        raise UserError(
            f"{type(run.model).__name__} (run {args.run_dir}) has no prior over its code, so it "
            "cannot be sampled; only --model vae runs can"
        )
    dim = run.data.meta.input_dim
    check_memory(
        args.num * (dim * 4 * 4 + getattr(run.model, "latent_dim", dim) * 4 * 2),
        f"sample -n {args.num} (decoded to {dim} values each)",
        "ask for fewer samples",
    )
    if out.suffix.lower() == ".npy":
        gen = torch.Generator().manual_seed(args.seed)
        buf = io.BytesIO()
        np.save(buf, run.model.sample(args.num, generator=gen).cpu().numpy())
        data = buf.getvalue()
    else:
        name = f"run {Path(args.run_dir).resolve().name}: {model_label(run.model)}, {run.data.meta.name}"
        data = png_bytes(plot_samples(run.model, run.data, n=args.num, seed=args.seed, name=name))
    out.parent.mkdir(parents=True, exist_ok=True)
    # one file, written beside and renamed in; without --force a file that appeared meanwhile is kept
    write_bytes(out, data, replace=args.force)
    print(f"wrote {args.num} samples to {out}")
    return 0
