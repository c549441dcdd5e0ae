#!/usr/bin/env bash
# The peer in the same run (issue 18): the same open scenario (arrival rate, log-normal decision delay,
# interval polling with slow_down honoured, approve/deny on the verification page, abandoned devices)
# by deviceauth-loadtest --model open and by Locust's FastHttpUser (Tests/Bench/locust_open.py; pip
# installs locust if missing) against the same three nodes, one after the other; then wrk on the token
# endpoint as the ceiling. CPU of each load generator from /proc/<pid>/stat (utime+stime), memory from
# its peak RSS (VmHWM). Prints BENCH lines.
#   Tests/Bench/harness-vs-locust.sh [BUILD_DIR]   (default .build/release)
set -euo pipefail
cd "$(dirname "$0")/../.."
build="${1:-.build/release}"
python3 -c "import locust" 2>/dev/null || python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore locust
command -v wrk >/dev/null || { echo "harness-vs-locust: wrk missing (apt-get install wrk)" >&2; exit 2; }
export BENCH_BUILD="$build" BENCH_RATE="${BENCH_RATE:-40}" BENCH_SECONDS="${BENCH_SECONDS:-60}" BENCH_DELAY="${BENCH_DELAY:-2-10}"
exec timeout --signal=INT --kill-after=15 900 deploy/local-cluster.sh --nodes 3 --build "$build" -- python3 - <<'PY'
import csv, json, os, subprocess, sys, tempfile, time

build, rate, seconds, delay = os.environ["BENCH_BUILD"], os.environ["BENCH_RATE"], int(os.environ["BENCH_SECONDS"]), os.environ["BENCH_DELAY"]
nodes = os.environ["NODE_URLS"]
tick = os.sysconf("SC_CLK_TCK")
tmp = tempfile.mkdtemp(prefix="harness-vs-locust.")

def watch(process):
    """CPU seconds (utime+stime of the process and its waited-for children) and peak RSS, read until it exits."""
    cpu, hwm = 0.0, 0
    while process.poll() is None:
        try:
            fields = open(f"/proc/{process.pid}/stat").read().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / tick
            for line in open(f"/proc/{process.pid}/status"):
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
        time.sleep(0.2)
    return cpu, hwm

report = f"{tmp}/ours.json"
ours = subprocess.Popen([f"{build}/deviceauth-loadtest", "http", "--model", "open", "--arrival-rate", rate, "--duration", str(seconds),
                         "--approval-delay", delay, "--mix", "approve=60,deny=15,abandon=25", "--drain", "0", "--json", report],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
ours_cpu, ours_rss = watch(ours)
data = json.load(open(report))
ours_requests = sum(row["count"] for row in data["rows"])
ours_elapsed = data["elapsed_seconds"]
waiting = max(1, data["open"]["peak_waiting"])
timeline = data["open"]["timeline"]
ours_peak_rps = max((p["requests"] for p in timeline), default=0)

env = dict(os.environ, LOCUST_NODES=nodes, LOCUST_DELAY=delay)
locust = subprocess.Popen([sys.executable, "-m", "locust", "-f", "Tests/Bench/locust_open.py", "--headless", "-u", str(waiting),
                           "-r", rate, "-t", f"{seconds}s", "--csv", f"{tmp}/locust", "--only-summary", "--stop-timeout", "0"],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
locust_cpu, locust_rss = watch(locust)
locust_requests = 0
with open(f"{tmp}/locust_stats.csv") as handle:
    for row in csv.DictReader(handle):
        if row["Name"] == "Aggregated":
            locust_requests = int(row["Request Count"])

# wrk: polls of one pending code (answered slow_down: a full script call each), 2 threads, 64 connections.
import urllib.request, urllib.parse
node = nodes.split(",")[0]
grant = json.loads(urllib.request.urlopen(urllib.request.Request(node + "/oauth/device_authorization",
                   data=b"client_id=loadtest-longpoll")).read())
body = urllib.parse.urlencode({"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": grant["device_code"],
                               "client_id": "loadtest-longpoll"})
open(f"{tmp}/poll.lua", "w").write(f'wrk.method = "POST"\nwrk.body = "{body}"\nwrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n')
wrk = subprocess.run(["wrk", "-t2", "-c64", "-d10s", "-s", f"{tmp}/poll.lua", node + "/oauth/token"], capture_output=True, text=True).stdout
wrk_rps = float(next(line.split()[1] for line in wrk.splitlines() if line.startswith("Requests/sec")))

ours_per_cpu = ours_requests / max(0.01, ours_cpu)
locust_per_cpu = locust_requests / max(0.01, locust_cpu)
print(f"BENCH loadtest_requests_per_cpu_second ours={ours_per_cpu:.0f} baseline={locust_per_cpu:.0f} unit=requests/cpu-s "
      f"ratio={ours_per_cpu / max(1e-9, locust_per_cpu):.2f} target=5")
print(f"  ours: {ours_requests} requests in {ours_elapsed:.1f} s on {ours_cpu:.2f} CPU-s; locust (FastHttpUser, {waiting} users, spawn {rate}/s): "
      f"{locust_requests} requests in {seconds} s on {locust_cpu:.2f} CPU-s; same nodes, arrivals {rate}/s for {seconds} s, decision delay {delay} s")
ours_mem, locust_mem = ours_rss / waiting, locust_rss / waiting
print(f"BENCH loadtest_memory_per_simulated_device ours={ours_mem:.0f} baseline={locust_mem:.0f} unit=bytes ratio={ours_mem / max(1, locust_mem):.3f}")
print(f"  peak RSS ours {ours_rss / 2**20:.1f} MiB, locust {locust_rss / 2**20:.1f} MiB, {waiting} devices (fixed parts included)")
print(f"BENCH loadtest_token_endpoint_ceiling ours={ours_peak_rps:.0f} baseline={wrk_rps:.0f} unit=requests/s ratio={ours_peak_rps / max(1, wrk_rps):.3f}")
print(f"  ours: busiest second of the open run (all endpoints); wrk -t2 -c64 -d10s on POST /oauth/token (one pending code, slow_down answers)")
PY
