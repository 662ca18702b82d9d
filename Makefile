# Kelvinpi: `make run` (emulators + appliance + front panel), `make test` (the suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STATIC := appliance/static/vendor/uPlot.iife.min.js

.PHONY: run test bench ci-deps clean venv assets

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,uplink]'
	touch $(STAMP)

venv: $(STAMP)

$(STATIC): package.json
	npm install --no-audit --no-fund --silent
	mkdir -p appliance/static/vendor
	cp node_modules/uplot/dist/uPlot.iife.min.js node_modules/uplot/dist/uPlot.min.css appliance/static/vendor/

assets: $(STATIC)

run: $(STAMP) $(STATIC)
	$(BIN)/python -m appliance.devrun

test: $(STAMP) $(STATIC)
	$(BIN)/python -m pytest -q tests

bench: $(STAMP)
	$(BIN)/python -m appliance.bench

# Debian packages the browser tests need (CI runs as root on Debian 12).
ci-deps:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: install Debian's chromium package for the browser test"; fi; fi

clean:
	rm -rf $(VENV) node_modules build *.egg-info
