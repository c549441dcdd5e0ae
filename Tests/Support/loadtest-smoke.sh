#!/usr/bin/env bash
# The CI-sized load test: Redis + 3 API nodes from the debug build, a few hundred devices of every
# scenario (refresh-token rotation, racing refreshes and revocation among them), under a minute. Builds nothing (LOADTEST_BUILD_DIR overrides .build/debug). Exits non-zero if an invariant fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
build="${LOADTEST_BUILD_DIR:-.build/debug}"
for binary in "$build/deviceauth-server" "$build/deviceauth-loadtest"; do
  [ -x "$binary" ] || { echo "loadtest-smoke: $binary missing; run swift build first" >&2; exit 2; }
done
exec timeout --signal=INT --kill-after=15 120 deploy/local-cluster.sh --nodes 3 --build "$build" -- \
  "$build/deviceauth-loadtest" http --devices "${LOADTEST_SMOKE_DEVICES:-300}" --concurrency "${LOADTEST_SMOKE_CONCURRENCY:-100}" \
    --duration 40 --think-time-ms 100-600 --seed "${LOADTEST_SMOKE_SEED:-42}" \
    --mix "${LOADTEST_SMOKE_MIX:-approve=45,refresh=20,deny=15,abandon=10,misbehave=10}"
