#!/usr/bin/env python3
"""Where the API node's CPU goes: `perf record` of `deviceauth-bench http` while wrk drives the
token endpoint (pending code) and while it drives the bare Hummingbird route, then the CPU per
request of each, split by library and by function, side by side (µs per request).

    python3 Tests/Bench/http_profile.py [--bench .build/release/deviceauth-bench] [--duration 8] [--top 40]

Each phase is recorded for `duration - 2` seconds starting one second after the bench announces
it (its `# round 1/1, …` progress lines), so start-up and the switch between servers are left out.
Samples are `cpu-clock` (this VM has no hardware counters; valgrind cannot run Swift 6.3 binaries),
so each figure carries the machine's noise: compare the two columns of one run, not runs.
Needs `perf` (Debian: linux-perf) and root or perf_event_paranoid <= 1.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

PHASES = (("token", "token endpoint"), ("bare", "trivial route"))


def wait_for(log_path, needle, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open(log_path, errors="replace") as log:
            if needle in log.read():
                return
        time.sleep(0.05)
    sys.exit(f"http_profile: the bench never printed {needle!r}; see {log_path}")


def report(data, children, limit):
    """(total samples, {(dso, symbol): percent}) of a perf.data file."""
    args = ["perf", "report", "-i", data, "--stdio", "-g", "none", "--sort", "dso,symbol" if not children else "symbol",
            "--children" if children else "--no-children"]
    out = subprocess.run(args, capture_output=True, text=True).stdout
    samples = re.search(r"# Samples: (\S+)", out)
    table = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(?:([\d.]+)%\s+)?(\S+)?\s*\[[.k]\]\s+(.*)$", line) if not children else \
            re.match(r"\s*([\d.]+)%\s+[\d.]+%\s+\[[.k]\]\s+(.*)$", line)
        if not m:
            continue
        if children:
            table[("", m.group(2).strip())] = float(m.group(1))
        else:
            table[(m.group(3) or "", m.group(4).strip())] = float(m.group(1))
        if len(table) >= limit:
            break
    return table


def demangle(names):
    try:
        out = subprocess.run(["swift", "demangle", "--simplified"], input="\n".join(names), capture_output=True, text=True).stdout
        return out.split("\n")
    except OSError:
        return names


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", default=".build/release/deviceauth-bench")
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    record_seconds = max(1, args.duration - 2)
    work = tempfile.mkdtemp(prefix="deviceauth-http-profile-")
    log_path = os.path.join(work, "bench.log")
    with open(log_path, "w") as log:
        bench = subprocess.Popen([args.bench, "http", "--duration", str(args.duration), "--rounds", "1"], stdout=log, stderr=subprocess.STDOUT)
    cpu_us = {}
    try:
        for index, (name, label) in enumerate(PHASES):
            wait_for(log_path, f"round 1/1, {label}", 120)
            time.sleep(1)
            # A busy machine can make perf finish a phase late; a recording that would start in
            # the next phase measures the wrong server, so say so instead.
            following = PHASES[index + 1][1] if index + 1 < len(PHASES) else "nginx"
            if f"round 1/1, {following}" in open(log_path, errors="replace").read():
                sys.exit(f"http_profile: the {label} phase was over before perf could record it; use a longer --duration")
            data = os.path.join(work, f"{name}.data")
            subprocess.run(["perf", "record", "-F", "2000", "-g", "-p", str(bench.pid), "-o", data, "--", "sleep", str(record_seconds)],
                           capture_output=True, check=True)
        bench.wait(timeout=120)
    finally:
        if bench.poll() is None:
            bench.kill()
    text = open(log_path).read()
    rates = re.search(r"BENCH http\.token\.pending\.c\d+ ours=(\d+) baseline=(\d+)", text)
    if not rates:
        sys.exit(f"http_profile: no BENCH line in {log_path}")
    requests = {"token": int(rates.group(1)) * record_seconds, "bare": int(rates.group(2)) * record_seconds}
    flat, inclusive = {}, {}
    for name, _ in PHASES:
        data = os.path.join(work, f"{name}.data")
        events = subprocess.run(["perf", "report", "-i", data, "--stdio", "-g", "none", "--sort", "dso"], capture_output=True, text=True).stdout
        count = re.search(r"Event count \(approx\.\): (\d+)", events)
        # cpu-clock event counts are nanoseconds of CPU.
        cpu_us[name] = int(count.group(1)) / 1000 / requests[name] if count else 0
        flat[name] = report(data, False, 2000)
        inclusive[name] = report(data, True, 3000)
    for line in text.splitlines():
        if line.startswith("BENCH"):
            print(line)
    print(f"node CPU per request (perf cpu-clock, {record_seconds} s each): token endpoint {cpu_us['token']:.1f} us, bare route {cpu_us['bare']:.1f} us")

    def per_request(table, name):
        return {key: pct * cpu_us[name] / 100 for key, pct in table[name].items()}

    print("\nby library (us per request): token | bare | difference")
    libs = {}
    for name, _ in PHASES:
        for (dso, _), value in per_request(flat, name).items():
            libs.setdefault(dso, {}).setdefault(name, 0)
            libs[dso][name] += value
    for dso, values in sorted(libs.items(), key=lambda item: -item[1].get("token", 0))[:10]:
        print(f"  {values.get('token', 0):6.2f} {values.get('bare', 0):6.2f} {values.get('token', 0) - values.get('bare', 0):+6.2f}  {dso}")

    for title, tables in (("functions, self time", flat), ("functions, with callees (async frames break the chains)", inclusive)):
        token, bare = per_request(tables, "token"), per_request(tables, "bare")
        keys = sorted(set(token) | set(bare), key=lambda key: -(token.get(key, 0) - bare.get(key, 0)))[:args.top]
        names = demangle([key[1] for key in keys])
        print(f"\n{title} (us per request): token | bare | difference")
        for key, display in zip(keys, names):
            print(f"  {token.get(key, 0):6.2f} {bare.get(key, 0):6.2f} {token.get(key, 0) - bare.get(key, 0):+6.2f}  {display[:140]}")


if __name__ == "__main__":
    main()
