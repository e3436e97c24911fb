# The two set-up commands of the README: `make demo` and `make test`.
# uv is installed with pip when missing; .venv is built from uv.lock (--frozen).

SHELL := /bin/bash
PYTHON ?= python3
UV = $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
VENV := .venv
STAMP := $(VENV)/.synced

.PHONY: demo test test-unit lint typecheck dashboard bench clean uv

uv:
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 \
	  || $(PYTHON) -m pip install --quiet uv

# Bytecode at install time: these machines set PYTHONDONTWRITEBYTECODE=1, so without it
# every command compiles each module it imports again (hpcfleet's own modules included).
$(STAMP): pyproject.toml uv.lock | uv
	$(UV) sync --frozen --compile-bytecode
	$(VENV)/bin/python -m compileall -q hpcfleet registry sites flows dashboard
	@touch $(STAMP)

demo: $(STAMP)  ## the embedded end-to-end example (state in $$HPCFLEET_HOME, default ~/.hpcfleet)
	$(VENV)/bin/hpcfleet demo

test: $(STAMP)  ## every test; the SLURM/sshd sandbox tests need root (they skip otherwise)
	$(VENV)/bin/pytest --durations=15

test-unit: $(STAMP)
	$(VENV)/bin/pytest tests/unit

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy registry sites flows hpcfleet dashboard

dashboard: $(STAMP)
	$(VENV)/bin/hpcfleet dashboard

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
