# Two-command set-up: `make demo` / `make test` create or update .venv themselves.
# Overridable: PYTHON (interpreter for the venv), VENV, TORCH_SPEC (torch==2.13.0 takes the local
# CPU wheel here; elsewhere add PIP_TORCH_ARGS="--index-url <your CPU wheel index>" on a machine
# without CUDA), PYTEST_ARGS, CONSTRAINTS (the pinned, tested versions; empty = the newest the ranges allow).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PIP_TORCH_ARGS ?=
PYTEST_ARGS ?=
# Exact, tested versions of every dependency but torch (pyproject.toml keeps the supported ranges). A
# moving index once broke fresh installs (transformers 5.25 started to require the hub package `kernels`):
# installs are pinned, and `make test-latest` shows drift before users meet it; `make lock` re-pins.
CONSTRAINTS ?= constraints/tested.txt
COMPAT_CONSTRAINTS ?= constraints/compat.txt
PIN = $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
# OpenMP threads wait passively instead of spinning (same numerics, several times faster under load;
# measured: docs/installation.md, Environment variables). A policy set in the environment wins.
OMP_WAIT_POLICY ?= PASSIVE
export OMP_WAIT_POLICY
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.vkd_fast-installed
# A second, small venv with the oldest transformers line we support, for the adapter tests only
# (the package is used from the source tree; the C++ extension is not needed there).
COMPAT_VENV ?= .venv-compat
COMPAT_TRANSFORMERS ?= transformers>=4.57,<4.58
COMPAT_STAMP := $(COMPAT_VENV)/.installed
# The newest versions the ranges allow (torch stays TORCH_SPEC), in a venv of its own, made anew each time.
LATEST_VENV ?= .venv-latest

.PHONY: install demo demo-full test test-fast test-latest lock lint bench clean

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall (and rebuild the C++ extension) whenever the packaging or the C++ sources change.
$(STAMP): $(PY) pyproject.toml setup.py $(CONSTRAINTS) $(wildcard csrc/*.cpp csrc/*.h)
	$(PIP) install -q --upgrade "pip>=23" "setuptools>=77" wheel
	$(PIP) install -q "$(TORCH_SPEC)" numpy $(PIN) $(PIP_TORCH_ARGS)
	$(PIP) install -q --no-build-isolation $(PIN) -e ".[dev,bench]"
	$(PY) -c "import torch, vkd_fast._C; print('vkd_fast: C++ extension built')"
	touch $@

# The toy-world demo on the shipped models of the default world (docs/demo.md). `make demo`: the quick
# profile -- VKD, grad_diff and npo, every metric, the default relearning attack in both modes over three
# seeds (~1 min here once the venv exists). `make demo-full`: every method, the attack grid and the
# embedding attack (~8 min). Both write $(DEMO_DIR)/report.{json,md,png}. DEMO_ARGS: extra
# `vkd-fast demo` options (docs/cli.md).
DEMO_DIR ?= demo_output
DEMO_ARGS ?=
demo: $(STAMP)
	$(VENV)/bin/vkd-fast demo --quick --output-dir $(DEMO_DIR) $(DEMO_ARGS)

demo-full: $(STAMP)
	$(VENV)/bin/vkd-fast demo --output-dir $(DEMO_DIR) $(DEMO_ARGS)

# The pytest script, not `python -m pytest` (which puts the repo root on sys.path; both work, the script is the
# plain case: the tests import the installed package).
test: $(STAMP) $(COMPAT_STAMP)
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)
	@echo "== adapter tests against $(COMPAT_TRANSFORMERS), the oldest supported line =="
	PYTHONPATH=$(CURDIR) VKD_FAST_SKIP_CEXT=1 $(COMPAT_VENV)/bin/pytest -q -p no:cacheprovider tests/adapters

# The day-to-day subset (every test not marked slow: no subprocesses, no toy-model build; ~50 s here).
test-fast: $(STAMP)
	$(VENV)/bin/pytest -q -m "not slow" $(PYTEST_ARGS)


$(COMPAT_STAMP): pyproject.toml $(COMPAT_CONSTRAINTS)
	$(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)" $(PIP_TORCH_ARGS)
	$(COMPAT_VENV)/bin/python -m pip install -q $(if $(COMPAT_CONSTRAINTS),-c $(COMPAT_CONSTRAINTS)) \
		"$(COMPAT_TRANSFORMERS)" "peft>=0.13" pillow safetensors "pytest>=8"
	touch $@

# The whole suite on the newest versions pyproject.toml's ranges allow (a fresh venv each time; torch
# stays TORCH_SPEC, a platform choice: `make test-latest TORCH_SPEC=torch` floats it too, which pulls the
# multi-GB CUDA wheel where no CPU index is set): the early warning for a moving index. Not part of
# `make test` (CI tests the pins).
test-latest:
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install -q --upgrade "pip>=23" "setuptools>=77" wheel
	$(LATEST_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)" numpy $(PIP_TORCH_ARGS)
	$(LATEST_VENV)/bin/python -m pip install -q --upgrade --upgrade-strategy eager --no-build-isolation \
		-e ".[dev,bench]" "$(TORCH_SPEC)" $(PIP_TORCH_ARGS)
	@$(LATEST_VENV)/bin/python -m pip freeze --exclude-editable | grep -iE '^(torch|transformers|kernels|peft|accelerate|triton|tokenizers|huggingface.hub)=='
	$(LATEST_VENV)/bin/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# Re-pin constraints/tested.txt to what `make test-latest` just tested (then commit it with the reason).
lock:
	@test -x $(LATEST_VENV)/bin/python || { echo "run make test-latest first"; exit 1; }
	{ grep '^#' $(CONSTRAINTS) | grep -v '^# pinned'; \
	  echo "# pinned $$(date -u +%F) from $$($(LATEST_VENV)/bin/python -c 'import sys, platform; print("Python", sys.version.split()[0], platform.system(), platform.machine())')"; \
	  $(LATEST_VENV)/bin/python -m pip freeze --exclude-editable | grep -v '^torch=='; } \
		> $(CONSTRAINTS).tmp && mv $(CONSTRAINTS).tmp $(CONSTRAINTS)
	@git diff --stat -- $(CONSTRAINTS) || true

lint: $(STAMP)
	$(PY) -m ruff check vkd_fast tests benchmarks examples setup.py

bench: $(STAMP)
	$(PY) benchmarks/bench_feature_distill.py --quick
	$(PY) benchmarks/bench_cache.py --quick
	$(PY) benchmarks/bench_unlearn_step.py --quick
	$(PY) benchmarks/bench_visual_only.py --size small
	$(PY) benchmarks/plot.py

clean:
	rm -rf build *.egg-info vkd_fast/_C*.so .pytest_cache .venv-compat .venv-latest demo_output
