"""Check a built site: every public name has its API page with its object on it, every tutorial shows
its outputs, the CLI reference has every sub-command. Exit 1 listing what is missing.

    python docs/check_site.py docs/_build/html
"""

from __future__ import annotations

import sys
from pathlib import Path

import ppl_vae
from ppl_vae.cli import COMMANDS, build_parser

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def problems(html: Path) -> list[str]:
    found = []
    for name in ppl_vae.__all__:
        page = html / "api" / f"ppl_vae.{name}.html"
        if not page.is_file():
            found.append(f"no API page for ppl_vae.{name} ({page})")
        elif f'id="ppl_vae.{name}"' not in page.read_text():
            found.append(f"{page} does not document ppl_vae.{name}")
    for notebook in sorted(NOTEBOOKS.glob("*.ipynb")):
        page = html / "tutorials" / "generated" / f"{notebook.stem}.html"
        if not page.is_file():
            found.append(f"notebook {notebook.name} is not rendered ({page})")
        elif "<img" not in page.read_text():
            found.append(f"{page} shows no figure: were the outputs rendered?")
    cli = html / "cli.html"
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]  # argparse has no public accessor
    text = cli.read_text() if cli.is_file() else ""
    for command, subparser in sub.choices.items():
        if f'<section id="ppl-vae-{command}"' not in text:
            found.append(f"the CLI reference lacks `ppl-vae {command}`")
        for action in subparser._actions:
            long = [o for o in action.option_strings if o.startswith("--")]
            if long and long[0] not in text:
                found.append(f"the CLI reference lacks `ppl-vae {command} {long[0]}`")
    assert len(sub.choices) == len(COMMANDS)
    return found


def main() -> int:
    html = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/_build/html")
    found = problems(html)
    for line in found:
        print(line, file=sys.stderr)
    if found:
        return 1
    pages = sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html"))
    print(f"site checked: {len(pages)} pages, {len(ppl_vae.__all__)} API pages, CLI and tutorials")
    return 0


if __name__ == "__main__":
    sys.exit(main())
