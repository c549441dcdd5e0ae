#!/usr/bin/env bash
# The knee of the open model (issue 18): --find-max raises the arrival rate step by step until the
# p99 of token polls (from the intended send time) passes FIND_MAX_P99_MS or 1 % of requests fail,
# for 1 and for 3 nodes. Prints a BENCH line per node count.
#   Tests/Bench/open-find-max.sh [BUILD_DIR]   (default .build/release)
set -euo pipefail
cd "$(dirname "$0")/../.."
build="${1:-.build/release}"
p99="${FIND_MAX_P99_MS:-50}"
steps="${FIND_MAX_STEPS:-20:20:10:2000}"
for nodes in 1 3; do
  out="$(mktemp "${TMPDIR:-/tmp}/find-max.XXXXXX.json")"
  timeout --signal=INT --kill-after=15 1200 deploy/local-cluster.sh --nodes "$nodes" --build "$build" -- \
    "$build/deviceauth-loadtest" http --model open --find-max --find-max-steps "$steps" --max-p99-ms "$p99" --max-error-rate 0.01 \
      --approval-delay 2-10 --drain 0 --json "$out" 2>/dev/null | grep -E "find-max|KNEE" || true
  python3 - "$out" "$nodes" "$p99" <<'PY'
import json, sys
path, nodes, p99 = sys.argv[1], sys.argv[2], sys.argv[3]
knee = json.load(open(path))["open"]["find_max"]["knee"]
rate = knee.get("arrival_rate") or 0
print(f"BENCH loadtest_find_max_knee_{nodes}_node{'s' if nodes != '1' else ''} ours={rate:.0f} baseline={p99} unit=arrivals/s "
      f"ratio=- polls/s={knee.get('polls_per_second') or 0:.0f} waiting={knee.get('waiting_devices') or 0} broke_at={knee.get('broke_at')} ({knee.get('reason')})")
PY
  rm -f "$out"
done
