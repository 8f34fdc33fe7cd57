# The project's entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
.DEFAULT_GOAL := help

APT_PACKAGES := iproute2 iptables openssh-server openssh-client procps psmisc etcd-server etcd-client protobuf-compiler
CARGO ?= cargo
# Overridable knobs for the linearizability test.
TIME ?=
NODES ?=
WORKLOAD ?=
NEMESIS ?=
MUTATION ?=
DB ?=

.PHONY: help deps build test lint test-linearizability test-mapreduce bench bench-checker report

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
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

lint: ## formatting and clippy, warnings are errors
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Default: both workloads (kv, then register), TIME seconds of faults each (60 unless set),
# 5 nodes, the full nemesis mix. A mutation defaults to the partition nemesis, which is what
# exposes stale reads. Exit status 0 only if every run's every check passed.
LIN_WORKLOADS := $(if $(WORKLOAD),$(WORKLOAD),kv register)
LIN_NEMESIS := $(if $(NEMESIS),$(NEMESIS),$(if $(MUTATION),partition,all))
LIN_TIME := $(if $(TIME),$(TIME),60)

test-linearizability: deps build ## a real local cluster under faults, checked (TIME= NODES= WORKLOAD= NEMESIS= MUTATION= DB= READS=)
	@status=0; for w in $(LIN_WORKLOADS); do \
		echo "== control test --workload $$w --nemesis $(LIN_NEMESIS) --time $(LIN_TIME) $(if $(MUTATION),--mutation $(MUTATION))"; \
		./target/release/control test --workload $$w --nemesis $(LIN_NEMESIS) --time $(LIN_TIME) \
			$(if $(NODES),--nodes $(NODES)) $(if $(MUTATION),--mutation $(MUTATION)) \
			$(if $(DB),--db $(DB)) $(if $(READS),--reads $(READS)) || status=$$?; \
	done; \
	if [ $$status -eq 0 ]; then echo "test-linearizability: every check passed"; \
	else echo "test-linearizability: FAILED (exit $$status); see the report paths above"; fi; \
	exit $$status

# MapReduce crash tests on the local cluster: each APP in turn (default wc, indexer and the
# lab's crash app), WORKERS workers (4), a 3-replica coordinator, NEMESIS faults (default kill:
# workers and the coordinator's leader; also pause, partition, all). Exit 0 only if every run passed.
MR_APPS := $(if $(APP),$(APP),wc indexer crash)
MR_NEMESIS := $(if $(NEMESIS),$(NEMESIS),kill)

test-mapreduce: deps build ## MapReduce crash tests on a local cluster, output vs sequential (APP= WORKERS= NODES= NEMESIS= SEED=)
	@status=0; for a in $(MR_APPS); do \
		echo "== control mapreduce --app $$a --nemesis $(MR_NEMESIS)"; \
		./target/release/control mapreduce --app $$a --nemesis $(MR_NEMESIS) \
			$(if $(WORKERS),--workers $(WORKERS)) $(if $(NODES),--nodes $(NODES)) \
			$(if $(SEED),--seed $(SEED)) || status=$$?; \
	done; \
	if [ $$status -eq 0 ]; then echo "test-mapreduce: every check passed"; \
	else echo "test-mapreduce: FAILED (exit $$status); see the report paths above"; fi; \
	exit $$status

bench: ## benchmarks: Raft core, simulator, storage, transport, node commit latency, YCSB, MapReduce
	$(CARGO) bench --workspace

bench-checker: ## checker speed over the reference corpus and generated histories
	$(CARGO) run --release -p checker --bin checker-bench

report: ## print the path of the latest report
	@ls -td results/*/latest 2>/dev/null | head -1 | sed 's|$$|/report.html|' || echo "no results yet"

bench-shardkv: build ## sharded store: throughput with 1/2/3 groups (95/5 and 50/50), shard-move unavailability
	./target/release/control bench-shardkv $(if $(NODES),--nodes $(NODES))

# Our KV and etcd side by side, one run (~5 minutes with the defaults); flags for
# `control bench-compare` go in BENCH_ARGS, e.g. BENCH_ARGS="--duration 10 --connect all".
.PHONY: bench-compare
bench-compare: deps build ## our KV vs etcd: YCSB A/B/C x 1/16/64 clients, open loop; results/bench-compare/ (BENCH_ARGS=)
	$${CARGO_TARGET_DIR:-target}/release/control bench-compare $(BENCH_ARGS)
