# Set-up commands: `make demo` and `make test`. Both create or reuse .venv.
# torch goes in first so that pip does not pull a multi-GB CUDA build for a
# plain `torch` requirement; override with e.g.
#   make test TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124"
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vhsup-installed

.PHONY: demo test bench install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(PY) -m vhsup demo

bench: $(STAMP)
	$(PY) bench/run.py overhead --model compact-x4 --frames 6
	$(PY) bench/run.py memory --model bicubic --seconds 2 --factor 10

clean:
	rm -rf $(VENV) demo-out .pytest_cache
