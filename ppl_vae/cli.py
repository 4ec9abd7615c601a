"""The ``ppl-vae`` command line: thin sub-commands over the library's functions.

    ppl-vae train     --dataset digits --objective analytic --epochs 20 --out runs/a
    ppl-vae evaluate  runs/a --num-samples 1000
    ppl-vae demo

User errors (bad data, unknown names, a run folder that would be overwritten, a
corrupt checkpoint, a diverged loss) print one line on stderr and exit with
status 2; no traceback. Also runnable as ``python -m ppl_vae.cli``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .checkpoint import CheckpointError
from .train import TrainingDiverged

USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, CheckpointError, TrainingDiverged)


def _hidden(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(t) for t in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"hidden dims are integers like '256' or '400,400'; got {text!r}") from None
    if any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"hidden dims must be positive; got {text!r}")
    return dims


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {value}")
    return value


def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="digits",
                   help="digits (default, shipped with scikit-learn), three_clusters, two_moons, mnist, "
                        "fashion_mnist, or a path to a .csv/.npy file")
    g.add_argument("--data-dir", default=None,
                   help="folder with the MNIST-format IDX .gz files (else $PPL_VAE_DATA)")
    g.add_argument("--binarize", default="auto", choices=["auto", "dynamic", "static", "none"],
                   help="auto: dynamic for a Bernoulli likelihood, none otherwise; dynamic draws fresh "
                        "{0,1} pixels each epoch, static draws once (seeded)")
    g.add_argument("--n-samples", type=_positive_int, default=None,
                   help="use only the first N training points (quick runs)")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--latent-dim", type=_positive_int, default=8, help="size d of the latent code (default 8)")
    g.add_argument("--hidden-dims", type=_hidden, default=(256,),
                   help="encoder hidden widths, e.g. '256' or '400,400'; the decoder mirrors them")
    g.add_argument("--likelihood", default="auto",
                   help="bernoulli, continuous_bernoulli, gaussian, gaussian:scale=S; auto: bernoulli for "
                        "images, gaussian otherwise")
    g.add_argument("--activation", default="relu", help="hidden non-linearity: relu, tanh, softplus, elu, gelu")


def _add_fit_args(p: argparse.ArgumentParser, objective_default: str | None = "analytic") -> None:
    g = p.add_argument_group("training")
    g.add_argument("--objective", default=objective_default,
                   help="trace (Trace_ELBO), analytic (TraceMeanField_ELBO, closed-form KL), or another "
                        "registered name with parameters, e.g. 'analytic:particles=2'")
    g.add_argument("--epochs", type=_positive_int, default=20, help="number of epochs (default 20)")
    g.add_argument("--batch-size", type=_positive_int, default=128, help="mini-batch size (default 128)")
    g.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    g.add_argument("--seed", type=int, default=0, help="seeds the split, binarisation, initialisation and SVI")
    g.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    g.add_argument("--time-budget", type=float, default=None, help="stop after this many seconds of training")
    g.add_argument("--no-progress", action="store_true", help="hide the progress bar")


# ---------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a VAE by SVI and write a run folder",
                       description="Train a VAE by SVI. Writes OUT/metrics.json (per-epoch train/test ELBO, "
                                   "nats per point) and OUT/checkpoint/ (safetensors + JSON).")
    p.add_argument("--out", required=True, help="run folder to create (refused if it already holds a run)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint for --epochs more epochs")
    p.add_argument("--model", default="vae", choices=["vae", "ae", "dae", "sae", "cae"],
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
    _add_fit_args(p, objective_default=None)
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from .runs import train_run

    objective = args.objective if (args.objective or not args.resume) else None
    if args.model != "vae" and (args.objective is not None or args.likelihood != "auto"):
        raise ValueError(f"--objective and --likelihood are for --model vae; --model {args.model} is trained on "
                         "its reconstruction error (choose it with --reconstruction)")
    ae_options = {"reconstruction": args.reconstruction, "noise": args.noise, "sigma": args.sigma,
                  "p": args.mask_prob, "rho": args.rho, "lam": args.lam}
    run = train_run(
        args.out, dataset=args.dataset, objective=objective or "analytic", latent_dim=args.latent_dim,
        hidden_dims=args.hidden_dims, likelihood=args.likelihood, activation=args.activation,
        binarize=args.binarize, data_dir=args.data_dir, n_samples=args.n_samples, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device, resume=args.resume,
        progress=not args.no_progress, time_budget=args.time_budget, model=args.model, ae_options=ae_options,
    )
    from .distributed import is_main_process

    if is_main_process():  # under torchrun, one report (rank 0 wrote the files)
        _print_history(run.history)
        print(f"wrote {Path(args.out) / 'metrics.json'} and {Path(args.out) / 'checkpoint'}")
    return 0


def _print_history(history: Sequence[dict]) -> None:
    if history and "train_loss" in history[0]:  # an autoencoder: reconstruction error, no ELBO
        print(f"{'epoch':>5}  {'train loss':>11}  {'test recon':>10}  {'seconds':>7}")
        for r in history:
            test = r.get("test_loss")
            print(f"{r['epoch']:>5}  {r['train_loss']:>11.3f}  {test if test is None else format(test, '10.3f'):>10}  "
                  f"{r['seconds']:>7.2f}")
        return
    print(f"{'epoch':>5}  {'train ELBO':>11}  {'test ELBO':>10}  {'seconds':>7}")
    for r in history:
        test = r.get("test_elbo")
        print(f"{r['epoch']:>5}  {r['train_elbo']:>11.3f}  {test if test is None else format(test, '10.3f'):>10}  "
              f"{r['seconds']:>7.2f}")


# ---------------------------------------------------------------- demo
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job: a VAE on digits with both ELBOs, side by side",
                       description="Train a VAE on scikit-learn's digits (dynamic binarisation) with Trace_ELBO "
                                   "and TraceMeanField_ELBO for the same fixed budget, and print a table.")
    p.add_argument("--out", default="runs/demo", help="where the run folders go (default runs/demo)")
    p.add_argument("--epochs", type=_positive_int, default=60, help="epochs per objective (default 60)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .runs import train_run

    rows = []
    for objective in ("trace", "analytic"):
        out = Path(args.out) / objective
        if (out / "checkpoint" / "config.json").exists():
            import shutil

            shutil.rmtree(out)  # the demo's own folders are scratch: re-running replaces them
        t0 = time.perf_counter()
        run = train_run(out, dataset="digits", objective=objective, epochs=args.epochs, seed=args.seed,
                        device=args.device, progress=sys.stderr.isatty())
        rows.append((objective, run.history[0]["test_elbo"], run.history.final_test_elbo,
                     time.perf_counter() - t0, str(out)))
    print("VAE on digits (8x8, dynamic binarisation), d=8, MLP 64-256-8, Bernoulli likelihood, "
          f"{args.epochs} epochs, seed {args.seed}")
    print("test ELBO: nats per test point, closed-form KL, one sample of z per point\n")
    print(f"{'objective':<10} {'estimator':<22} {'test ELBO ep1':>13} {'test ELBO':>10} {'seconds':>8}  run folder")
    names = {"trace": "Trace_ELBO", "analytic": "TraceMeanField_ELBO"}
    for objective, first, last, secs, out in rows:
        print(f"{objective:<10} {names[objective]:<22} {first:>13.3f} {last:>10.3f} {secs:>8.1f}  {out}")
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
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds (split, init, SVI); default 0")
    p.add_argument("--epochs", type=_positive_int, default=20, help="epochs per run (default 20)")
    p.add_argument("--num-samples", type=_positive_int, default=1000,
                   help="K importance samples per test point for every evaluation (default 1000)")
    p.add_argument("--eval-seed", type=int, default=0, help="seed of every evaluation (default 0)")
    p.add_argument("--reference", default=None, help="method for paired differences (default: the first)")
    p.add_argument("--out", required=True, help="folder for the CSVs, netCDF and PNG")
    p.add_argument("--batch-size", type=_positive_int, default=128, help="mini-batch size (default 128)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="torch CPU threads (1 is fastest for small models on a busy machine)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    _add_data_args(p)
    _add_model_args(p)
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    import pandas as pd

    from .compare import run_comparison
    from .objectives import parse_objective

    for method in args.methods:
        parse_objective(method)  # unknown names or parameters: exit 2 listing the valid ones
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
    paths = result.save(args.out)
    k = args.num_samples
    cols = ["method", "seed", "test_elbo", "test_iw_log_likelihood", "gap", "khat_share_above_0.7",
            "active_units", "kl_per_dim_mean", "reconstruction_error", "seconds_per_epoch"]
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 3):
        print(f"{args.dataset}: {len(args.methods)} methods x {len(args.seeds)} seeds, {args.epochs} epochs; "
              f"test set, nats per point, IW with K={k}")
        print(result.table[cols].to_string(index=False))
        paired = result.paired()
        overall = paired[paired["level"] == "all"][["method", "reference", "metric", "mean_diff", "se_points",
                                                    "se_seeds", "n_seeds"]]
        if len(overall):
            print("\npaired differences (method - reference), per test point, averaged over seeds:")
            print(overall.to_string(index=False))
    print("\nwrote " + ", ".join(str(p) for p in paths.values()))
    return 0


# ---------------------------------------------------------------- evaluate
def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="ELBO, importance-weighted log p(x), PSIS k-hat for a trained run",
                       description="Evaluate a run folder on its own data split: per-point ELBO and "
                                   "importance-weighted log p(x) (nats per point), their gap, PSIS k-hat and "
                                   "ESS, active units, KL per latent dimension. Writes evaluation.json "
                                   "(summary), evaluation.csv (per point), evaluation.nc (ArviZ), khat.png "
                                   "and gap_hist.png.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by `ppl-vae train`")
    p.add_argument("--num-samples", "-k", type=_positive_int, default=1000,
                   help="importance samples K per point (default 1000; >= 100 for a trustworthy k-hat)")
    p.add_argument("--split", choices=["test", "train"], default="test", help="which split to evaluate (default test)")
    p.add_argument("--seed", type=int, default=0, help="seed of the importance samples (default 0)")
    p.add_argument("--batch-size", type=_positive_int, default=None,
                   help="points per model call (default: about 4096 / K, at least 1)")
    p.add_argument("--max-points", type=_positive_int, default=None, help="evaluate only the first N points")
    p.add_argument("--fast", choices=["auto", "compile", "eager"], default="auto",
                   help="auto (default): compile the importance-sampling chunk with torch.compile when N x K is "
                        "at least 2 million; compile: always; eager: never (same numbers up to float rounding)")
    p.add_argument("--no-log-weights", action="store_true",
                   help="leave the (N, K) log weights out of evaluation.nc (4 N K bytes otherwise)")
    p.add_argument("--out", default=None, help="folder for the outputs (default: RUN_DIR)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .diagnostics import evaluate
    from .runs import load_run

    run = load_run(args.run_dir, device=args.device)
    x = run.data.test if args.split == "test" else run.data.train
    if x is None or len(x) == 0:
        raise ValueError(f"the run's {args.split} split is empty: evaluate --split {'train' if args.split == 'test' else 'test'}")
    if args.max_points is not None:
        x = x[: args.max_points]
    x = x.to(next(run.model.parameters()).device)
    name = f"{Path(args.run_dir).name} ({args.split}, {run.config.get('dataset', '?')})"
    report = evaluate(run.model, x, num_samples=args.num_samples, seed=args.seed, batch_size=args.batch_size,
                      keep_log_weights=not args.no_log_weights, name=name, fast=args.fast,
                      progress=not args.no_progress and sys.stderr.isatty())
    paths = report.save(args.out or args.run_dir)
    s = report.summary
    print(f"{name}: {s['n']} points, K={s['num_samples']} importance samples, seed {s['seed']}, "
          f"{s['seconds']:.1f} s ({s['points_per_second']:.0f} points/s)")
    print("values in nats per data point; se = standard error over points\n")
    print(report.format_table())
    print("\nk-hat: < 0.5 good, 0.5-0.7 usable, > 0.7 the IW estimate is unreliable for that point")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


# ---------------------------------------------------------------- plot
def _add_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="draw a run's figures as PNGs (latent map, reconstructions, samples, ...)",
                       description="Draw figures of a trained run: latent map (PCA when d > 2), reconstructions, "
                                   "prior samples (VAE only), an interpolation, training curves; for 2-D data "
                                   "an overview scatter; khat/gap run the importance-weighted evaluation first.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by `ppl-vae train`")
    p.add_argument("--kind", nargs="+", default=["all"],
                   choices=["latent", "recon", "samples", "interpolate", "curves", "overview", "khat", "gap", "all"],
                   help="which figures (default all: latent, recon, samples, interpolate, curves, and overview "
                        "for 2-D data)")
    p.add_argument("--out", default=None, help="folder for the PNGs (default: RUN_DIR)")
    p.add_argument("--num-samples", type=_positive_int, default=1000,
                   help="importance samples per test point for --kind khat/gap (default 1000)")
    p.set_defaults(func=_cmd_plot)


def _cmd_plot(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from .plots import plot_run

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
    p.add_argument("--out", required=True, help="FILE.png (a picture) or FILE.npy (the decoded means, (n, D))")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws of z")
    p.set_defaults(func=_cmd_sample)


def _cmd_sample(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".npy"):
        raise ValueError(f"--out must end in .png or .npy; got {str(out)!r}")
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    import torch

    from .plots import can_sample, model_label, plot_samples
    from .runs import load_run

    run = load_run(args.run_dir)
    if not can_sample(run.model):
        raise ValueError(f"{type(run.model).__name__} (run {args.run_dir}) has no prior over its code, so it "
                         "cannot be sampled; only --model vae runs can")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".npy":
        gen = torch.Generator().manual_seed(args.seed)
        np.save(out, run.model.sample(args.num, generator=gen).cpu().numpy())
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
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as err:
        print(f"ppl-vae {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _json_default(obj: object) -> object:
    return str(obj)


def dump(obj: object) -> str:
    return json.dumps(obj, indent=2, default=_json_default)


if __name__ == "__main__":
    sys.exit(main())
