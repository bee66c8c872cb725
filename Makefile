# mandate: the commands a new machine needs. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: test fmt-check clippy unit crds e2e e2e-build cluster-up cluster-down help bench-admission bench-reconcile bench-authz

help:
	@echo "make test         fmt check, clippy -D warnings, unit tests (incl. CRD drift), e2e on a local control plane"
	@echo "make unit         unit and in-process tests only"
	@echo "make e2e          start the local control plane, run the end-to-end suite, stop it"
	@echo "make crds         regenerate crds/ and charts/mandate/crds/ from the Rust types"
	@echo "make cluster-up   start the local control plane and leave it running (see e2e/cluster.sh env)"
	@echo "make cluster-down stop it"
	@echo "make demo         a first look: local control plane, mandate, samples, admitted and refused pods"
	@echo "make bench-admission / bench-reconcile / bench-authz   performance figures (benchmarks, not tests)"

test: fmt-check clippy unit e2e

# Rust components cannot be downloaded on every machine: a missing rustfmt or clippy is
# reported loudly and skipped rather than failing the build.
fmt-check:
	@if $(CARGO) fmt --version >/dev/null 2>&1; then \
		$(CARGO) fmt --all -- --check; \
	else \
		echo "!!!!! WARNING: cargo fmt is not installed: SKIPPING the format check !!!!!"; \
	fi

clippy:
	@if $(CARGO) clippy --version >/dev/null 2>&1; then \
		$(CARGO) clippy --workspace --all-targets -- -D warnings; \
	else \
		echo "!!!!! WARNING: cargo clippy is not installed: SKIPPING clippy !!!!!"; \
	fi

# Includes tests/crds_drift.rs, which fails when crds/ or the chart's CRDs are stale.
unit:
	$(CARGO) test --workspace --exclude mandate-e2e

crds:
	$(CARGO) run --quiet -- crds --out crds
	$(CARGO) run --quiet -- crds --out charts/mandate/crds
	$(CARGO) run --quiet -- crds --out config/crd/bases

e2e:
	bash e2e/run.sh

e2e-build:
	bash e2e/build.sh

cluster-up:
	bash e2e/cluster.sh up

cluster-down:
	bash e2e/cluster.sh down

.PHONY: demo static-build

# A first look at mandate on the local control plane (left running; stop it with make cluster-down).
demo:
	bash e2e/demo.sh

# The Dockerfile's static build step, without a container engine.
static-build:
	bash e2e/static-build.sh

# Benchmarks (not tests): figures for the admission path, the reconciler and the decision service.
bench-admission:
	bash e2e/bench-admission.sh

bench-authz:
	bash e2e/bench-authz.sh

bench-reconcile:
	bash e2e/cluster.sh up
	cargo build --release --bin mandate
	MANDATE_E2E_BINARY=$(CURDIR)/target/release/mandate cargo run --release -p mandate-e2e --bin bench_reconcile
