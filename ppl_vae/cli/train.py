"""``ppl-vae train`` and ``ppl-vae demo``: a run folder per training run (see :mod:`ppl_vae.runs`)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .._checks import check_output_path
from ..errors import UserError
from ..registry import REGISTRY
from ..runs.flags import AUTOENCODERS, UNSET, VAE_MODELS
from ..runs.settings import OVERRIDABLE
from .args import (
    add_data_args,
    add_fit_args,
    add_model_args,
    add_table_args,
    column_settings,
    names,
    positive_int,
    seed,
)


# ---------------------------------------------------------------- train
def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a VAE (or hvae, m2, an autoencoder) into a run folder",
        description="Train a VAE by SVI into the run folder --out: settings.json (what the run "
        "started with), checkpoint/ (committed after every epoch, with the history), "
        "metrics.json and metrics.csv (per-epoch train/test ELBO, nats per point).",
    )
    p.add_argument(
        "--out",
        required=True,
        help="run folder to create (refused if it exists and is not empty, unless --resume)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out with its recorded settings (a killed run, or for --epochs more)",
    )
    p.add_argument(
        "--override",
        action="append",
        type=names,
        default=[],
        metavar="NAME",
        help="with --resume: let the given flag change a recorded setting "
        f"({', '.join(n.replace('_', '-') for n in OVERRIDABLE)}; either spelling); "
        "recorded in settings.json and in the history, e.g. --override lr --lr 3e-4",
    )
    p.add_argument(
        "--log",
        action="append",
        choices=["tensorboard", "mlflow"],
        default=None,
        help="also log to tensorboard (event files in OUT/tensorboard; needs ppl_vae[tensorboard]) or "
        "mlflow (settings, per-epoch metrics and the run folder, to MLFLOW_TRACKING_URI or a local "
        "store in the working directory; needs ppl_vae[mlflow]); repeat for both",
    )
    p.add_argument(
        "--model",
        default=UNSET,
        choices=["vae", "hvae", "m2", "ae", "dae", "sae", "cae"],
        help="trained by SVI (default vae; --guide and --nets for vae, --labelled-fraction of the "
        "training labels kept for m2, whose objective is enum unless given): "
        f"{REGISTRY.help_text('model', VAE_MODELS, docs=True)}; "
        "or a deterministic autoencoder on the same data: ae (vanilla), dae "
        "(denoising), sae (sparse), cae (contractive); autoencoders define no likelihood, so their "
        "history is a reconstruction error, not an ELBO",
    )
    p.add_argument(
        "--program",
        default=UNSET,
        metavar="MODULE:NAME",
        help="train your own Pyro program: a class or factory (e.g. my_vaes:ConvVAE, imported from the "
        "current folder or the Python path) returning an object with .model/.guide; recorded in the run "
        "folder, rebuilt by --resume and evaluate",
    )
    p.add_argument(
        "--program-args",
        default=UNSET,
        metavar="JSON",
        help="keyword arguments for --program as a JSON object, e.g. '{\"z_dim\": 4}'",
    )
    add_data_args(p)
    add_table_args(p)
    add_model_args(p, programs=True)
    g = p.add_argument_group("autoencoders (--model ae|dae|sae|cae)")
    g.add_argument(
        "--reconstruction",
        default=None,
        choices=["auto", "bce", "mse"],
        help="reconstruction error: bce (data in [0, 1]) or mse; auto: bce for images, mse otherwise",
    )
    g.add_argument(
        "--noise",
        default=None,
        choices=["gaussian", "mask"],
        help="dae corruption: gaussian (x + sigma*eps, default) or mask (zero with probability --mask-prob)",
    )
    g.add_argument(
        "--sigma",
        type=float,
        default=None,
        help="dae: std of the Gaussian corruption (default 0.3)",
    )
    g.add_argument(
        "--mask-prob", type=float, default=None, help="dae: masking probability (default 0.25)"
    )
    g.add_argument(
        "--rho",
        type=float,
        default=None,
        help="sae: target mean activation of the code (default 0.05)",
    )
    g.add_argument(
        "--lam",
        type=float,
        default=None,
        help="sae/cae: penalty weight (defaults: sae 1.0, cae 0.1)",
    )
    add_fit_args(p)
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from ..runs import train_run
    from ..store.lock import is_main_process

    if args.model in AUTOENCODERS and (args.objective is not UNSET or args.likelihood is not UNSET):
        raise UserError(
            f"--objective and --likelihood are for --model vae; --model {args.model} is trained on "
            "its reconstruction error (choose it with --reconstruction)"
        )
    ae_options = {
        "reconstruction": args.reconstruction,
        "noise": args.noise,
        "sigma": args.sigma,
        "p": args.mask_prob,
        "rho": args.rho,
        "lam": args.lam,
    }
    run = train_run(
        args.out,
        dataset=args.dataset,
        objective=args.objective,
        latent_dim=args.latent_dim,
        hidden_dims=args.hidden_dims,
        likelihood=args.likelihood,
        activation=args.activation,
        binarize=args.binarize,
        data_dir=args.data_dir,
        n_samples=args.n_samples,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        resume=args.resume,
        progress=not args.no_progress,
        time_budget=args.time_budget,
        model=args.model,
        ae_options=ae_options,
        override=[n for group in args.override for n in group],
        log=args.log if args.log else UNSET,
        guide=args.guide,
        nets=args.nets,
        prior=args.prior,
        labelled_fraction=args.labelled_fraction,
        program=args.program,
        program_args=args.program_args,
        column_types=column_settings(args.column_type, "--column-type"),
        column_likelihood=column_settings(args.column_likelihood, "--column-likelihood"),
        standardize=args.standardize,
        report=print,
    )
    if is_main_process():  # under torchrun, one report (rank 0 wrote the files)
        _print_history(run.history)
        out = Path(args.out)
        if run.trained == 0:
            print(
                f"nothing to train: {out} already has the {len(run.history)} epochs it was asked for (pass "
                "--epochs N to train N more); its metrics are up to date"
            )
            return 0
        print(
            f"wrote {out / 'metrics.json'}, {out / 'metrics.csv'} and {out / 'checkpoint'} "
            f"(settings in {out / 'settings.json'})"
        )
    return 0


def _print_history(history: Sequence[dict]) -> None:
    def cell(value: object, width: int, fmt: str) -> str:
        return f"{'-' if value is None else format(value, fmt):>{width}}"

    ae = (
        bool(history) and "train_loss" in history[0]
    )  # an autoencoder: reconstruction error, no ELBO
    train, test = ("train_loss", "test_loss") if ae else ("train_elbo", "test_elbo")
    fmt = ".3f"
    print(
        f"{'epoch':>5}  {'train loss' if ae else 'train ELBO':>11}  {'test recon' if ae else 'test ELBO':>10}  "
        f"{'seconds':>7}"
    )
    for r in history:
        note = (
            "  override: "
            + ", ".join(f"{k} {v['from']} -> {v['to']}" for k, v in r["override"].items())
            if r.get("override")
            else ""
        )
        print(
            f"{r['epoch']:>5}  {cell(r.get(train), 11, fmt)}  {cell(r.get(test), 10, fmt)}  "
            f"{cell(r.get('seconds'), 7, '.2f')}{note}"
        )


# ---------------------------------------------------------------- demo
def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the main job: a VAE on digits with both ELBOs, side by side",
        description="Train a VAE on scikit-learn's digits (dynamic binarisation) with Trace_ELBO "
        "and TraceMeanField_ELBO for the same fixed budget, and print a table. Writes "
        "OUT/trace and OUT/analytic; if either exists, writes beside OUT under a new "
        "name (OUT-2, ...) instead.",
    )
    p.add_argument(
        "--out", default="runs/demo", help="where the run folders go (default runs/demo)"
    )
    p.add_argument(
        "--epochs", type=positive_int, default=60, help="epochs per objective (default 60)"
    )
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_demo)


def _free_demo_folder(out: Path) -> Path:
    """``out`` if neither run folder exists in it, else the first free ``out-2``, ``out-3``, ..."""

    def taken(p: Path) -> bool:
        return p.exists() and (
            not p.is_dir() or (p / "trace").exists() or (p / "analytic").exists()
        )

    if not taken(out):
        return out
    k = 2
    while taken(out.with_name(f"{out.name}-{k}")):
        k += 1
    return out.with_name(f"{out.name}-{k}")


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..runs import train_run

    asked = check_output_path(args.out, "--out")
    out = _free_demo_folder(asked)
    if out != asked:
        print(
            f"{asked} already holds a demo (or something else): writing this one into {out} instead; "
            f"nothing in {asked} was changed",
            file=sys.stderr,
        )
    check_output_path(out, "--out")
    rows = []
    for objective in ("trace", "analytic"):
        t0 = time.perf_counter()
        run = train_run(
            out / objective,
            dataset="digits",
            objective=objective,
            epochs=args.epochs,
            seed=args.seed,
            device=args.device,
            progress=sys.stderr.isatty(),
        )
        rows.append(
            (
                objective,
                run.history[0]["test_elbo"],
                run.history.final_test_elbo,
                time.perf_counter() - t0,
                str(out / objective),
            )
        )
    print(
        "VAE on digits (8x8, dynamic binarisation), d=8, MLP 64-256-8, Bernoulli likelihood, "
        f"{args.epochs} epochs, seed {args.seed}"
    )
    print("test ELBO: nats per test point, closed-form KL, one sample of z per point\n")
    print(
        f"{'objective':<10} {'estimator':<22} {'test ELBO ep1':>13} {'test ELBO':>10} {'seconds':>8}  run folder"
    )
    names = {"trace": "Trace_ELBO", "analytic": "TraceMeanField_ELBO"}
    for objective, first, last, secs, folder in rows:
        print(
            f"{objective:<10} {names[objective]:<22} {first:>13.3f} {last:>10.3f} {secs:>8.1f}  {folder}"
        )
    return 0
