# Two commands a user types on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH_PIN := torch==2.13.0

.PHONY: setup setup-dev setup-docs demo test lint docs package bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch first, and only where it is missing: a bare `torch` pulls gigabytes of CUDA wheels.
setup: $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e .

setup-dev: $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e ".[dev]"

setup-docs: setup-dev
	$(PY) -m pip install -q -e ".[dev,docs]"

# One OpenMP thread by default here too: the demo's networks are tiny, and with two threads every small op
# waits on a thread barrier, 10x slower as soon as anything else uses a core (measured on this 2-core CPU).
demo: setup
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(VENV)/bin/ppl-vae demo

# One OpenMP thread by default: small networks on a shared 2-core machine stall on thread barriers.
test: setup-dev
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q

# The documentation site into docs/_build/html, warnings as errors (-W --keep-going: every warning is
# listed, then the build fails; -E: every page read again, as docstrings are not tracked). The notebooks are executed once into docs/tutorials/generated/ (reused
# while they and the package are unchanged); docs/check_site.py then checks every public name's page.
docs: setup-docs
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) docs/execute_notebooks.py
	$(PY) -m sphinx -b html -E -W --keep-going -q docs docs/_build/html
	$(PY) docs/check_site.py docs/_build/html
	@echo "docs: docs/_build/html/index.html"

# The sdist and the wheel (python -m build), the wheel installed into a fresh venv and smoke-tested.
package: setup-dev
	.ci/check_package.sh $(PY)

lint: setup-dev
	$(VENV)/bin/ruff check ppl_vae ppl_vae_cli tests benchmarks notebooks docs
	$(VENV)/bin/ruff format --check ppl_vae ppl_vae_cli tests benchmarks notebooks docs
	$(VENV)/bin/mypy  # the package, configured in pyproject.toml ([tool.mypy])

clean:
	rm -rf $(VENV) runs .pytest_cache docs/_build docs/api docs/tutorials/generated
