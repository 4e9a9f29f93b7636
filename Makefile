# Two commands: `make run` and `make test`. Everything else is a helper of theirs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEB_PACKAGES := bind9-dnsutils bind9-utils bind9 knot-dnsutils knot nsd dnsperf ddclient nftables iproute2 procps curl systemd wrk postgresql chromium

.PHONY: run test lint typecheck unit bench bench-xfr debs venv dist clean

# The compiled screen (setup.py) is built into src/ by the editable install: a change to
# its C source installs again.
$(STAMP): pyproject.toml setup.py src/controparte/dns/_screen.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/controparte serve

# The wheel that installation hosts install the agent from (docs/agent.md; the package
# is on no public index): dist/controparte-VERSION-py3-none-any.whl, pure Python (the
# agent runs on Linux and Windows alike; the compiled screen is for the server).
dist:
	$(PYTHON) -m venv build/dist-venv
	CONTROPARTE_PURE=1 build/dist-venv/bin/pip wheel -q --no-deps -w dist .

# Debian tools the tests and benchmarks drive for real (tests/debtools.py names each one's
# package; tests/unit/test_debtools.py checks this list); installed only when missing.
debs:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

test: debs $(STAMP) lint typecheck
	$(BIN)/pytest

bench: debs $(STAMP)
	$(BIN)/python bench/dns_bench.py
	$(BIN)/python bench/heartbeat_bench.py
	$(BIN)/python bench/heartbeat_bench.py --http-workers 2
	$(BIN)/python bench/pg_bench.py
	$(BIN)/python bench/xfr_bench.py
	$(BIN)/python bench/fuzz_bench.py

# Zone transfers alone: AXFR against Knot, DNS answers meanwhile, update -> answer on an
# NSD secondary.
bench-xfr: debs $(STAMP)
	$(BIN)/python bench/xfr_bench.py

clean:
	rm -rf $(VENV) var build dist .mypy_cache .ruff_cache .pytest_cache .hypothesis
	rm -f src/controparte/dns/_screen.*.so
