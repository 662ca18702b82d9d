# Kelvinpi: `make run` (emulators + appliance + front panel), `make test` (the suite; `make check`: its fast tier).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STATIC := appliance/static/vendor/uPlot.iife.min.js
CROSSBAR := .venv-crossbar/bin/crossbar

.PHONY: run test lint bench bench-retention bench-web bench-alarms bench-share soak ci-deps clean venv assets image image-test image-repro config-doc docs bundle image-update-test

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# appliance/__init__.py holds the version (pyproject reads it): a new one reinstalls the metadata
$(STAMP): pyproject.toml appliance/__init__.py | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
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
	$(BIN)/python -m tools.devrun

# Two tiers, every test run once: `make check` (under a minute) deselects the tests marked as needing an
# outside program (crossbar, influxd, prometheus, victoria-metrics, chromium, the image tools) or as slow;
# `make test` runs `make check` first, then exactly those. Markers: pyproject.toml; set from fixtures in
# tests/conftest.py; tests/test_tiers.py checks the split. Exit 5 (nothing selected, e.g. with -k) is no failure.
# Both tiers run in parallel processes (pytest-xdist): the fast tier on one per core, the rest on more,
# since its tests mostly wait on servers, browsers and emulated time rather than compute. Every test
# keeps its own ports (port 0), folders (tmp_path) and servers; the rest tier keeps each file on one
# worker (--dist loadfile), as some files share one service across their tests, in order.
# PYTEST_ARGS="-n 0" runs them in one process.
OUTSIDE := slow or crossbar or influxd or prometheus or victoria or chromium or image
CHECK_WORKERS ?= 2
REST_WORKERS ?= 3
PYTEST_ARGS ?=
.PHONY: check
check: $(STAMP) $(STATIC)
	$(BIN)/python -m pytest -q --durations=5 -n $(CHECK_WORKERS) -m "not ($(OUTSIDE))" $(PYTEST_ARGS) tests || [ $$? -eq 5 ]

test: $(STAMP) $(STATIC) $(CROSSBAR) ci-deps
	$(MAKE) --no-print-directory check
	$(BIN)/python -m pytest -q --durations=15 -n $(REST_WORKERS) --dist loadfile -m "$(OUTSIDE)" $(PYTEST_ARGS) tests || [ $$? -eq 5 ]

# ruff check (pyflakes, pycodestyle's errors, bugbear, simplify, pyupgrade, isort) and ruff format --check
# (`ruff format .` fixes it) over the tree; mypy (pydantic plugin) on drivers/, appliance/, firmware_host/,
# every module checked (no baseline); both configured in pyproject.toml
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# docs/config.md from the config models' descriptions (tests/test_config.py fails when it is stale)
config-doc: $(STAMP)
	$(BIN)/python -m appliance.config_doc --write docs/config.md

# Every generated page of docs/: config.md (config models), cli.md (the argparse parsers), api.md (the
# OpenAPI document); tests/test_config.py and tests/test_docs.py fail when one is stale
docs: $(STAMP)
	$(BIN)/python -m tools.gen_docs

# The store against baselines run beside it (~10 min on 2 cores; knobs BENCH_DAYS, BENCH_WEAR_SECONDS,
# BENCH_DIR); InfluxDB 1.x is one of them: installed when root, else influx_wear_ratio prints nan. Last line:
#   bench: wear_ratio=W influx_wear_ratio=I bytes_per_sample=B query_ms=Q query_speedup=S ingest_ratio=R rss_mb=M
bench: $(STAMP)
	@command -v influxd >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq influxdb >/dev/null; \
	  else echo "missing Debian package: influxdb (sudo apt-get install influxdb); influx_wear_ratio will be nan"; fi; }
	$(BIN)/python -m tools.bench

# Retention's longest write-lock hold on a 4.3 GB store that drops its older half (~15 min; builds the file
# under var/bench-retention, cold page cache). Knobs: BENCH_RETENTION_ARGS="--copies N --seconds S --keep/--reuse".
# Last line: bench-retention: file_gb=F after_gb=A blocks=N deleted=D passes=P seconds=S longest_ms=L p99_ms=Q where=W
bench-retention: $(STAMP)
	$(BIN)/python -m tools.bench_retention $(BENCH_RETENTION_ARGS)

