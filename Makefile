# Set-up commands: `make demo` and `make test`. Both create or reuse .venv.
# torch goes in first so that pip does not pull a multi-GB CUDA build for a
# plain `torch` requirement; override with e.g.
#   make test TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124"
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vhsup-installed
# The second venv runs on Python 3.12 and holds the extras the main venv
# cannot: `community` (spandrel needs a torchvision built for the installed
# torch; PyPI has none for the CPU build of torch 2.13.0, so a matching pair,
# a CUDA build that runs on the CPU) and `restore` (VapourSynth R81's wheels
# need Python >= 3.12). `make test` runs the tests of both extras there.
EXTRAS_VENV ?= .venv-extras
COMMUNITY_TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
XPY := $(EXTRAS_VENV)/bin/python
EXTRAS_STAMP := $(EXTRAS_VENV)/.vhsup-installed
EXTRAS_TESTS := tests/test_community.py tests/test_restore.py tests/test_composite.py

# Python 3.12 (the extras venv and the anchor's): a python3.12 on PATH that
# runs (a pyenv shim without 3.12 does not), else pyenv's own
# $(pyenv root)/versions/3.12.*, newest first; as anchor.find_python312 does.
# Override with PYTHON312=/path/to/python3.12.
PYTHON312 ?= $(shell for p in $$(command -v python3.12) $$(ls -r $$(pyenv root 2>/dev/null || echo $${PYENV_ROOT:-$$HOME/.pyenv})/versions/3.12.*/bin/python3.12 2>/dev/null); do "$$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null && { echo "$$p"; break; }; done)
NO_PYTHON312 := no Python 3.12 runs here (none on PATH, none under pyenv's versions/3.12.*); install one or pass PYTHON312=/path/to/python3.12

# The benchmark's anchor, vs_temporalfix (vhsup/eval/anchor.py), runs in a
# venv of its own: it needs Python 3.12 and VapourSynth's wheels, which the
# main venv must not get. Not part of `make test` or CI; its tests skip
# without it. Python 3.12 as above (PYTHON312).
# vapoursynth-mvutensils 10 dropped the `fields` argument vs_temporalfix passes: pin 9.
ANCHOR_VENV ?= .venv-anchor
ANCHOR_SPEC ?= vs-temporalfix==2.4.1 vapoursynth==81 vapoursynth-mvutensils==9 numpy
ANCHOR_STAMP := $(ANCHOR_VENV)/.vhsup-anchor-installed

.PHONY: demo test test-fast lint format bench install clean anchor-venv gpu-check

anchor-venv: $(ANCHOR_STAMP)

$(ANCHOR_STAMP): Makefile
	@test -n "$(PYTHON312)" || { echo "anchor-venv: $(NO_PYTHON312)" >&2; exit 1; }
	test -x $(ANCHOR_VENV)/bin/python || $(PYTHON312) -m venv $(ANCHOR_VENV)
	$(ANCHOR_VENV)/bin/python -m pip install --quiet --disable-pip-version-check $(ANCHOR_SPEC)
	$(ANCHOR_VENV)/bin/python -I vhsup/eval/temporalfix_worker.py check
	touch $(ANCHOR_STAMP)

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# A venv left from another Python (the 3.11 community venv of before) is made anew.
$(EXTRAS_STAMP): pyproject.toml
	@test -n "$(PYTHON312)" || { echo "extras venv: $(NO_PYTHON312)" >&2; exit 1; }
	$(XPY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null || { rm -rf $(EXTRAS_VENV) && $(PYTHON312) -m venv $(EXTRAS_VENV); }
	$(XPY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(XPY) -c "import torchvision" 2>/dev/null || $(XPY) -m pip install --quiet $(COMMUNITY_TORCH_SPEC)
	$(XPY) -m pip install --quiet -e '.[community,onnx,restore,eval]' 'pytest>=8'
	touch $(EXTRAS_STAMP)

# The tests of the community and restore extras run in the extras venv, where
# a missing or broken extra fails instead of skipping.
test: $(STAMP) $(EXTRAS_STAMP)
	$(PY) -m pytest -q $(addprefix --ignore=,$(EXTRAS_TESTS))
	VHSUP_REQUIRE_SPANDREL=1 VHSUP_REQUIRE_RESTORE=1 $(XPY) -m pytest -q $(EXTRAS_TESTS)

# The tests marked slow (over ~20 s each on 2 cores) are left out: for the edit-test loop.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(addprefix --ignore=,$(EXTRAS_TESTS))

# Every CUDA path in one go, each step in its own process under its own
# timeout, results under $$OUT (else gpu-out/): bench/gpu_check.py.
# SMOKE=1 runs the same steps on the CPU at tiny sizes (CI runs that).
# On a bare GPU machine with its own torch: PYTHONPATH=. python3 bench/gpu_check.py
gpu-check: $(STAMP)
	$(PY) bench/gpu_check.py $(if $(SMOKE),--smoke) --out $${OUT:-gpu-out}

# Lint, format and types; CI runs this before the tests.
lint: $(STAMP)
	$(PY) -m ruff check vhsup tests bench
	$(PY) -m ruff format --check vhsup tests bench
	$(PY) -m mypy

format: $(STAMP)
	$(PY) -m ruff check --fix vhsup tests bench
	$(PY) -m ruff format vhsup tests bench

demo: $(STAMP)
	$(PY) -m vhsup demo

bench: $(STAMP)
	$(PY) bench/run.py overhead --model compact-x4 --frames 6
	$(PY) bench/run.py memory --model bicubic --seconds 2 --factor 10

clean:
	rm -rf $(VENV) $(EXTRAS_VENV) .venv-community $(ANCHOR_VENV) demo-out .pytest_cache
