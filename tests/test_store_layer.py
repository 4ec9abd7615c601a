"""The store is below training and the run folders above it: read from the source, no import cycle.

``ppl_vae.store`` (checkpoints, output sets, locks, atomic files, tracking) imports nothing of ppl_vae but
its errors (and, inside a function, the model builder that rebuilds a checkpoint's model);
``ppl_vae.train`` imports the store, never ``ppl_vae.runs``; ``ppl_vae.runs`` imports ``train`` and has no
lazy ``__getattr__`` to dodge a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "ppl_vae"


def _imports(path: Path) -> list[tuple[int, str, bool]]:
    """``(level, module, at top level)`` of every ``from X import`` in a file."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    return [
        (node.level, node.module or "", id(node) in top)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    ]


def test_the_store_imports_only_the_errors_of_ppl_vae():
    for path in sorted((PKG / "store").glob("*.py")):
        for level, module, at_top in _imports(path):
            if level == 2:  # ..something: a package of ppl_vae outside the store
                allowed = {"errors"} if at_top else {"errors", "models"}
                assert module.split(".")[0] in allowed, f"{path.name} imports ..{module}"
            assert not module.startswith("ppl_vae"), f"{path.name} imports {module}"


def test_training_uses_the_store_never_the_run_folders():
    for path in sorted((PKG / "train").glob("*.py")):
        for level, module, _ in _imports(path):
            assert not (level == 2 and module.split(".")[0] == "runs"), (
                f"train/{path.name} imports ..{module}: use ppl_vae.store"
            )


def test_the_run_folders_import_training_directly():
    source = (PKG / "runs" / "__init__.py").read_text()
    assert "def __getattr__" not in source
    assert any(
        level == 2 and module == "train"
        for level, module, _ in _imports(PKG / "runs" / "folder.py")
    )
