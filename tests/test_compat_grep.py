"""Issue 22's check, as written there: ``grep -rn "torch\\._\\|_PYRO_STACK\\|\\._param\\b\\|_version\\b" ppl_vae``
hits only the compat seam (ppl_vae/_torch_compat.py); and the checkpoint keys that the pattern's
``_version\\b`` used to catch (``format_version``, ``torch_version``) are still the strings on disk."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import ppl_vae
from ppl_vae.errors import CheckpointError
from ppl_vae.store.checkpoint import load_model_state, save_checkpoint
from ppl_vae.store.keys import KEYS
from ppl_vae.store.validate import check_config

PACKAGE = Path(ppl_vae.__file__).parent
#: grep's basic regular expression of the issue (``\|`` is alternation), and the same in Python's syntax.
GREP_PATTERN = r"torch\._\|_PYRO_STACK\|\._param\b\|_version\b"
PATTERN = re.compile(GREP_PATTERN.replace(r"\|", "|"))
SEAM = "ppl_vae/_torch_compat.py"


def _python_hits() -> set[str]:
    """Files of the package (every text file, as ``grep -r`` reads them; bytecode caches left out) whose
    lines match the pattern."""
    hits = set()
    for path in sorted(PACKAGE.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        if any(PATTERN.search(line) for line in text.splitlines()):
            hits.add(path.relative_to(PACKAGE.parent).as_posix())
    return hits


def test_the_private_name_pattern_matches_the_compat_seam_only():
    hits = _python_hits()
    assert hits == {SEAM}, f"private torch/Pyro names outside the seam: {sorted(hits - {SEAM})}"


def test_grep_itself_agrees_where_grep_is_installed():
    """The issue's command line run as is (GNU/BSD grep; the pattern check above covers a machine without
    one): every matching line lies in the compat module, and that module does match (the pattern is live)."""
    grep = shutil.which("grep")
    if grep is None:  # the Python check above is the same pattern; nothing to compare with here
        return
    out = subprocess.run(
        [grep, "-rn", "--exclude-dir=__pycache__", GREP_PATTERN, "ppl_vae"],
        cwd=PACKAGE.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode in (0, 1), out.stderr
    files = {line.split(":", 1)[0] for line in out.stdout.splitlines()}
    assert files == {SEAM}, out.stdout


def test_the_pattern_catches_what_it_is_for():
    caught = [
        "from torch._inductor import config",
        "stack = _PYRO_STACK",
        "d._param",
        'config["format_version"]',
        "t._version",
        "torch.__version__",
    ]
    assert all(PATTERN.search(line) for line in caught)
    assert not PATTERN.search("torch.version.__version__")
    assert not PATTERN.search("KEYS.format: FORMAT_VERSION")


def test_checkpoint_files_keep_their_version_keys_on_disk(tmp_path):
    """The key strings are the file format: a checkpoint written now names them as format 2 always did,
    and a config written by hand with those names loads."""
    assert (KEYS.format, KEYS.torch) == ("format_version", "torch_version")
    folder = save_checkpoint(tmp_path, torch.nn.Linear(2, 1), training={"epoch": 1})
    config = json.loads((folder / "config.json").read_text())
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    pointer = json.loads((tmp_path / "CURRENT.json").read_text())
    assert config["format_version"] == manifest["format_version"] == pointer["format_version"] == 2
    assert config["torch_version"] == str(torch.__version__)
    model = torch.nn.Linear(2, 1)
    config_back = load_model_state(tmp_path, model)
    assert config_back["format_version"] == 2
    config["format_version"] = 3  # a newer format is read from that key and refused naming it
    with pytest.raises(CheckpointError, match="has format_version 3; this ppl_vae reads up to 2"):
        check_config(config, folder / "config.json", 2)
