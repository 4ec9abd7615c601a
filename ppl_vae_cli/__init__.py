"""The ``ppl-vae`` command's launcher: a module that imports nothing heavy, so that a Ctrl-C while
``ppl_vae`` imports torch, Pyro and scikit-learn (about 4 s) ends as quietly as one during a command:
one line and exit status 130, not a 50-line traceback. Everything else is :func:`ppl_vae.cli.main`."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> int:
    try:
        from ppl_vae.cli import main as run
    except KeyboardInterrupt:
        try:
            print("ppl-vae: interrupted", file=sys.stderr)
        except KeyboardInterrupt:
            pass
        return 130
    return run()


if __name__ == "__main__":
    sys.exit(main())
