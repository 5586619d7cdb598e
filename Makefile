# Two commands do all set-up on a fresh machine:
#   make demo   -> creates .venv, installs, runs the demo on a synthetic cohort
#   make test   -> creates .venv, installs, runs ruff (lint + format check) and pytest
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.brainmaps-installed
DEMO_OUT ?= demo

.PHONY: demo test lint venv bench clean

venv: $(STAMP)

# torch==2.13.0 is installed first so that pip never resolves a CUDA build of torch.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: lint
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/brainmaps demo --out $(DEMO_OUT)

bench: $(STAMP)
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) build src/*.egg-info .pytest_cache .ruff_cache
