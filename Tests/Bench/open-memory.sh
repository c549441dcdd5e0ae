#!/usr/bin/env bash
# Harness memory per waiting device (issue 18): OPEN_MEMORY_DEVICES (default 100,000) devices arrive
# and wait (client loadtest-longpoll: interval 600 s, lifetime 1 h, so each polls at most once in the
# run and the nodes' load stays within this machine; nobody approves). Peak RSS of the harness by
# /usr/bin/time -v; prints BENCH bytes per waiting device against the 4 KB target.
#   Tests/Bench/open-memory.sh [BUILD_DIR]   (default .build/release)
set -euo pipefail
cd "$(dirname "$0")/../.."
build="${1:-.build/release}"
devices="${OPEN_MEMORY_DEVICES:-100000}"
rate="${OPEN_MEMORY_RATE:-2500}"
seconds=$(( (devices + rate - 1) / rate ))
[ -x /usr/bin/time ] || { echo "open-memory: /usr/bin/time missing (apt-get install time)" >&2; exit 2; }
out="$(mktemp -d "${TMPDIR:-/tmp}/open-memory.XXXXXX")"
trap 'rm -rf "$out"' EXIT
# Three nodes on the same machine; the harness alone is measured.
timeout --signal=INT --kill-after=15 900 deploy/local-cluster.sh --nodes 3 --build "$build" -- \
  /usr/bin/time -v -o "$out/time.txt" "$build/deviceauth-loadtest" http --model open --arrival-rate "$rate" --duration "$seconds" \
    --open-client loadtest-longpoll --mix approve=100 --approval-delay 3000 --drain "${OPEN_MEMORY_HOLD:-10}" \
    --source-addresses 4 --json "$out/report.json" >"$out/run.txt" 2>"$out/progress.txt" || true
tail -n 30 "$out/run.txt"
python3 - "$out" "$devices" <<'PY'
import json, re, sys
out, devices = sys.argv[1], int(sys.argv[2])
time = open(f"{out}/time.txt").read()
rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", time).group(1))
report = json.load(open(f"{out}/report.json"))
peak = report["open"]["peak_waiting"]
per = rss_kb * 1024 / max(1, peak)
print(f"BENCH loadtest_open_memory_per_waiting_device ours={per:.0f} baseline=4096 unit=bytes ratio={per / 4096:.3f}")
print(f"  peak waiting devices {peak} (of {devices} arrivals {report['open']['counters']['arrivals']}), harness peak RSS {rss_kb / 1024:.1f} MiB "
      f"(whole process, including the fixed part), issue failures {report['open']['counters']['issue_failures']}; target <= 4096 B at >= 100,000 waiting")
PY