# The web side under 50 keep-alive clients (~2.5 min): /api/v1/latest, /metrics and a 30-day Grafana query
# against the server's constant-response ceiling, with wrk (Debian's) as the load generator. Knobs
# BENCH_WEB_DAYS, BENCH_WEB_SECONDS; BENCH_WEB_ARGS="--root DIR" measures another checkout. Last line:
#   bench-web: latest_rps=R latest_ratio=X latest_p99_ms=P grafana_p99_ms=G overruns=O peak_rss_mb=M
bench-web: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
	  else echo "missing Debian package: wrk (sudo apt-get install wrk)"; exit 2; fi; }
	$(BIN)/python tools/bench_web.py $(BENCH_WEB_ARGS)

# The 3 a.m. path (~3 min, root for the full-disk half): kelvinpi run with both emulators and a webhook
# receiver on loopback; from the first reading past a threshold (the emulator's ledger) to the receiver's
# 2xx over 36 raises, with a writable store and with its tmpfs full; and the most notices one of 80
# flapping rules sends in a simulated hour. BENCH_ALARMS_ARGS="--root DIR" measures another checkout. Last line:
#   bench-alarms: p50_s=A p99_s=B p99_store_full_s=C flapping_notices_per_hour=F
bench-alarms: $(STAMP)
	$(BIN)/python -m tools.bench_alarms $(BENCH_ALARMS_ARGS)

# The share (issue 26, ~45 s): a client's query round trip through [instrument.share] against the same
# query straight to the emulated 372, and the poller's cycle time with 0, 1 and 4 active clients (each
# its own process), same run. Aims: round trip <= 1.5 x direct + one poller exchange; cycle time with
# 4 clients <= 1.2 x without. BENCH_SHARE_ARGS="--seconds 10 --rounds 3 --rate 50". Last line:
#   bench-share: direct_ms=D share_ms=S share_ratio=R cycle_ratio_4=C lost=L
bench-share: $(STAMP)
	$(BIN)/python -m tools.bench_share $(BENCH_SHARE_ARGS)

# The whole stack for a simulated week with random faults (~9 min); last line:
#   soak: produced=N stored=N served=N lost=N      e.g. make soak SOAK_ARGS="--days 30 --minutes 20"
soak: $(STAMP) $(CROSSBAR)
	$(BIN)/python -m tools.soak $(SOAK_ARGS)

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
	  command -v prometheus >/dev/null 2>&1 || missing="$$missing prometheus"; \
	  command -v victoria-metrics >/dev/null 2>&1 || missing="$$missing victoria-metrics"; \
	  command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	  command -v rauc >/dev/null 2>&1 || missing="$$missing rauc"; \
	  command -v mksquashfs >/dev/null 2>&1 || missing="$$missing squashfs-tools"; \
	  command -v dbus-test-tool >/dev/null 2>&1 || missing="$$missing dbus-tests"; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	    else echo "missing Debian packages:$$missing (sudo apt-get install$$missing); their tests will be skipped"; fi; fi

# The SD image (needs root; 27 min on a shared 2-core box, most of it mmdebstrap under qemu-user):
# images/out/kelvinpi-<version>-arm64.img(.zst).
# Its wheels are exactly pyproject's dependencies (aarch64 builds); qemu-user's binfmt entry is enabled first.
IMAGE_HOST_DEBS := mmdebstrap qemu-user-static binfmt-support arch-test dosfstools mtools fdisk e2fsprogs zstd qemu-system-arm \
  rauc squashfs-tools device-tree-compiler openssl
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
# KERNEL=backports: the <suite>-backports kernel with the Raspberry Pi 5's RP1 drivers (untested on a Pi 5)
KERNEL ?= stable
# The update bundles' trust: the image's RAUC keyring and the key bundles are signed with. The defaults are
# the development pair in images/keys (named DO-NOT-SHIP: tests only); a lab or a release passes its own.
KEYRING ?= images/keys/dev-DO-NOT-SHIP.cert.pem
SIGNING_KEY ?= images/keys/dev-DO-NOT-SHIP.key.pem
SIGNING_CERT ?= images/keys/dev-DO-NOT-SHIP.cert.pem
IMG := images/out/kelvinpi-$(VERSION)-arm64$(if $(filter backports,$(KERNEL)),-pi5,)
image: $(STAMP) $(STATIC)
	@[ "$$(id -u)" = 0 ] || { echo "make image needs root (mmdebstrap --mode=root)"; exit 2; }
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(IMAGE_HOST_DEBS) >/dev/null
	bash images/sd/enable-binfmt.sh
	rm -rf images/out/wheels && mkdir -p images/out/wheels
	$(BIN)/pip wheel -q --no-deps -w images/out/wheels .
	$(BIN)/python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
	  > images/out/requirements.txt
	$(BIN)/pip download -q --only-binary=:all: --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 \
	  --platform manylinux_2_28_aarch64 --python-version 3.13 --implementation cp -d images/out/wheels \
	  -r images/out/requirements.txt
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct) WHEELS=$(CURDIR)/images/out/wheels KERNEL=$(KERNEL) \
	  KEYRING=$(abspath $(KEYRING)) bash images/sd/build-rootfs.sh images/out/rootfs
	bash images/sd/check-rootfs.sh images/out/rootfs
	python3 images/sd/manifest.py images/out/rootfs > $(IMG).manifest
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct) bash images/sd/assemble-image.sh images/out/rootfs $(IMG).img
	zstd -q -10 -T2 -f $(IMG).img
	cp images/out/packages.txt $(IMG).packages.txt
	cd images/out && sha256sum $(notdir $(IMG)).img $(notdir $(IMG)).img.zst > $(notdir $(IMG)).sha256

