"""The user guide's tables of objectives, guides, likelihoods, priors, models and datasets, from the registry.

A table in a Markdown file sits between two markers and is the registry's text for its kind
(:meth:`~ppl_vae.registry.Registry.markdown`)::

    <!-- registry:objective -->
    | name | parameters | description | ... |
    ...
    <!-- /registry -->

::

    python -m ppl_vae.registry_docs objective            # print one kind's table
    python -m ppl_vae.registry_docs --write docs/guide/models.md   # rewrite its marked tables in place
    python -m ppl_vae.registry_docs --check docs/guide/models.md   # exit 1 (naming the kinds) when stale

The tables are in ``docs/guide/`` (``objectives.md``, ``models.md``, ``data.md``); ``tests/test_registry.py``
runs the check on every page of ``docs/``, so a registered entry that the guide does not list (or a table
edited by hand) fails the suite.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from . import data, guides, likelihoods, models, objectives, priors  # noqa: F401 - register the kinds
from .registry import KINDS, REGISTRY, Kind

__all__ = ["render", "stale_kinds"]

_BLOCK = re.compile(r"(<!-- registry:(\w+) -->\n)(.*?)(<!-- /registry -->)", re.S)


def render(text: str) -> str:
    """``text`` with every marked table replaced by the registry's table of its kind."""

    def table(match: re.Match[str]) -> str:
        kind = match.group(2)
        if kind not in KINDS:  # narrows str to Kind
            raise ValueError(
                f"unknown registry kind {kind!r} in a marker; kinds: {', '.join(KINDS)}"
            )
        return f"{match.group(1)}{REGISTRY.markdown(kind)}\n{match.group(4)}"

    return _BLOCK.sub(table, text)


def stale_kinds(text: str) -> list[str]:
    """The kinds whose marked table in ``text`` differs from the registry's."""
    stale = []
    for m in _BLOCK.finditer(text):
        kind = m.group(2)
        if kind not in KINDS or m.group(3) != REGISTRY.markdown(kind) + "\n":
            stale.append(kind)
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ppl_vae.registry_docs", description=__doc__)
    p.add_argument("kind", nargs="?", choices=KINDS, help="print this kind's table")
    p.add_argument("--write", metavar="FILE", help="rewrite the marked tables of FILE")
    p.add_argument("--check", metavar="FILE", help="exit 1 when a marked table of FILE is stale")
    args = p.parse_args(argv)
    if args.kind:
        kind: Kind = args.kind
        print(REGISTRY.markdown(kind))
    if args.write:
        path = Path(args.write)
        path.write_text(render(path.read_text(encoding="utf-8")), encoding="utf-8")
    if args.check:
        stale = stale_kinds(Path(args.check).read_text(encoding="utf-8"))
        if stale:
            print(
                f"{args.check}: the tables of {', '.join(stale)} differ from the registry; run "
                f"python -m ppl_vae.registry_docs --write {args.check}",
                file=sys.stderr,
            )
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
