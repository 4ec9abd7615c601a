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
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence

from ..errors import UserError
from .results import add_compare, add_evaluate, add_plot, add_sample
from .train import add_demo, add_train

# ---------------------------------------------------------------- the sub-command table
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_train,
    add_demo,
    add_compare,
    add_evaluate,
    add_plot,
    add_sample,
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


def _warning_line(command: str):
    """``warnings.formatwarning`` for the command line: one line naming the command, no source line."""

    def format_warning(message, category, filename, lineno, line=None) -> str:
        return f"ppl-vae {command}: warning: {' '.join(str(message).split())}\n"

    return format_warning


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command; 0 on success, 2 for a user error, 1 for a bug, 130 on Ctrl-C."""
    parser = build_parser()
    args = parser.parse_args(argv)
    formatwarning = warnings.formatwarning
    warnings.formatwarning = _warning_line(args.command)
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
        print(
            f"ppl-vae {args.command}: internal error: this is a bug in ppl_vae (or a library it calls), not "
            "something you did; please report it with the traceback above",
            file=sys.stderr,
        )
        return 1
    finally:
        warnings.formatwarning = formatwarning
