"""Argument types and the flag groups the sub-commands share; output checks made before any work."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from pathlib import Path

from .._checks import check_output_path
from ..errors import ResourceError, RunExistsError, UserError
from ..registry import REGISTRY
from ..runs.flags import UNSET
from ..store.files import refuse_links
from ..store.lock import LOCK_FILE
from ..store.outputs import check_replaceable, describe_output_set


def hidden_dims(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(t) for t in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"hidden dims are integers like '256' or '400,400'; got {text!r}"
        ) from None
    if not dims or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"hidden dims must be positive integers; got {text!r}")
    return dims


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive whole number written in digits (e.g. 64); got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {value}")
    return value


def seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a seed is a whole number in [0, 2**32); got {text!r}"
        ) from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"a seed is a whole number in [0, 2**32); got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number; got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive finite number; got {text!r}")
    return value


def names(text: str) -> list[str]:
    return [t for t in text.replace(",", " ").split() if t]


def add_data_args(p: argparse.ArgumentParser, plain: bool = False) -> None:
    """Data flags; ``plain``: with their defaults (else UNSET, so --resume can tell "not given")."""
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        default="digits" if plain else UNSET,
        help=f"a registered dataset: {REGISTRY.help_text('dataset')} (default digits, shipped with "
        "scikit-learn), or a path to a .csv/.npy file",
    )
    g.add_argument(
        "--data-dir",
        default=None if plain else UNSET,
        help="folder with the MNIST-format IDX .gz files (else $PPL_VAE_DATA)",
    )
    g.add_argument(
        "--binarize",
        default="auto" if plain else UNSET,
        choices=["auto", "dynamic", "static", "none"],
        help="auto (default): dynamic for a Bernoulli likelihood, none otherwise; dynamic draws fresh "
        "{0,1} pixels each epoch, static draws once (seeded)",
    )
    g.add_argument(
        "--n-samples",
        type=positive_int,
        default=None if plain else UNSET,
        help="use only the first N training points (quick runs)",
    )


def column_setting(text: str) -> tuple[str, str]:
    """``COLUMN=VALUE`` split at the first ``=`` (a spec's own options may hold more: visits=zinb:k=2)."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected COLUMN=VALUE, e.g. visits=count; got {text!r}")
    return name.strip(), value.strip()


def add_table_args(p: argparse.ArgumentParser) -> None:
    """The flags of a table read from a CSV: column types, a family per column, standardisation."""
    g = p.add_argument_group("tables (--dataset csv:PATH)")
    g.add_argument(
        "--column-type",
        action="append",
        type=column_setting,
        default=None,
        metavar="COL=TYPE",
        help="declare a column's type instead of the inferred one: real, positive, count, binary, "
        "categorical, or ignore / id (left out); repeat for several, e.g. --column-type visits=count",
    )
    g.add_argument(
        "--column-likelihood",
        action="append",
        type=column_setting,
        default=None,
        metavar="COL=SPEC",
        help="the family of one column instead of its type's default (real gaussian, positive lognormal, "
        "count negbin, binary bernoulli, categorical categorical), e.g. visits=zinb or visits=poisson",
    )
    g.add_argument(
        "--standardize",
        action="store_const",
        const=True,
        default=UNSET,
        help="z-score the real columns (positive ones on the log scale) with the train mean and std; the "
        "table likelihoods do this for their networks anyway and report log p(x) in your units, but a "
        "plain --likelihood or your own --program then sees standardised values",
    )


def column_settings(given: object, flag: str) -> object:
    """A list of ``(column, value)`` from a repeated flag -> ``{column: value}`` (a column given twice is an
    error); not given (None) is UNSET."""
    if given is None:
        return UNSET
    out: dict[str, str] = {}
    for name, value in given:  # type: ignore[attr-defined]
        if name in out and out[name] != value:
            raise UserError(f"{flag}: column {name!r} given twice ({out[name]} and {value})")
        out[name] = value
    return out


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number in (0, 1], e.g. 0.1; got {text!r}"
        ) from None
    if not (math.isfinite(value) and 0 < value <= 1):
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], e.g. 0.1; got {text!r}")
    return value


