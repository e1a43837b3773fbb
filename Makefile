# Everything a person types twice. `make test` and `make demo` work on a fresh machine: each builds .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo lint format bench semconv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) scripts/gen_semconv.py --check
	$(PY) -m pytest -q -p no:cacheprovider

demo: $(STAMP)
	$(PY) -m mltrack_otel.cli demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

semconv: $(STAMP)
	$(PY) scripts/gen_semconv.py

bench: $(STAMP)
	$(PY) -m benchmarks.overhead

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache mlflow.db
