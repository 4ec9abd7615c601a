#!/usr/bin/env bash
# Build the sdist and the wheel as a user's pip would (python -m build: the sdist first, the wheel built
# from the unpacked sdist, in an isolated environment), check what each holds, install the wheel into a
# fresh venv (not editable, no site packages) and use it from outside the repository: import ppl_vae,
# its version, py.typed, and the CLI smoke test `ppl-vae demo --epochs 1` into a temporary folder.
#   usage: .ci/check_package.sh [PYTHON]    (PYTHON: the venv python that has `build`, default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${1:-.venv/bin/python}
TORCH_PIN=${TORCH_PIN:-torch==2.13.0}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ppl_vae-package.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
t0=$SECONDS

echo "== build: sdist and wheel into $WORK/dist"
"$PY" -m build --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; exit 1; }
ls -l "$WORK/dist"

echo "== contents: every tracked module in the wheel, py.typed, the licence; the sdist complete"
git ls-files 'ppl_vae/*.py' >"$WORK/tracked.txt"
"$PY" - "$WORK/dist" "$WORK/tracked.txt" <<'PYEOF'
import sys, tarfile, zipfile
from pathlib import Path

dist, tracked = Path(sys.argv[1]), Path(sys.argv[2]).read_text().split()
(wheel,) = dist.glob("*.whl")
(sdist,) = dist.glob("*.tar.gz")
names = set(zipfile.ZipFile(wheel).namelist())
missing = [p for p in tracked + ["ppl_vae/py.typed"] if p not in names]
assert not missing, f"{wheel.name} lacks {missing}"
assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), "wheel lacks LICENSE"
assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "docs/"))], "wheel ships non-package files"
root = sdist.name[: -len(".tar.gz")]
members = {m.split("/", 1)[1] for m in tarfile.open(sdist).getnames() if "/" in m}
need = ["pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "ppl_vae/py.typed", "docs/conf.py",
        "tests/conftest.py", "notebooks/01_quickstart.ipynb"] + tracked
missing = [p for p in need if p not in members]
assert not missing, f"{sdist.name} lacks {missing}"
assert not [m for m in members if "/_build/" in m or "__pycache__" in m], "sdist holds build outputs"
print(f"{wheel.name}: {len(names)} files; {sdist.name}: {len(members)} files")
PYEOF

echo "== fresh venv: $TORCH_PIN first (as the Makefile does), then the wheel"
"$(command -v python3)" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q "$TORCH_PIN"
"$WORK/venv/bin/python" -m pip install -q "$WORK"/dist/*.whl

echo "== use it from outside the repository"
cd "$WORK"
"$WORK/venv/bin/python" - "$REPO" <<'PYEOF'
import importlib.metadata, sys
from pathlib import Path

import ppl_vae

where = Path(ppl_vae.__file__).resolve()
assert Path(sys.argv[1]).resolve() not in where.parents, f"imported from the repository: {where}"
assert "site-packages" in where.parts, where
assert (where.parent / "py.typed").is_file(), "py.typed not installed"
assert importlib.metadata.version("ppl_vae") == ppl_vae.__version__, "two versions"
missing = [n for n in ppl_vae.__all__ if not hasattr(ppl_vae, n)]
assert not missing, missing
print(f"import ppl_vae {ppl_vae.__version__} from {where.parent}")
PYEOF
OMP_NUM_THREADS=1 "$WORK/venv/bin/ppl-vae" demo --epochs 1 --out "$WORK/demo"
for f in trace/metrics.csv analytic/metrics.csv trace/settings.json analytic/checkpoint/CURRENT.json; do
    test -s "$WORK/demo/$f" || { echo "demo did not write $f"; exit 1; }
done
"$WORK/venv/bin/ppl-vae" --help >/dev/null
echo "package check passed in $((SECONDS - t0)) s"
