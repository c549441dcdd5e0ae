# The two commands a new user needs: `make run` and `make test`. Both install what is missing.
SHELL := /bin/bash
SWIFT ?= swift
APT_PACKAGES := redis-server redis-tools libhiredis-dev pkg-config python3

.PHONY: run test deps build build-release bench loadtest clean

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	fi

build: deps
	$(SWIFT) build --build-tests

build-release: deps
	$(SWIFT) build -c release

run: build-release
	.build/release/deviceauth-bench client --duration 2

test: build
	Tests/Support/with-redis.sh $(SWIFT) test --skip-build --parallel

bench: build-release
	.build/release/deviceauth-bench client

clean:
	rm -rf .build
