"""``ppl-vae plot | sample``: figures and samples of a run; outputs checked (and never silently replaced) first."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from .._checks import check_memory, check_output_path
from ..errors import UserError
from ..store.lock import lock_folder
from .args import (
    positive_int,
    refuse_outputs,
    seed,
)

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
        description="Draw z ~ N(0, I) and x ~ p(x | z) (--mean: its means), and write an image grid or "
        "scatter (.png), the (n, D) array (.npy) or, for a table run, a CSV with the table's column names, "
        "levels and original units (.csv). Autoencoders have no prior.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by `ppl-vae train`")
    p.add_argument(
        "-n", "--num", type=positive_int, default=64, help="number of samples (default 64)"
    )
    p.add_argument(
        "--out",
        required=True,
        help="FILE.png (a picture), FILE.npy (the (n, D) draws in model space) or FILE.csv (a table run: "
        "the draws in the table's columns, levels and units); refused if it exists, unless --force",
    )
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--seed", type=seed, default=0, help="seed of the draws of z")
    p.add_argument(
        "--mean",
        action="store_true",
        help="write the means of p(x | z) instead of draws from it (.npy and .csv)",
    )
    p.set_defaults(func=_cmd_sample)


def _cmd_sample(args: argparse.Namespace) -> int:
    out = check_output_path(args.out, "--out", kind="file", force=args.force)
    if out.suffix.lower() not in (".png", ".npy", ".csv"):
        raise UserError(f"--out must end in .png, .npy or .csv; got {str(out)!r}")
    from ..store.lock import lock_outputs

    # one writer per folder: a second sample, plot or train there is refused
    with lock_outputs(out):
        return _sample(args, out)


def _sample(args: argparse.Namespace, out: Path) -> int:
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
    gen = torch.Generator().manual_seed(args.seed)
    if out.suffix.lower() == ".csv":
        if getattr(run.model, "schema", None) is None:
            raise UserError(
                f"--out {out.name}: a CSV needs a run trained on a table (csv:PATH or a DataFrame); "
                f"run {args.run_dir} has no columns: write .npy or .png"
            )
        frame = run.model.sample_frame(args.num, generator=gen, mean=args.mean)
        data = frame.to_csv(index=False).encode("utf-8")
    elif out.suffix.lower() == ".npy":
        buf = io.BytesIO()
        extra = {"mean": True} if args.mean else {}  # an M2 model's samples are already means
        np.save(buf, run.model.sample(args.num, generator=gen, **extra).cpu().numpy())
        data = buf.getvalue()
    else:
        name = f"run {Path(args.run_dir).resolve().name}: {model_label(run.model)}, {run.data.meta.name}"
        data = png_bytes(plot_samples(run.model, run.data, n=args.num, seed=args.seed, name=name))
    # one file, written beside and renamed in; without --force a file that appeared meanwhile is kept
    write_bytes(out, data, replace=args.force)
    print(f"wrote {args.num} samples to {out}")
    return 0
