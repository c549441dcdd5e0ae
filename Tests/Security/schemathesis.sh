#!/usr/bin/env bash
# Runs schemathesis (property-based API testing from the OpenAPI document) against a live
# deviceauth-server: development mode on a free loopback port with its embedded Redis, stopped
# afterwards in every case. Fails on any 5xx, any response that does not match the document
# (status, content type, headers, schema: every OAuth error body is checked against the RFC 6749
# error schema) and any schema-invalid request that is accepted.
#
# Excluded checks, and why:
#   positive_data_acceptance  a schema-valid request is not a valid OAuth request: a random
#                             client_id is an unknown client (401), a random device_code an
#                             unknown grant (400). Refusing them is the point of the server.
#   ignored_auth, use_after_free, ensure_resource_availability, object_level_authorization
#                             need security schemes or links the document does not declare
#                             (client authentication is per request body, and the flow's
#                             state is not addressable by URL); they would test nothing.
#
#   Tests/Security/schemathesis.sh [BUILD_DIR]     (default .build/debug; builds nothing)
# Env: SCHEMATHESIS_VENV (default .build/venv-schemathesis), SCHEMATHESIS_MAX_EXAMPLES (40),
#      SCHEMATHESIS_REPORT (a JUnit XML file to write).
set -euo pipefail
cd "$(dirname "$0")/../.."
build="${1:-.build/debug}"
server="$build/deviceauth-server"
[ -x "$server" ] || { echo "schemathesis: $server missing; build it first" >&2; exit 2; }
venv="${SCHEMATHESIS_VENV:-.build/venv-schemathesis}"
if [ ! -x "$venv/bin/st" ]; then
  echo "schemathesis: installing into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'schemathesis>=4.30,<5'
fi

workdir="$(mktemp -d "${TMPDIR:-/tmp}/deviceauth-schemathesis.XXXXXX")"
pid=""
cleanup() {
  local rc=$?
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ]; then echo "schemathesis: server log kept in $workdir/server.log" >&2; else rm -rf "$workdir"; fi
  exit "$rc"
}
trap cleanup EXIT INT TERM

port=$(python3 Tests/Support/free-port.py)
# Device-authorization limits off so the fuzzer reaches the success path; the unknown-device-code
# limit stays on (lower than the default) so 429 answers are produced and checked too.
cat >"$workdir/config.json" <<JSON
{
  "rate_limits": { "device_authorizations_per_ip": 0, "device_authorizations_per_client": 0, "unknown_device_codes_per_ip": 20 },
  "clients": [
    { "client_id": "demo-cli", "display_name": "Demo CLI", "scopes": ["profile", "email"] },
    { "client_id": "svc", "display_name": "Service", "scopes": ["profile"], "secret": "schemathesis-secret" }
  ]
}
JSON
"$server" --host 127.0.0.1 --port "$port" --config "$workdir/config.json" --dev >"$workdir/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 150); do
  curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$port/readyz" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$workdir/server.log" >&2; exit 1; }
  sleep 0.2
done

report=()
[ -n "${SCHEMATHESIS_REPORT:-}" ] && report=(--report junit --report-junit-path "$(realpath -m "$SCHEMATHESIS_REPORT")")
start=$(date +%s)
venv="$(cd "$venv" && pwd)"
set +e
# From the temporary folder, so schemathesis' own cache (.schemathesis/) does not land in the repo.
(cd "$workdir" && "$venv/bin/st" run "http://127.0.0.1:$port/openapi.json" \
  --checks all \
  --exclude-checks positive_data_acceptance,ignored_auth,use_after_free,ensure_resource_availability,object_level_authorization \
  --phases examples,coverage,fuzzing \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-40}" \
  --workers 1 --request-timeout 10 --seed 8628 \
  --suppress-health-check all --no-color "${report[@]}") 2>&1 | tee "$workdir/st.log"
status=${PIPESTATUS[0]}
set -e
echo "schemathesis: exit $status in $(( $(date +%s) - start )) s; 5xx in the server log: $(grep -c '"http.status":"5\|http.status=5' "$workdir/server.log" || true)"
exit "$status"
