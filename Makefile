# The project's entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
.DEFAULT_GOAL := help

APT_PACKAGES := iproute2 iptables openssh-server openssh-client procps psmisc
CARGO ?= cargo
# Overridable knobs for the linearizability test.
TIME ?=
NODES ?=
WORKLOAD ?=
NEMESIS ?=
MUTATION ?=
DB ?=

.PHONY: help deps build test lint test-linearizability bench bench-checker bench-compare report

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

deps: ## install the apt packages the tests and the local cluster need (idempotent)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "apt packages present: $(APT_PACKAGES)"; fi

build: ## build every crate (release)
	$(CARGO) build --workspace --release

test: ## the test suite (what CI runs)
	$(CARGO) test --workspace

lint: ## formatting and clippy, warnings are errors
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test-linearizability: deps build ## a real local cluster under faults, checked (TIME= NODES= WORKLOAD= NEMESIS= MUTATION= DB=)
	./target/release/control test \
		$(if $(TIME),--time $(TIME)) $(if $(NODES),--nodes $(NODES)) \
		$(if $(WORKLOAD),--workload $(WORKLOAD)) $(if $(NEMESIS),--nemesis $(NEMESIS)) \
		$(if $(MUTATION),--mutation $(MUTATION)) $(if $(DB),--db $(DB))

bench: ## benchmarks of the Raft core, storage and checker (numbers printed with the setup)
	$(CARGO) bench --workspace

bench-checker: ## checker speed over the reference corpus and generated histories
	$(CARGO) run --release -p checker --bin checker -- bench

report: ## print the path of the latest report
	@ls -td results/*/latest 2>/dev/null | head -1 | sed 's|$$|/report.html|' || echo "no results yet"
