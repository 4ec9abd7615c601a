# Two commands a user types on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH_PIN := torch==2.13.0

.PHONY: setup setup-dev demo test lint bench clean

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

# One OpenMP thread by default here too: the demo's networks are tiny, and with two threads every small op
# waits on a thread barrier, 10x slower as soon as anything else uses a core (measured on this 2-core CPU).
demo: setup
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(VENV)/bin/ppl-vae demo

# One OpenMP thread by default: small networks on a shared 2-core machine stall on thread barriers.
test: setup-dev
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q

lint: setup-dev
	$(VENV)/bin/ruff check ppl_vae tests benchmarks notebooks
	$(VENV)/bin/ruff format --check ppl_vae tests benchmarks notebooks

clean:
	rm -rf $(VENV) runs .pytest_cache
