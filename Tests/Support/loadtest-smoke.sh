#!/usr/bin/env bash
# The CI-sized load test: Redis + 3 API nodes from the debug build, a few hundred devices of every
# scenario (refresh-token rotation, racing refreshes and revocation among them), under a minute, then
# a ~15 s open-model pass (issue 18: arrivals at a rate, waiting devices in a due-time heap, short
# approval delays). Builds nothing (LOADTEST_BUILD_DIR overrides .build/debug). Exits non-zero if an
# invariant fails. No latency threshold: timing gates have no place in make test.
set -euo pipefail
cd "$(dirname "$0")/../.."
build="${LOADTEST_BUILD_DIR:-.build/debug}"
for binary in "$build/deviceauth-server" "$build/deviceauth-loadtest"; do
  [ -x "$binary" ] || { echo "loadtest-smoke: $binary missing; run swift build first" >&2; exit 2; }
done
timeout --signal=INT --kill-after=15 120 deploy/local-cluster.sh --nodes 3 --build "$build" -- \
  "$build/deviceauth-loadtest" http --devices "${LOADTEST_SMOKE_DEVICES:-300}" --concurrency "${LOADTEST_SMOKE_CONCURRENCY:-100}" \
    --duration 40 --think-time-ms 100-600 --seed "${LOADTEST_SMOKE_SEED:-42}" \
    --mix "${LOADTEST_SMOKE_MIX:-approve=45,refresh=20,deny=15,abandon=10,misbehave=10}"
echo "--- open model: ${LOADTEST_SMOKE_OPEN_RATE:-20} devices/s for 15 s, approvals after 0.2-2 s (invariants only)"
# Clients with a 1 s interval (loadtest) and a 5 s lifetime (loadtest-abandon) keep the pass short.
exec timeout --signal=INT --kill-after=15 120 deploy/local-cluster.sh --nodes 3 --build "$build" -- \
  "$build/deviceauth-loadtest" http --model open --arrival-rate "${LOADTEST_SMOKE_OPEN_RATE:-20}" --duration 15 \
    --approval-delay 0.2-2 --open-client loadtest --open-abandon-client loadtest-abandon --misbehave-client loadtest-abandon \
    --mix approve=60,deny=15,abandon=10,misbehave=15 --drain 30 --source-addresses 2 --seed "${LOADTEST_SMOKE_SEED:-42}"
