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
    _add_data_args(p)
    _add_model_args(p)
    _add_fit_args(p, objective_default=None)
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from .runs import train_run

    objective = args.objective if (args.objective or not args.resume) else None
    run = train_run(
        args.out, dataset=args.dataset, objective=objective or "analytic", latent_dim=args.latent_dim,
        hidden_dims=args.hidden_dims, likelihood=args.likelihood, activation=args.activation,
        binarize=args.binarize, data_dir=args.data_dir, n_samples=args.n_samples, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device, resume=args.resume,
        progress=not args.no_progress, time_budget=args.time_budget,
    )
    _print_history(run.history)
    print(f"wrote {Path(args.out) / 'metrics.json'} and {Path(args.out) / 'checkpoint'}")
    return 0


def _print_history(history: Sequence[dict]) -> None:
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


# ---------------------------------------------------------------- the sub-command table
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_train,
    _add_demo,
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
