"""Small assertions the CLI and run tests share."""

from __future__ import annotations

from pathlib import Path


def files_of(path: Path) -> dict[str, bytes]:
    """Every file below ``path`` with its bytes, by relative path: compare before and after to prove nothing changed."""
    return {
        p.relative_to(path).as_posix(): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def one_line_error(capsys, *needles: str) -> str:
    """The CLI's user-error contract: one line on stderr, prefixed ``ppl-vae``, no traceback, naming ``needles``."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ppl-vae ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err
