# Kelvinpi: `make run` (emulators + appliance + front panel), `make test` (the suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STATIC := appliance/static/vendor/uPlot.iife.min.js
CROSSBAR := .venv-crossbar/bin/crossbar

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

# crossbar pins its own dependencies: its own venv, used by the uplink tests as the real router.
$(CROSSBAR):
	$(PY) -m venv .venv-crossbar
	.venv-crossbar/bin/pip install -q --upgrade pip
	.venv-crossbar/bin/pip install -q crossbar

run: $(STAMP) $(STATIC)
	$(BIN)/python -m appliance.devrun

test: $(STAMP) $(STATIC) $(CROSSBAR) ci-deps
	$(BIN)/python -m pytest -q tests

bench: $(STAMP)
	$(BIN)/python -m appliance.bench

# Debian packages the tests use: chromium (front panel), influxdb (InfluxDB uplink),
# mtools/dosfstools/e2fsprogs/fdisk (image assembler), systemd (unit verification).
# Installed when running as root (CI); otherwise the tests that need them say what is missing.
ci-deps:
	@missing=""; command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	  command -v influxd >/dev/null 2>&1 || missing="$$missing influxdb"; \
	  command -v mcopy >/dev/null 2>&1 || missing="$$missing mtools"; \
	  command -v mkfs.vfat >/dev/null 2>&1 || missing="$$missing dosfstools"; \
	  command -v debugfs >/dev/null 2>&1 || missing="$$missing e2fsprogs"; \
	  command -v sfdisk >/dev/null 2>&1 || missing="$$missing fdisk"; \
	  command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	    else echo "missing Debian packages:$$missing (sudo apt-get install$$missing); their tests will be skipped"; fi; fi

clean:
	rm -rf $(VENV) .venv-crossbar node_modules build *.egg-info var