def add_model_args(p: argparse.ArgumentParser, plain: bool = False, programs: bool = False) -> None:
    """Model flags; ``programs``: also the guide family, the nets and M2's labelled fraction (train)."""
    g = p.add_argument_group("model")
    g.add_argument(
        "--latent-dim",
        type=positive_int,
        default=8 if plain else UNSET,
        help="size d of the latent code (default 8; not for --model hvae, whose sizes are fixed)",
    )
    g.add_argument(
        "--hidden-dims",
        type=hidden_dims,
        default=(256,) if plain else UNSET,
        help="encoder hidden widths, e.g. '256' (default) or '400,400'; the decoder mirrors them "
        "(not for --model hvae)",
    )
    g.add_argument(
        "--likelihood",
        default="auto" if plain else UNSET,
        help=f"p(x | z), a spec name[:key=value]: {REGISTRY.help_text('likelihood')}; auto (default): "
        "bernoulli for images, a family per column for a CSV table (by its column types; "
        "--column-likelihood to choose some), gaussian otherwise",
    )
    g.add_argument(
        "--activation",
        default="relu" if plain else UNSET,
        help="hidden non-linearity: relu (default; tanh for --model hvae), tanh, softplus, elu, gelu",
    )
    if not programs:
        return
    g.add_argument(
        "--guide",
        default=UNSET,
        metavar="FAMILY",
        help="the variational family q(z | x) of --model vae, a spec such as fullrank or iaf:n=K "
        f"(default meanfield): {REGISTRY.help_text('guide', docs=True)}",
    )
    g.add_argument(
        "--nets",
        default=UNSET,
        choices=["mlp", "conv"],
        help="the networks of --model vae: mlp (default; dense layers) or conv (convolutions over the "
        "image, then --hidden-dims dense layers; image datasets)",
    )
    g.add_argument(
        "--prior",
        default=UNSET,
        metavar="PRIOR",
        help="p(z) of --model vae, a spec such as mog:k=10 or vamp:k=50 (default standard_normal): "
        f"{REGISTRY.help_text('prior', docs=True)}",
    )
    g.add_argument(
        "--labelled-fraction",
        type=fraction,
        default=UNSET,
        metavar="F",
        help="--model m2: the share of training points that keep their label, in (0, 1] (default 0.1; "
        "a seeded draw); the test split is scored unlabelled",
    )


def add_fit_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training (on --resume: the recorded values unless given)")
    g.add_argument(
        "--objective",
        default=UNSET,
        help="a spec name[:key=value,...] such as 'analytic:particles=2' or 'iwae:k=5' (default "
        "analytic; enum is the default for --model m2, which sums its class label out; m2 refuses "
        f"analytic and iwae): {REGISTRY.help_text('objective', docs=True)}",
    )
    g.add_argument(
        "--epochs",
        type=positive_int,
        default=UNSET,
        help="number of epochs (default 20); with --resume: this many more (default: up to the "
        "number the run was asked for)",
    )
    g.add_argument(
        "--batch-size", type=positive_int, default=UNSET, help="mini-batch size (default 128)"
    )
    g.add_argument(
        "--lr", type=positive_float, default=UNSET, help="Adam learning rate (default 1e-3)"
    )
    g.add_argument(
        "--seed",
        type=seed,
        default=UNSET,
        help="seeds the split, binarisation, initialisation and SVI (default 0)",
    )
    g.add_argument("--device", default=UNSET, help="auto (default; CUDA when present), cpu or cuda")
    g.add_argument(
        "--time-budget",
        type=positive_float,
        default=None,
        help="stop after the epoch in which this many seconds of training have passed",
    )
    g.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def refuse_nonempty(path: Path, what: str, force: bool) -> None:
    if path.is_dir() and any(p.name != LOCK_FILE for p in path.iterdir()) and not force:
        raise RunExistsError(
            f"{what}: {str(path)!r} exists and is not empty: choose another folder, or pass "
            "--force to write into it (replacing the files this command writes)"
        )


def refuse_outputs(folder: Path, names: Sequence[str], force: bool, what: str) -> None:
    """Before any work: ``folder`` writable, and none of ``names`` in it unless ``force``."""
    try:
        check_output_path(folder, what)
    except ResourceError as err:
        if what != "RUN_DIR":
            raise
        raise ResourceError(
            f"{err}; or write the outputs elsewhere with --out OTHER_FOLDER"
        ) from None
    refuse_links(folder, names, what)  # even with --force: a link is never written through
    present = [n for n in names if os.path.lexists(folder / n)]
    for name in present:
        if (folder / name).is_dir():  # an output set: ours, and nothing of the user's inside
            check_replaceable(folder / name)
    if present and not force:
        shown = [describe_output_set(folder, n) if (folder / n).is_dir() else n for n in present]
        raise RunExistsError(
            f"{folder} already holds {', '.join(shown)}: pass --force to replace "
            f"{'them' if len(present) > 1 else 'it'}, or --out OTHER_FOLDER to write elsewhere"
        )
