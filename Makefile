# shopcast: `make run` and `make test` work on a fresh Debian machine (they install what they need).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NATIVE := native/.built
APT_PACKAGES := ffmpeg chromium prometheus nginx srt-tools postgresql haproxy
# Headers the native build links against (optional: without them SRT is reported unavailable).
BUILD_APT_PACKAGES := libsrt-openssl-dev

.PHONY: run test fuzz fuzz-hypothesis lint bench system-deps install native clean

$(STAMP): requirements.txt requirements-dev.txt setup.py pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q --no-build-isolation --no-deps -e .
	touch $@

$(NATIVE): $(STAMP) $(wildcard native/*.pyx native/*.pxd)
	@for p in $(BUILD_APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || { \
		echo "installing Debian package $$p"; apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$p || \
		echo "$$p not installed: building without it"; }; done
	$(BIN)/python setup.py -q build_ext --inplace
	touch $@

NODE_STAMP := node_modules/.installed
$(NODE_STAMP): package.json
	command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm; }
	npm install --no-audit --no-fund --silent
	touch $@

# hls.js as the package serves it (setup.py's build copies it too, for a wheel).
HLS_VENDOR := shopcast/static/vendor/hls.min.js
$(HLS_VENDOR): $(NODE_STAMP) $(STAMP)
	$(BIN)/python setup.py -q vendor_hls

install: $(STAMP) $(NATIVE) $(NODE_STAMP) $(HLS_VENDOR)
native: $(NATIVE)

# Debian packages the tests drive (real clients); apt-get update only when something is missing.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

run: install
	$(BIN)/shopcast serve --config shopcast.toml

test: install system-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider tests
	SHOPCAST_NO_EXTENSIONS=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/ingest

# Every parser that reads network input (tests/fuzz/targets.py: RTMP handshake/chunk/session with
# AMF0, FLV and E-RTMP, codec records, MPEG-TS, edge and origin HTTP, WHIP SDP; both twins) under
# atheris, FUZZ_RUNS inputs each, niced; not part of `make test`. Findings: build/fuzz/findings.
FUZZ_RUNS ?= 1000000
FUZZ_STAMP := $(VENV)/.fuzz-installed
$(FUZZ_STAMP): requirements-fuzz.txt $(STAMP)
	$(BIN)/pip install -q -r requirements-fuzz.txt
	touch $@
fuzz: install $(FUZZ_STAMP)
	$(BIN)/python -m tests.fuzz.run --runs $(FUZZ_RUNS)

# The hypothesis suites at FUZZ_SCALE times their `make test` examples, both twins.
FUZZ_SCALE ?= 20
fuzz-hypothesis: install
	SHOPCAST_FUZZ_SCALE=$(FUZZ_SCALE) $(BIN)/python -m pytest -q -p no:cacheprovider tests --hypothesis-show-statistics
	SHOPCAST_FUZZ_SCALE=$(FUZZ_SCALE) SHOPCAST_NO_EXTENSIONS=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/ingest --hypothesis-show-statistics

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shopcast ingest transcode packager cdn_edge benchmarks

bench: install system-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider benchmarks --benchmark-only

clean:
	rm -rf build $(VENV) native/*.so native/*.c $(NATIVE) shopcast/static/vendor
