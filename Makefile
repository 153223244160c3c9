# One command each: `make demo` sets up and runs the workflow on generated demo data; `make test` sets up and
# runs every check CI runs. PYTHON may point at any Python 3.11+.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint clean

$(BIN)/snakemake: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[test]"
	touch $@

setup: $(BIN)/snakemake

demo: setup
	$(BIN)/snakemake --cores 2

lint: setup
	$(BIN)/ruff check .
	$(BIN)/snakefmt --check .
	$(BIN)/snakemake --lint

test: lint
	$(BIN)/pytest

clean:
	rm -rf results/* data/demo .snakemake
