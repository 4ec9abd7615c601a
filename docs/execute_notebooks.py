"""Execute the notebooks once into ``docs/tutorials/generated/`` so the site renders them with outputs.

The committed notebooks (``notebooks/*.ipynb``) carry no outputs. Each is run top to bottom in a fresh
``python3`` kernel (nbclient, ``OMP_NUM_THREADS=1``, in a temporary working folder so nothing is written
beside the repository's files) and the executed copy is written here; Sphinx then renders it without
running anything (``nb_execution_mode = "off"``). A copy is reused while its notebook and the package's
source are unchanged (a hash of both is stored in the copy's metadata), so a second ``make docs`` does not
execute again. A cell that raises stops the build: the site never shows a tutorial with an error in it.

    python docs/execute_notebooks.py [--force] [NAME ...]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import nbclient
import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
OUT = Path(__file__).resolve().parent / "tutorials" / "generated"
KEY = "ppl_vae_docs_source_hash"
SECONDS = "ppl_vae_docs_seconds"


def source_hash(notebook: Path) -> str:
    """A hash of the notebook and of every module of the package (what its outputs depend on)."""
    h = hashlib.sha256(notebook.read_bytes())
    for path in sorted((ROOT / "ppl_vae").rglob("*.py")):
        h.update(path.relative_to(ROOT).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def up_to_date(notebook: Path, key: str) -> bool:
    copy = OUT / notebook.name
    if not copy.is_file():
        return False
    return nbformat.read(copy, as_version=4).metadata.get(KEY) == key


def execute(notebook: Path, key: str, timeout: int) -> float:
    """Run ``notebook`` and write the executed copy (atomically); return the seconds it took."""
    nb = nbformat.read(notebook, as_version=4)
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        MPLBACKEND="module://matplotlib_inline.backend_inline",
        # tqdm.auto's note that ipywidgets is absent is about the kernel, not the tutorial: not shown
        PYTHONWARNINGS="ignore:IProgress not found",
    )
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ppl_vae-nb-") as cwd:
        client = nbclient.NotebookClient(
            nb,
            kernel_name="python3",
            timeout=timeout,
            resources={"metadata": {"path": cwd}},
            extra_arguments=["--IPKernelApp.log_level=ERROR"],  # not its TCP-encryption notice
        )
        client.execute(env=env)  # raises CellExecutionError naming the cell
    seconds = time.perf_counter() - t0
    nb.metadata[KEY] = key
    nb.metadata[SECONDS] = round(
        seconds, 1
    )  # read by tests/notebook_run.py, which reuses this copy
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = OUT / f".{notebook.name}.tmp"
    nbformat.write(nb, tmp)
    os.replace(tmp, OUT / notebook.name)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebook names (default: all of notebooks/)")
    parser.add_argument("--force", action="store_true", help="execute even if the copy is current")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell (default 900)")
    args = parser.parse_args(argv)
    notebooks = sorted(NOTEBOOKS.glob("*.ipynb"))
    if args.names:
        notebooks = [n for n in notebooks if n.stem in args.names or n.name in args.names]
    wanted = {n.name for n in sorted(NOTEBOOKS.glob("*.ipynb"))}
    for stale in OUT.glob("*.ipynb"):
        if stale.name not in wanted:
            stale.unlink()  # a notebook that was removed or renamed (the folder is generated)
    for notebook in notebooks:
        key = source_hash(notebook)
        if not args.force and up_to_date(notebook, key):
            print(f"{notebook.name}: up to date")
            continue
        try:
            seconds = execute(notebook, key, args.timeout)
        except nbclient.exceptions.CellExecutionError as err:
            print(f"{notebook.name}: a cell failed:\n{err}", file=sys.stderr)
            return 1
        print(f"{notebook.name}: executed in {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
