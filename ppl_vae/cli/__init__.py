"""The ``ppl-vae`` command line: thin sub-commands over the library's functions.

    ppl-vae train     --dataset digits --objective analytic --epochs 20 --out runs/a
    ppl-vae train     --out runs/a --resume                 # a killed run continues
    ppl-vae evaluate  runs/a --num-samples 1000
    ppl-vae check     runs/a -n 100                          # posterior predictive checks
    ppl-vae impute    runs/a --data holes.csv --out completed.csv --multiple 5
    ppl-vae score     runs/a --data new.csv --out scores.csv
    ppl-vae demo

A user error (a :class:`ppl_vae.errors.UserError`: bad data, unknown names, a folder that would
be overwritten, a corrupt checkpoint, a diverged loss, a size the machine cannot hold) prints
one line on stderr and exits with status 2. Anything else is a bug: its traceback is printed
and the status is 1. Ctrl-C exits with 130. No command deletes or replaces a file it did not
create in the same call (``--force`` lets ``compare``, ``evaluate``, ``plot`` and ``sample``
replace their own outputs). Also runnable as ``python -m ppl_vae.cli``. The modules named in
``PPL_VAE_PLUGINS`` (and installed ``ppl_vae.plugins`` entry points) are imported first, so that their
registered likelihoods, objectives and guides are in every ``--help`` (:mod:`ppl_vae.plugins`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence

from ..errors import UserError
from ..plugins import load_plugins
from .check import add_check
from .compare import add_compare
from .evaluate import add_evaluate
from .missing import add_impute, add_score
from .outputs import add_plot, add_sample
from .train import add_demo, add_train


def interrupted(command: str) -> int:
    """Ctrl-C: one line, exit status 130 (what a shell reports for SIGINT)."""
    try:
        print(f"ppl-vae{' ' + command if command else ''}: interrupted", file=sys.stderr)
    except KeyboardInterrupt:  # a second Ctrl-C while saying so
        pass
    return 130


# ---------------------------------------------------------------- the sub-command table
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_train,
    add_demo,
    add_compare,
    add_evaluate,
    add_check,
    add_plot,
    add_sample,
    add_impute,
    add_score,
]


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``ppl-vae train: error: argument --lr: ... (ppl-vae train --help)``
    instead of the usage text and the message (17 lines for a bad ``--lr``), exit status 2."""

    def error(self, message: str):
        line = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {line} (see {self.prog} --help)\n")

    #: the sub-commands' parsers by name (set by :func:`build_parser`)
    commands: dict[str, argparse.ArgumentParser] | None = None

    def subcommand(self, name: str) -> argparse.ArgumentParser:
        """The parser of sub-command ``name`` (this one if there is none)."""
        return (self.commands or {}).get(name, self)


def build_parser() -> Parser:
    parser = Parser(
        prog="ppl-vae",
        description="Variational autoencoders as Pyro programs: train, evaluate, compare, plot.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    parser.commands = dict(sub.choices)
    return parser


def _warning_line(command: str):
    """``warnings.formatwarning`` for the command line: one line naming the command, no source line."""

    def format_warning(message, category, filename, lineno, line=None) -> str:
        return f"ppl-vae {command}: warning: {' '.join(str(message).split())}\n"

    return format_warning


def _pipe_closed() -> int:
    """The reader of our output went away (``| head``): stop quietly, as a command cut by SIGPIPE does (the
    files a command writes are committed before it prints, so nothing is half-written)."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(
            devnull, sys.stdout.fileno()
        )  # no second BrokenPipeError when Python flushes at exit
    return 141  # 128 + SIGPIPE, what a shell reports for such a command


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command; 0 on success, 2 for a user error, 1 for a bug, 130 on Ctrl-C (at any moment:
    while the parser is built or a sub-command imports torch too; the ``ppl-vae`` launcher,
    :mod:`ppl_vae_cli`, covers the import of ``ppl_vae`` itself)."""
    try:
        load_plugins()  # the user's registry entries, before --help lists them
    except UserError as err:
        words = sys.argv[1:] if argv is None else list(argv)
        command = next((w for w in words if not w.startswith("-")), "")
        print(f"ppl-vae {command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return interrupted("")
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra:  # said by the sub-command's parser, whose flags they were meant for
            parser.subcommand(args.command).error(f"unrecognized arguments: {' '.join(extra)}")
    except KeyboardInterrupt:
        return interrupted("")
    except BrokenPipeError:  # ppl-vae train --help | head
        return _pipe_closed()
    formatwarning = warnings.formatwarning
    warnings.formatwarning = _warning_line(args.command)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, where a reader that went away is handled, not at the interpreter's exit
        return code
    except UserError as err:
        message = " ".join(str(err).split())  # one line
        print(f"ppl-vae {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return interrupted(args.command)
    except BrokenPipeError:  # ppl-vae evaluate RUN | head: the reader has what it wanted
        return _pipe_closed()
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
