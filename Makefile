# Two entry points: `make demo` and `make test`. Each creates .venv and installs
# what it needs from the package registry (torch comes as the registry's build).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint proto bench-wire clean

$(VENV)/.run-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[all]"
	touch $@

$(VENV)/.dev-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(VENV)/.run-installed $@

demo: $(VENV)/.run-installed
	$(VENV)/bin/splitrt demo

test: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check splitrt tests examples
	$(PY) -m pytest -q

bench-wire: $(VENV)/.run-installed
	$(VENV)/bin/splitrt bench wire

# Regenerate the committed gRPC stubs after editing protos/ (tests check they match).
proto: $(VENV)/.dev-installed
	$(PY) protos/generate.py

clean:
	rm -rf $(VENV) runs .pytest_cache
