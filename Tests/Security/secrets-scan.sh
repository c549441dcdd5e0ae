#!/usr/bin/env bash
# Secrets scan: Redis + 2 API nodes at trace log level (deploy/local-cluster.sh), a small full
# load-test run through recording proxies, then every Redis key/value and every log line is
# searched for every device code, user code and access token issued (Tests/Security/secrets_scan.py).
#   Tests/Security/secrets-scan.sh [BUILD_DIR]   (default .build/debug; builds nothing)
set -euo pipefail
cd "$(dirname "$0")/../.."
build="${1:-.build/debug}"
for binary in "$build/deviceauth-server" "$build/deviceauth-loadtest"; do
  [ -x "$binary" ] || { echo "secrets-scan: $binary missing; build first" >&2; exit 2; }
done
dir="$(mktemp -d /tmp/deviceauth-secrets.XXXXXX)"
trap 'rm -rf "$dir"' EXIT
# TMPDIR puts the cluster's log folder inside $dir, where the scan finds it while the nodes run.
TMPDIR="$dir" timeout --signal=INT --kill-after=15 150 deploy/local-cluster.sh --nodes 2 --log-level trace --build "$build" -- \
  python3 Tests/Security/secrets_scan.py --build "$build" --logs "$dir"
