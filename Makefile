# Set-up commands: `make demo` and `make test`. Both create or reuse .venv.
# torch goes in first so that pip does not pull a multi-GB CUDA build for a
# plain `torch` requirement; override with e.g.
#   make test TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124"
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vhsup-installed
# Model files of other architectures load through spandrel (the `community`
# extra), which needs a torchvision built for the installed torch. PyPI has
# none for the CPU build of torch 2.13.0, so `make test` checks that path in
# a second venv with a matching pair (a CUDA build; it runs on the CPU).
COMMUNITY_VENV ?= .venv-community
COMMUNITY_TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
CPY := $(COMMUNITY_VENV)/bin/python
COMMUNITY_STAMP := $(COMMUNITY_VENV)/.vhsup-installed

# The benchmark's anchor, vs_temporalfix (vhsup/eval/anchor.py), runs in a
# venv of its own: it needs Python 3.12 and VapourSynth's wheels, which the
# main venv must not get. Not part of `make test` or CI; its tests skip
# without it. Python 3.12 is found as anchor.find_python312 does: a
# python3.12 on PATH that runs (a pyenv shim without 3.12 does not), else
# pyenv's own $(pyenv root)/versions/3.12.*. Override with ANCHOR_PYTHON=...
# vapoursynth-mvutensils 10 dropped the `fields` argument vs_temporalfix passes: pin 9.
ANCHOR_VENV ?= .venv-anchor
ANCHOR_SPEC ?= vs-temporalfix==2.4.1 vapoursynth==81 vapoursynth-mvutensils==9 numpy
ANCHOR_PYTHON ?= $(shell for p in $$(command -v python3.12) $$(ls -r $$(pyenv root 2>/dev/null || echo $${PYENV_ROOT:-$$HOME/.pyenv})/versions/3.12.*/bin/python3.12 2>/dev/null); do "$$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null && { echo "$$p"; break; }; done)
ANCHOR_STAMP := $(ANCHOR_VENV)/.vhsup-anchor-installed

.PHONY: demo test test-fast lint format bench install clean anchor-venv

anchor-venv: $(ANCHOR_STAMP)

$(ANCHOR_STAMP): Makefile
	@test -n "$(ANCHOR_PYTHON)" || { echo "anchor-venv: no Python 3.12 runs here (none on PATH, none under pyenv's versions/3.12.*); install one or pass ANCHOR_PYTHON=/path/to/python3.12" >&2; exit 1; }
	test -x $(ANCHOR_VENV)/bin/python || $(ANCHOR_PYTHON) -m venv $(ANCHOR_VENV)
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

$(COMMUNITY_STAMP): pyproject.toml
	test -x $(CPY) || $(PYTHON) -m venv $(COMMUNITY_VENV)
	$(CPY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(CPY) -c "import torchvision" 2>/dev/null || $(CPY) -m pip install --quiet $(COMMUNITY_TORCH_SPEC)
	$(CPY) -m pip install --quiet -e '.[community,onnx]' 'pytest>=8'
	touch $(COMMUNITY_STAMP)

# tests/test_community.py needs spandrel: it runs in the second venv, where a
# missing or broken spandrel fails instead of skipping.
test: $(STAMP) $(COMMUNITY_STAMP)
	$(PY) -m pytest -q --ignore=tests/test_community.py
	VHSUP_REQUIRE_SPANDREL=1 $(CPY) -m pytest -q tests/test_community.py

# The tests marked slow (over ~20 s each on 2 cores) are left out: for the edit-test loop.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" --ignore=tests/test_community.py

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
	rm -rf $(VENV) $(COMMUNITY_VENV) $(ANCHOR_VENV) demo-out .pytest_cache
