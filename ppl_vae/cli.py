"""The ``ppl-vae`` command line: thin sub-commands over the library's functions.

    ppl-vae train     --dataset digits --objective analytic --epochs 20 --out runs/a
    ppl-vae train     --out runs/a --resume                 # a killed run continues
    ppl-vae evaluate  runs/a --num-samples 1000
    ppl-vae demo

A user error (a :class:`ppl_vae.errors.UserError`: bad data, unknown names, a folder that would
be overwritten, a corrupt checkpoint, a diverged loss, a size the machine cannot hold) prints
one line on stderr and exits with status 2. Anything else is a bug: its traceback is printed
and the status is 1. Ctrl-C exits with 130. No command deletes or replaces a file it did not
create in the same call (``--force`` lets ``compare``, ``evaluate``, ``plot`` and ``sample``
replace their own outputs). Also runnable as ``python -m ppl_vae.cli``.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from ._checks import check_memory, check_output_path
from .errors import RunExistsError, UserError
from .runs.flags import UNSET
from .runs.settings import OVERRIDABLE


def _hidden(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(t) for t in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"hidden dims are integers like '256' or '400,400'; got {text!r}") from None
    if not dims or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"hidden dims must be positive integers; got {text!r}")
    return dims


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number written in digits (e.g. 64); "
                                         f"got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a seed is a whole number in [0, 2**32); got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"a seed is a whole number in [0, 2**32); got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number; got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive finite number; got {text!r}")
    return value


def _names(text: str) -> list[str]:
    return [t for t in text.replace(",", " ").split() if t]


def _add_data_args(p: argparse.ArgumentParser, plain: bool = False) -> None:
    """Data flags; ``plain``: with their defaults (else UNSET, so --resume can tell "not given")."""
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="digits" if plain else UNSET,
                   help="digits (default, shipped with scikit-learn), three_clusters, two_moons, mnist, "
                        "fashion_mnist, or a path to a .csv/.npy file")
    g.add_argument("--data-dir", default=None if plain else UNSET,
                   help="folder with the MNIST-format IDX .gz files (else $PPL_VAE_DATA)")
    g.add_argument("--binarize", default="auto" if plain else UNSET,
                   choices=["auto", "dynamic", "static", "none"],
                   help="auto (default): dynamic for a Bernoulli likelihood, none otherwise; dynamic draws fresh "
                        "{0,1} pixels each epoch, static draws once (seeded)")
    g.add_argument("--n-samples", type=_positive_int, default=None if plain else UNSET,
                   help="use only the first N training points (quick runs)")


def _add_model_args(p: argparse.ArgumentParser, plain: bool = False) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--latent-dim", type=_positive_int, default=8 if plain else UNSET,
                   help="size d of the latent code (default 8)")
    g.add_argument("--hidden-dims", type=_hidden, default=(256,) if plain else UNSET,
                   help="encoder hidden widths, e.g. '256' (default) or '400,400'; the decoder mirrors them")
    g.add_argument("--likelihood", default="auto" if plain else UNSET,
                   help="bernoulli, continuous_bernoulli, gaussian, gaussian:scale=S; auto (default): bernoulli "
                        "for images, gaussian otherwise")
    g.add_argument("--activation", default="relu" if plain else UNSET,
                   help="hidden non-linearity: relu (default), tanh, softplus, elu, gelu")


def _add_fit_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training (on --resume: the recorded values unless given)")
    g.add_argument("--objective", default=UNSET,
                   help="trace (Trace_ELBO), analytic (default; TraceMeanField_ELBO, closed-form KL), or another "
                        "registered name with parameters, e.g. 'analytic:particles=2'")
    g.add_argument("--epochs", type=_positive_int, default=UNSET,
                   help="number of epochs (default 20); with --resume: this many more (default: up to the "
                        "number the run was asked for)")
    g.add_argument("--batch-size", type=_positive_int, default=UNSET, help="mini-batch size (default 128)")
    g.add_argument("--lr", type=_positive_float, default=UNSET, help="Adam learning rate (default 1e-3)")
    g.add_argument("--seed", type=_seed, default=UNSET,
                   help="seeds the split, binarisation, initialisation and SVI (default 0)")
    g.add_argument("--device", default=UNSET, help="auto (default; CUDA when present), cpu or cuda")
    g.add_argument("--time-budget", type=_positive_float, default=None,
                   help="stop after the epoch in which this many seconds of training have passed")
    g.add_argument("--no-progress", action="store_true", help="hide the progress bar")


# ---------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a VAE by SVI into a run folder",
                       description="Train a VAE by SVI into the run folder --out: settings.json (what the run "
                                   "started with), checkpoint/ (committed after every epoch, with the history), "
                                   "metrics.json and metrics.csv (per-epoch train/test ELBO, nats per point).")
    p.add_argument("--out", required=True,
                   help="run folder to create (refused if it exists and is not empty, unless --resume)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out with its recorded settings (a killed run, or for --epochs more)")
    p.add_argument("--override", action="append", type=_names, default=[], metavar="NAME",
                   help=f"with --resume: let the given flag change a recorded setting ({', '.join(OVERRIDABLE)}); "
                        "recorded in settings.json and in the history, e.g. --override lr --lr 3e-4")
    p.add_argument("--log", action="append", choices=["tensorboard"], default=None,
                   help="also write TensorBoard event files to OUT/tensorboard (needs ppl_vae[tensorboard])")
    p.add_argument("--model", default=UNSET, choices=["vae", "ae", "dae", "sae", "cae"],
                   help="vae (default, trained by SVI); or a deterministic autoencoder on the same data: "
                        "ae (vanilla), dae (denoising), sae (sparse), cae (contractive); autoencoders "
                        "define no likelihood, so their history is a reconstruction error, not an ELBO")
    _add_data_args(p)
    _add_model_args(p)
    g = p.add_argument_group("autoencoders (--model ae|dae|sae|cae)")
    g.add_argument("--reconstruction", default=None, choices=["auto", "bce", "mse"],
                   help="reconstruction error: bce (data in [0, 1]) or mse; auto: bce for images, mse otherwise")
    g.add_argument("--noise", default=None, choices=["gaussian", "mask"],
                   help="dae corruption: gaussian (x + sigma*eps, default) or mask (zero with probability --mask-prob)")
    g.add_argument("--sigma", type=float, default=None, help="dae: std of the Gaussian corruption (default 0.3)")
    g.add_argument("--mask-prob", type=float, default=None, help="dae: masking probability (default 0.25)")
    g.add_argument("--rho", type=float, default=None, help="sae: target mean activation of the code (default 0.05)")
    g.add_argument("--lam", type=float, default=None,
                   help="sae/cae: penalty weight (defaults: sae 1.0, cae 0.1)")
    _add_fit_args(p)
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from .runs import train_run
    from .runs.lock import is_main_process

    if args.model not in (UNSET, "vae") and (args.objective is not UNSET or args.likelihood is not UNSET):
        raise UserError(f"--objective and --likelihood are for --model vae; --model {args.model} is trained on "
                        "its reconstruction error (choose it with --reconstruction)")
    ae_options = {"reconstruction": args.reconstruction, "noise": args.noise, "sigma": args.sigma,
                  "p": args.mask_prob, "rho": args.rho, "lam": args.lam}
    run = train_run(
        args.out, dataset=args.dataset, objective=args.objective, latent_dim=args.latent_dim,
        hidden_dims=args.hidden_dims, likelihood=args.likelihood, activation=args.activation,
        binarize=args.binarize, data_dir=args.data_dir, n_samples=args.n_samples, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device, resume=args.resume,
        progress=not args.no_progress, time_budget=args.time_budget, model=args.model, ae_options=ae_options,
        override=[n for group in args.override for n in group], log=args.log if args.log else UNSET,
    )
    if is_main_process():  # under torchrun, one report (rank 0 wrote the files)
        _print_history(run.history)
        out = Path(args.out)
        if run.trained == 0:
            print(f"nothing to train: {out} already has the {len(run.history)} epochs it was asked for (pass "
                  "--epochs N to train N more); its metrics are up to date")
            return 0
        print(f"wrote {out / 'metrics.json'}, {out / 'metrics.csv'} and {out / 'checkpoint'} "
              f"(settings in {out / 'settings.json'})")
    return 0


def _print_history(history: Sequence[dict]) -> None:
    def cell(value: object, width: int, fmt: str) -> str:
        return f"{'-' if value is None else format(value, fmt):>{width}}"

    ae = bool(history) and "train_loss" in history[0]  # an autoencoder: reconstruction error, no ELBO
    train, test = ("train_loss", "test_loss") if ae else ("train_elbo", "test_elbo")
    fmt = ".3f"
    print(f"{'epoch':>5}  {'train loss' if ae else 'train ELBO':>11}  {'test recon' if ae else 'test ELBO':>10}  "
          f"{'seconds':>7}")
    for r in history:
        note = "  override: " + ", ".join(f"{k} {v['from']} -> {v['to']}" for k, v in r["override"].items()) \
            if r.get("override") else ""
        print(f"{r['epoch']:>5}  {cell(r.get(train), 11, fmt)}  {cell(r.get(test), 10, fmt)}  "
              f"{cell(r.get('seconds'), 7, '.2f')}{note}")


# ---------------------------------------------------------------- demo
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job: a VAE on digits with both ELBOs, side by side",
                       description="Train a VAE on scikit-learn's digits (dynamic binarisation) with Trace_ELBO "
                                   "and TraceMeanField_ELBO for the same fixed budget, and print a table. Writes "
                                   "OUT/trace and OUT/analytic; if either exists, writes beside OUT under a new "
                                   "name (OUT-2, ...) instead.")
    p.add_argument("--out", default="runs/demo", help="where the run folders go (default runs/demo)")
    p.add_argument("--epochs", type=_positive_int, default=60, help="epochs per objective (default 60)")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_demo)


def _free_demo_folder(out: Path) -> Path:
    """``out`` if neither run folder exists in it, else the first free ``out-2``, ``out-3``, ..."""
    def taken(p: Path) -> bool:
        return p.exists() and (not p.is_dir() or (p / "trace").exists() or (p / "analytic").exists())

    if not taken(out):
        return out
    k = 2
    while taken(out.with_name(f"{out.name}-{k}")):
        k += 1
    return out.with_name(f"{out.name}-{k}")


def _cmd_demo(args: argparse.Namespace) -> int:
    from .runs import train_run

    asked = check_output_path(args.out, "--out")
    out = _free_demo_folder(asked)
    if out != asked:
        print(f"{asked} already holds a demo (or something else): writing this one into {out} instead; "
              f"nothing in {asked} was changed", file=sys.stderr)
    check_output_path(out, "--out")
    rows = []
    for objective in ("trace", "analytic"):
        t0 = time.perf_counter()
        run = train_run(out / objective, dataset="digits", objective=objective, epochs=args.epochs, seed=args.seed,
                        device=args.device, progress=sys.stderr.isatty())
        rows.append((objective, run.history[0]["test_elbo"], run.history.final_test_elbo,
                     time.perf_counter() - t0, str(out / objective)))
    print("VAE on digits (8x8, dynamic binarisation), d=8, MLP 64-256-8, Bernoulli likelihood, "
          f"{args.epochs} epochs, seed {args.seed}")
    print("test ELBO: nats per test point, closed-form KL, one sample of z per point\n")
    print(f"{'objective':<10} {'estimator':<22} {'test ELBO ep1':>13} {'test ELBO':>10} {'seconds':>8}  run folder")
    names = {"trace": "Trace_ELBO", "analytic": "TraceMeanField_ELBO"}
    for objective, first, last, secs, folder in rows:
        print(f"{objective:<10} {names[objective]:<22} {first:>13.3f} {last:>10.3f} {secs:>8.1f}  {folder}")
    return 0


# ---------------------------------------------------------------- compare
def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="train objectives x seeds on the same split and compare them",
                       description="Train every --methods objective for every seed on the same data split and "
                                   "the same initial weights, evaluate all on the test split with the same "
                                   "estimator (K importance samples, one seed), and write OUT/comparison.csv "
                                   "(one row per method and seed), OUT/paired.csv (per-point differences "
                                   "against --reference, SEs across points and seeds), OUT/comparison.nc "
                                   "(ArviZ InferenceData) and OUT/comparison.png.")
    p.add_argument("--methods", nargs="+", required=True,
                   help="objective strings, e.g. trace analytic iwae:k=5 analytic:beta=4 trace:anneal=10")
    p.add_argument("--seeds", nargs="+", type=_seed, default=[0], help="seeds (split, init, SVI); default 0")
    p.add_argument("--epochs", type=_positive_int, default=20, help="epochs per run (default 20)")
    p.add_argument("--num-samples", type=_positive_int, default=1000,
                   help="K importance samples per test point for every evaluation (default 1000)")
    p.add_argument("--eval-seed", type=_seed, default=0, help="seed of every evaluation (default 0)")
    p.add_argument("--reference", default=None, help="method for paired differences (default: the first)")
    p.add_argument("--out", required=True, help="folder for the CSVs, netCDF and PNG (refused if it exists and is "
                                                "not empty, unless --force)")
    p.add_argument("--force", action="store_true", help="write into an existing --out, replacing its outputs")
    p.add_argument("--batch-size", type=_positive_int, default=128, help="mini-batch size (default 128)")
    p.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="torch CPU threads (1 is fastest for small models on a busy machine)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    _add_data_args(p, plain=True)
    _add_model_args(p, plain=True)
    p.set_defaults(func=_cmd_compare)


def _refuse_nonempty(path: Path, what: str, force: bool) -> None:
    if path.is_dir() and any(path.iterdir()) and not force:
        raise RunExistsError(f"{what}: {str(path)!r} exists and is not empty: choose another folder, or pass "
                             "--force to write into it (replacing the files this command writes)")


def _cmd_compare(args: argparse.Namespace) -> int:
    import pandas as pd

    from .compare import run_comparison
    from .runs.flags import objective_spec

    out = check_output_path(args.out, "--out")
    _refuse_nonempty(out, "--out", args.force)
    for method in args.methods:
        objective_spec(method)  # unknown names or parameters: exit 2 listing the valid ones
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = run_comparison(
        args.methods, args.dataset, seeds=args.seeds, epochs=args.epochs, num_samples=args.num_samples,
        eval_seed=args.eval_seed, reference=args.reference, latent_dim=args.latent_dim,
        hidden_dims=args.hidden_dims, likelihood=args.likelihood, activation=args.activation,
        binarize=args.binarize, batch_size=args.batch_size, lr=args.lr, n_samples=args.n_samples,
        data_dir=args.data_dir, device=args.device, progress=not args.no_progress and sys.stderr.isatty(),
    )
    paths = result.save(out)
    k = args.num_samples
    cols = ["method", "seed", "test_elbo", "test_iw_log_likelihood", "gap", "khat_share_above_0.7",
            "active_units", "kl_per_dim_mean", "reconstruction_error", "seconds_per_epoch"]
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 3):
        print(f"{args.dataset}: {len(args.methods)} methods x {len(args.seeds)} seeds, {args.epochs} epochs; "
              f"test set, nats per point, IW with K={k}")
        print(result.table[[c for c in cols if c in result.table]].to_string(index=False))
        paired = result.paired()
        overall = paired[paired["level"] == "all"][["method", "reference", "metric", "mean_diff", "se_points",
                                                    "se_seeds", "n_seeds"]]
        if len(overall):
            print("\npaired differences (method - reference), per test point, averaged over seeds:")
            print(overall.to_string(index=False))
    print("\nwrote " + ", ".join(str(p) for p in paths.values()))
    return 0


# ---------------------------------------------------------------- evaluate
EVALUATION_FILES = ("evaluation.json", "evaluation.csv", "evaluation.nc", "khat.png", "gap_hist.png")


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="ELBO, importance-weighted log p(x), PSIS k-hat for a trained run",
                       description="Evaluate a run folder on its own data split: per-point ELBO and "
                                   "importance-weighted log p(x) (nats per point), their gap, PSIS k-hat and "
                                   "ESS, active units, KL per latent dimension. Writes evaluation.json "
                                   "(summary), evaluation.csv (per point), evaluation.nc (ArviZ), khat.png "
                                   "and gap_hist.png (refused if they exist, unless --force).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by `ppl-vae train`")
    p.add_argument("--num-samples", "-k", type=_positive_int, default=1000,
                   help="importance samples K per point (default 1000; >= 100 for a trustworthy k-hat)")
    p.add_argument("--split", choices=["test", "train"], default="test", help="which split to evaluate (default test)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the importance samples (default 0)")
    p.add_argument("--batch-size", type=_positive_int, default=None,
                   help="points per model call (default: about 4096 / K, at least 1)")
    p.add_argument("--max-points", type=_positive_int, default=None, help="evaluate only the first N points")
    p.add_argument("--fast", choices=["auto", "compile", "eager"], default="auto",
                   help="auto (default): compile the importance-sampling chunk with torch.compile when N x K is "
                        "at least 2 million; compile: always; eager: never (same numbers up to float rounding)")
    p.add_argument("--no-log-weights", action="store_true",
                   help="leave the (N, K) log weights out of evaluation.nc (4 N K bytes otherwise)")
    p.add_argument("--out", default=None, help="folder for the outputs (default: RUN_DIR)")
    p.add_argument("--force", action="store_true", help="replace evaluation files that already exist")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_evaluate)


def _refuse_outputs(folder: Path, names: Sequence[str], force: bool, what: str) -> None:
    """Before any work: ``folder`` writable, and none of ``names`` in it unless ``force``."""
    check_output_path(folder, what)
    present = [n for n in names if (folder / n).exists()]
    if present and not force:
        raise RunExistsError(f"{folder} already holds {', '.join(present)}: pass --force to replace them, or "
                             "--out OTHER_FOLDER to write elsewhere")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .diagnostics import evaluate
    from .runs import load_run

    out = Path(args.out) if args.out is not None else Path(args.run_dir)
    if args.out is not None:
        check_output_path(args.out, "--out")
    if Path(args.run_dir).is_dir() or args.out is not None:
        _refuse_outputs(out, EVALUATION_FILES, args.force, "--out" if args.out is not None else "RUN_DIR")
    run = load_run(args.run_dir, device=args.device)
    x = run.data.test if args.split == "test" else run.data.train
    if x is None or len(x) == 0:
        raise UserError(f"the run's {args.split} split is empty: evaluate --split "
                        f"{'train' if args.split == 'test' else 'test'}")
    if args.max_points is not None:
        x = x[: args.max_points]
    # the (N, K) log weights, and a chunk of K samples through the decoder
    check_memory(len(x) * args.num_samples * 8 * (0 if args.no_log_weights else 2)
                 + args.num_samples * x.shape[-1] * 4 * 4,
                 f"evaluate with K={args.num_samples} on {len(x)} points",
                 "use a smaller --num-samples, --max-points, or --no-log-weights")
    x = x.to(next(run.model.parameters()).device)
    name = f"{Path(args.run_dir).name} ({args.split}, {run.config.get('dataset', '?')})"
    report = evaluate(run.model, x, num_samples=args.num_samples, seed=args.seed, batch_size=args.batch_size,
                      keep_log_weights=not args.no_log_weights, name=name, fast=args.fast,
                      progress=not args.no_progress and sys.stderr.isatty())
    paths = report.save(out)
    import matplotlib

    matplotlib.use("Agg")
    from .plots import save_report_figures

    paths.update(save_report_figures(report, out))
    s = report.summary
    print(f"{name}: {s['n']} points, K={s['num_samples']} importance samples, seed {s['seed']}, "
          f"{s['seconds']:.1f} s ({s['points_per_second']:.0f} points/s)")
    print("values in nats per data point; se = standard error over points\n")
    print(report.format_table())
    print("\nk-hat: < 0.5 good, 0.5-0.7 usable, > 0.7 the IW estimate is unreliable for that point")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


# ---------------------------------------------------------------- plot
PLOT_KINDS = ["latent", "recon", "samples", "interpolate", "curves", "overview", "khat", "gap"]


def _add_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="draw a run's figures as PNGs (latent map, reconstructions, samples, ...)",
                       description="Draw figures of a trained run: latent map (PCA when d > 2), reconstructions, "
                                   "prior samples (VAE only), an interpolation, training curves; for 2-D data "
                                   "an overview scatter; khat/gap run the importance-weighted evaluation first.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by `ppl-vae train`")
    p.add_argument("--kind", nargs="+", default=["all"], choices=[*PLOT_KINDS, "all"],
                   help="which figures (default all: latent, recon, samples, interpolate, curves, and overview "
                        "for 2-D data)")
    p.add_argument("--out", default=None, help="folder for the PNGs (default: RUN_DIR)")
    p.add_argument("--force", action="store_true", help="replace PNGs that already exist")
    p.add_argument("--num-samples", type=_positive_int, default=1000,
                   help="importance samples per test point for --kind khat/gap (default 1000)")
    p.set_defaults(func=_cmd_plot)


def _cmd_plot(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from .plots import plot_run

    out = Path(args.out) if args.out is not None else Path(args.run_dir)
    kinds = PLOT_KINDS[:6] if "all" in args.kind else args.kind
    if args.out is not None or Path(args.run_dir).is_dir():
        _refuse_outputs(out, [f"{k}.png" for k in kinds], args.force, "--out" if args.out is not None else "RUN_DIR")
    skipped: list[str] = []
    paths = plot_run(args.run_dir, args.kind, args.out, num_samples=args.num_samples, skipped=skipped)
    for path in paths:
        print(f"wrote {path}")
    for reason in skipped:
        print(f"skipped {reason}")
    return 0


# ---------------------------------------------------------------- sample
def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="draw from a trained VAE's prior and decode (PNG grid or .npy array)",
                       description="Draw z ~ N(0, I), decode to the mean of p(x | z), and write an image grid or "
                                   "scatter (.png) or the (n, D) array (.npy). Autoencoders have no prior.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by `ppl-vae train`")
    p.add_argument("-n", "--num", type=_positive_int, default=64, help="number of samples (default 64)")
    p.add_argument("--out", required=True, help="FILE.png (a picture) or FILE.npy (the decoded means, (n, D)); "
                                                "refused if it exists, unless --force")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the draws of z")
    p.set_defaults(func=_cmd_sample)


def _cmd_sample(args: argparse.Namespace) -> int:
    out = check_output_path(args.out, "--out", kind="file", force=args.force)
    if out.suffix.lower() not in (".png", ".npy"):
        raise UserError(f"--out must end in .png or .npy; got {str(out)!r}")
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    import torch

    from .plots import can_sample, model_label, plot_samples
    from .runs import load_run

    run = load_run(args.run_dir)
    if not can_sample(run.model):
        raise UserError(f"{type(run.model).__name__} (run {args.run_dir}) has no prior over its code, so it "
                        "cannot be sampled; only --model vae runs can")
    dim = run.data.meta.input_dim
    check_memory(args.num * (dim * 4 * 4 + getattr(run.model, "latent_dim", dim) * 4 * 2),
                 f"sample -n {args.num} (decoded to {dim} values each)", "ask for fewer samples")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".npy":
        gen = torch.Generator().manual_seed(args.seed)
        from .runs.files import write_bytes

        buf = io.BytesIO()
        np.save(buf, run.model.sample(args.num, generator=gen).cpu().numpy())
        write_bytes(out, buf.getvalue())
    else:
        name = f"run {Path(args.run_dir).resolve().name}: {model_label(run.model)}, {run.data.meta.name}"
        plot_samples(run.model, run.data, n=args.num, seed=args.seed, name=name, path=out)
    print(f"wrote {args.num} samples to {out}")
    return 0


# ---------------------------------------------------------------- the sub-command table
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_train,
    _add_demo,
    _add_compare,
    _add_evaluate,
    _add_plot,
    _add_sample,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppl-vae",
        description="Variational autoencoders as Pyro programs: train, evaluate, compare, plot.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command; 0 on success, 2 for a user error, 1 for a bug, 130 on Ctrl-C."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        message = " ".join(str(err).split())  # one line
        print(f"ppl-vae {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ppl-vae {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print(f"ppl-vae {args.command}: internal error: this is a bug in ppl_vae (or a library it calls), not "
              "something you did; please report it with the traceback above", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
