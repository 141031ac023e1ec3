# ksense: the two commands a user needs are `make run` and `make test`.
CARGO ?= cargo
ARGS ?=

.PHONY: deps build run test test-unit lint soak bench clean

deps:
	./scripts/install-deps.sh

build: deps
	$(CARGO) build --release --locked

# Serve on :9827 (needs root, or CAP_BPF and CAP_PERFMON). Extra flags: make run ARGS="--log.level debug"
run: build
	./target/release/ksense $(ARGS)

# Every test: unit, BPF-in-the-kernel (root), real Prometheus, deployment artefacts.
test:
	./scripts/install-deps.sh --test
	$(CARGO) build --release --locked
	$(CARGO) test --release --locked -- --test-threads=1
	@if [ -x tests/deploy/run-all.sh ]; then tests/deploy/run-all.sh; fi
	bench/soak.py --minutes $(SOAK_MINUTES)
	bench/smoke.sh

# Soak under stress-ng (root): RSS growth, failed scrapes, counter resets. make soak SOAK_MINUTES=60
SOAK_MINUTES ?= 2
soak: build
	bench/soak.py --minutes $(SOAK_MINUTES)

# What CI checks besides the tests: formatting and clippy, warnings as errors.
lint: deps
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

# What needs no root and no kernel: unit tests, the command line, and the
# HTTP, TLS, format and OTLP tests served in-process from a fake source.
test-unit:
	$(CARGO) test --locked --lib --test cli --test layers --test web --test exposition --test otlp

# What ksense costs (root): BPF ns/run against an empty floor and a pid-hash
# runqlat, user-space CPU, scrape latency, memory. Prints a table.
bench:
	$(CARGO) bench --locked --bench cost

clean:
	$(CARGO) clean
