# Two commands do all set-up on a fresh machine:
#   make demo   -> creates .venv, installs, runs the demo on a synthetic cohort
#   make test   -> creates .venv, installs, runs ruff (lint + format check) and pytest
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.brainmaps-installed
# The 3D viewer of 'brainmaps serve' (NiiVue, from npm; the browser never fetches it from outside)
VIEWER := src/brainmaps/serve/static/vendor/niivue.umd.js
DEMO_OUT ?= demo

.PHONY: demo test lint venv viewer bench clean

venv: $(STAMP) viewer

# torch==2.13.0 is installed first so that pip never resolves a CUDA build of torch.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test,serve]"
	touch $(STAMP)

# npm ci installs the versions of web/package-lock.json; without npm the server still runs
# (predictions and downloads) and its page says the viewer is missing.
viewer: $(VIEWER)

$(VIEWER): web/package.json web/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix web --no-audit --no-fund --loglevel=error && \
		mkdir -p $(dir $(VIEWER)) && \
		cp web/node_modules/@niivue/niivue/dist/niivue.umd.js $(VIEWER).tmp && \
		mv $(VIEWER).tmp $(VIEWER); \
	else \
		echo "npm not found: the web page of 'brainmaps serve' will have no 3D viewer"; \
	fi

lint: $(STAMP) viewer
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: lint
	$(BIN)/python -m pytest

demo: $(STAMP) viewer
	$(BIN)/brainmaps demo --out $(DEMO_OUT)

bench: $(STAMP)
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) build src/*.egg-info .pytest_cache .ruff_cache web/node_modules \
		$(dir $(VIEWER))