# A signed RAUC update bundle (verity) of the built rootfs (make image first): root + boot slot images.
# images/out/kelvinpi-<version>-arm64.raucb; install on a Pi with `kelvinpi update FILE` (docs/update.md).
bundle:
	@[ -d images/out/rootfs/usr ] || { echo "bundle: no images/out/rootfs: run make image first"; exit 2; }
	@command -v rauc >/dev/null && command -v mksquashfs >/dev/null || { [ "$$(id -u)" = 0 ] && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rauc squashfs-tools >/dev/null; } || \
	  { echo "bundle: needs rauc and squashfs-tools (apt-get install rauc squashfs-tools)"; exit 2; }
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct) VERSION=$(VERSION) SIGNING_KEY=$(abspath $(SIGNING_KEY)) \
	  SIGNING_CERT=$(abspath $(SIGNING_CERT)) KEYRING=$(abspath $(KEYRING)) \
	  bash images/sd/make-bundle.sh images/out/rootfs $(IMG).raucb

# Reproducibility: build twice from the same commit and compare the root manifests (~30 min, root).
image-repro:
	$(MAKE) image
	cp $(IMG).manifest images/out/first.manifest
	cp $(IMG).sha256 images/out/first.sha256
	$(MAKE) image
	diff -u images/out/first.manifest $(IMG).manifest && echo "image-repro: root manifests identical ($$(wc -l < $(IMG).manifest) paths)"
	if diff -q images/out/first.sha256 $(IMG).sha256 >/dev/null; then echo "image-repro: images bit-identical too"; \
	  else echo "image-repro: root manifests agree but the image files differ (see the two .sha256)"; fi

# Boots the newest image under qemu -M virt (TCG, ~2.5 min here) with Raspberry Pi Imager's user-data and
# network-config on its FAT and checks over SSH that the key, hostname, timezone and Wi-Fi took effect.
# Not part of `make test`: it needs a built image. IMAGE=path/to.img boots another one (e.g. the -pi5
# one: its kernel is generic arm64 too).
image-test: $(STAMP)
	@img=$${IMAGE:-$$(ls -t images/out/kelvinpi-*-arm64.img 2>/dev/null | head -1)}; \
	  [ -n "$$img" ] || { echo "image-test: no images/out/kelvinpi-*-arm64.img: run make image first (or set IMAGE=)"; exit 2; }; \
	  echo "image-test: $$img"; bash images/sd/boot-test.sh "$$img"

# A/B updates under qemu (~45 min here, root): the harness stands in for the Pi firmware's slot choice
# (autoboot.txt + the one-shot tryboot flag) and runs each scenario on a fresh copy of the newest image:
# good update commits, never-READY rolls back, power cuts while writing / during the try / after commit,
# bad signature and truncated bundles refused, newer store schema then rollback. Needs make image (the
# rootfs and .img); builds its bundles itself. Last line:
#   image-update: scenarios=N passed=P lost=L panel_s=S image_mib=M    (SCENARIOS="a f" runs some)
image-update-test: $(STAMP)
	@command -v influxd >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq influxdb >/dev/null; } || \
	  { echo "image-update-test: needs influxd (apt-get install influxdb)"; exit 2; }
	@img=$${IMAGE:-$$(ls -t images/out/kelvinpi-*-arm64.img 2>/dev/null | head -1)}; \
	  [ -n "$$img" ] || { echo "image-update-test: no images/out/kelvinpi-*-arm64.img: run make image first (or set IMAGE=)"; exit 2; }; \
	  $(BIN)/python images/sd/update-test.py --image "$$img" --rootfs images/out/rootfs $(if $(SCENARIOS),--scenarios $(SCENARIOS),)

clean:
	rm -rf $(VENV) .venv-crossbar node_modules build *.egg-info var
