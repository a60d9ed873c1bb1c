# One entry point for every check: `make test` (what .ci/run calls).
# Environments are created on demand and re-installed only when pyproject.toml or constraints.txt
# change (stamp files). `make help` lists the targets.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CORE_VENV := .venv-core
CORE_PY := $(CORE_VENV)/bin/python
DEPS := pyproject.toml constraints.txt
STAMP := $(VENV)/.installed
CORE_STAMP := $(CORE_VENV)/.installed

# Packages and tests that exist in this checkout (benchmarks/ may not exist yet).
LINT_PATHS := $(wildcard runtime runtime_ray runtime_monarch ppo rlrun tests benchmarks)

# Run the steps of `test` strictly in the order written, even under `make -j`.
.NOTPARALLEL:
.DEFAULT_GOAL := test
.DELETE_ON_ERROR:
.PHONY: help venv venv-core lint typecheck typecheck-core imports test-core test-py test demo \
	bench bench-quick bench-training clean distclean test-faults

help:
	@echo "make test            lint typecheck typecheck-core imports test-core test-py (fail fast)"
	@echo "make venv            $(VENV) with '.[ray,monarch,dev,plot]' (re-installed when $(DEPS) change)"
	@echo "make lint            ruff check + ruff format --check"
	@echo "make typecheck       mypy --config-file mypy.ini (packages + tests + tests/typing)"
	@echo "make typecheck-core  mypy --config-file mypy-core.ini -p runtime -p ppo (no ray allowed)"
	@echo "make imports         lint-imports (contracts in pyproject.toml)"
	@echo "make test-core       pytest -m 'not ray and not monarch' in $(CORE_VENV) (no ray, no monarch)"
	@echo "make test-py         the full pytest suite in $(VENV)"
	@echo "make test-faults     just the fault matrix (pytest -m faults; test-py runs it too)"
	@echo "make demo            python -m rlrun --config demo"
	@echo "make bench           the benchmark suite (python -m benchmarks.suite; BENCH_ARGS=--markdown)"
	@echo "make bench-quick     the suite's smoke run (--quick)"
	@echo "make bench-training  the slow training benchmarks (learning, async, learnability, soak)"
	@echo "make clean           caches and build artefacts (keeps the venvs); distclean: also venvs"

# --- environments --------------------------------------------------------------------------

venv: $(STAMP)

$(STAMP): $(DEPS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[ray,monarch,dev,plot]'
	touch $@

venv-core: $(CORE_STAMP)

# The core install: the `ray` and `monarch` extras are the only things that bring ray and
# torchmonarch, so '.[dev]' must not.
$(CORE_STAMP): $(DEPS)
	test -x $(CORE_PY) || $(PYTHON) -m venv $(CORE_VENV)
	$(CORE_VENV)/bin/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

# --- gates ---------------------------------------------------------------------------------

lint: $(STAMP)
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m ruff format --check $(LINT_PATHS)

typecheck: $(STAMP)
	$(PY) -m mypy --config-file mypy.ini

typecheck-core: $(STAMP)
	$(PY) -m mypy --config-file mypy-core.ini -p runtime -p ppo

# lint-imports puts the working directory first on sys.path, so it analyses this checkout even
# if the editable install's finder predates a package; the check below makes a package that is
# not (yet) a regular package fail with a clear message instead of a grimp traceback.
imports: $(STAMP)
	@for pkg in runtime runtime_ray runtime_monarch ppo rlrun; do \
	  test -f $$pkg/__init__.py || { echo "imports: $$pkg/__init__.py is missing"; exit 1; }; \
	done
	$(VENV)/bin/lint-imports

# --- tests ---------------------------------------------------------------------------------

test-core: $(CORE_STAMP)
	@if $(CORE_PY) -c 'import ray' >/dev/null 2>&1; then \
	  echo "test-core: ray is importable in $(CORE_VENV); the core install must not bring it"; \
	  exit 1; \
	fi
	@if $(CORE_PY) -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("monarch") is None)'; then \
	  echo "test-core: monarch is importable in $(CORE_VENV); the core install must not bring it"; \
	  exit 1; \
	fi
	$(CORE_PY) -m pytest -m "not ray and not monarch"

test-py: $(STAMP)
	$(PY) -m pytest

# The fault matrix alone (tests/faults on every backend); `test-py` runs it as well.
test-faults: $(STAMP)
	$(PY) -m pytest -m faults

test: lint typecheck typecheck-core imports test-core test-py

# --- running -------------------------------------------------------------------------------

demo: $(STAMP)
	$(PY) -m rlrun --config demo

bench: $(STAMP)
	$(PY) -m benchmarks.suite $(BENCH_ARGS)

bench-quick: $(STAMP)
	$(PY) -m benchmarks.suite --quick $(BENCH_ARGS)

# The slow benchmarks that train (minutes each); not part of `make bench`.
BENCH_TRAINING := $(wildcard benchmarks/bench_learning.py benchmarks/bench_async.py \
	benchmarks/bench_task_learnability.py benchmarks/bench_soak.py)

bench-training: $(STAMP)
	@set -e; for f in $(BENCH_TRAINING); do echo "== $$f"; $(PY) "$$f"; done

# --- housekeeping --------------------------------------------------------------------------

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache .hypothesis .import_linter_cache
	find . -path ./$(VENV) -prune -o -path ./$(CORE_VENV) -prune -o \
	  -type d -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(CORE_VENV)
