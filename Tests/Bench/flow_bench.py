#!/usr/bin/env python3
"""Full-flow benchmarks of issue #5, run by `make bench` (and, tiny, by `make test`).

1. Full-flow throughput: completed RFC 8628 device flows per second, and token-endpoint latency
   percentiles, with 1 and with 3 API nodes on one Redis (`deploy/local-cluster.sh` +
   `deviceauth-loadtest http`, same settings, same run). BENCH line: 3 nodes vs 1 node.
2. Peak memory (`/usr/bin/time -v`, maximum resident set size) of the harness and of each API node
   while 10,000 devices are in flight at once. BENCH line: the busiest node vs an idle node
   (same binary, started, checked ready and stopped in the same run).
3. Store mode: `deviceauth-loadtest store --op poll` (the store library, no HTTP) at concurrency 64
   on a private redis-server, side by side with `redis-benchmark -c 64` sending the store's own
   poll script (`FCALL` of its function, same key shape and arguments), which `deviceauth-bench store` runs on the
   same server in the same run. BENCH line: the harness vs redis-benchmark.

Usage: python3 Tests/Bench/flow_bench.py [--build .build/release] [--duration S] [--concurrency C]
                                         [--memory-devices N] [--skip-throughput] [--skip-memory]
                                         [--store-duration S] [--skip-store]
"""
import argparse
import glob
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONFIG = os.path.join(ROOT, "deploy", "loadtest-config.json")
CLUSTER = os.path.join(ROOT, "deploy", "local-cluster.sh")

# Each node runs under GNU time through this wrapper. local-cluster.sh starts nodes in the
# background (SIGINT ignored) and stops them with SIGINT, which time ignores too, so the wrapper
# installs its own handlers and forwards INT/TERM to the server, time's child.
NODE_WRAPPER = """#!/usr/bin/env python3
import os, signal, subprocess, sys

def forward(signum, frame):
    try:
        with open(f"/proc/{{timer.pid}}/task/{{timer.pid}}/children") as f:
            for child in f.read().split():
                os.kill(int(child), signum)
    except (OSError, NameError):
        pass

signal.signal(signal.SIGINT, forward)
signal.signal(signal.SIGTERM, forward)
timer = subprocess.Popen(["/usr/bin/time", "-v", "-o", "{outdir}/node-%d.time" % os.getpid(), "{server}"] + sys.argv[1:])
sys.exit(timer.wait())
"""


def max_rss_kib(path):
    with open(path) as f:
        match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", f.read())
    if not match:
        raise SystemExit(f"flow_bench: no maximum RSS in {path}")
    return int(match.group(1))


def wrapped_build(build, workdir):
    """A folder whose deviceauth-server runs the real one under /usr/bin/time -v."""
    wrapper_dir = os.path.join(workdir, "bin")
    os.makedirs(wrapper_dir, exist_ok=True)
    path = os.path.join(wrapper_dir, "deviceauth-server")
    with open(path, "w") as f:
        f.write(NODE_WRAPPER.format(outdir=workdir, server=os.path.abspath(os.path.join(build, "deviceauth-server"))))
    os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
    return wrapper_dir


def run_loadtest(build, nodes, loadtest_args, workdir, label, config=CONFIG):
    """Starts Redis + `nodes` API nodes, runs the harness under /usr/bin/time, returns (report, harness KiB, node KiBs)."""
    for old in glob.glob(os.path.join(workdir, "node-*.time")):
        os.remove(old)
    report_path = os.path.join(workdir, f"{label}.json")
    harness_time = os.path.join(workdir, f"{label}-harness.time")
    command = [CLUSTER, "--nodes", str(nodes), "--build", wrapped_build(build, workdir), "--config", config, "--",
               "/usr/bin/time", "-v", "-o", harness_time, os.path.join(build, "deviceauth-loadtest"), "http",
               "--json", report_path] + loadtest_args
    result = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        sys.stdout.write(result.stdout[-4000:])
        raise SystemExit(f"flow_bench: the {label} run failed (exit {result.returncode})")
    with open(report_path) as f:
        report = json.load(f)
    node_kib = sorted(max_rss_kib(p) for p in glob.glob(os.path.join(workdir, "node-*.time")))
    if len(node_kib) != nodes:
        raise SystemExit(f"flow_bench: expected {nodes} node memory reports, found {len(node_kib)}")
    return report, max_rss_kib(harness_time), node_kib


def flows_per_second(report):
    return sum(report["completed_per_second"]) / report["elapsed_seconds"]


def token_percentiles(report):
    token = next(v for k, v in report["distributions"].items() if k.lower() == "post /oauth/token")
    points = {p["percentile"]: p["latency_ms"] for p in token}
    return {name: points[p] for name, p in (("p50", 50), ("p90", 90), ("p99", 99), ("p99.9", 99.9), ("max", 100))}


def bench_line(name, ours, baseline, unit):
    ratio = ours / baseline if baseline else 0
    print(f"BENCH {name} ours={ours:.1f} baseline={baseline:.1f} unit={unit} ratio={ratio:.2f}", flush=True)


def throughput(args, workdir):
    loadtest_args = ["--concurrency", str(args.concurrency), "--duration", str(args.duration),
                     "--mix", "approve=80,deny=20", "--think-time-ms", "0-100", "--seed", "8628"]
    results = {}
    for nodes in (1, 3):
        report, harness_kib, node_kib = run_loadtest(args.build, nodes, loadtest_args, workdir, f"flow-{nodes}")
        results[nodes] = report
        latency = token_percentiles(report)
        requests = sum(row["count"] for row in report["rows"])
        print(f"  {nodes} node(s): {flows_per_second(report):8.1f} flows/s, {requests / report['elapsed_seconds']:8.0f} requests/s, "
              f"token endpoint ms " + " ".join(f"{k}={v:.1f}" for k, v in latency.items()) +
              f"; invariants {'PASS' if all(i['passed'] for i in report['invariants']) else 'FAIL'}", flush=True)
    bench_line("flow-throughput-3-nodes-vs-1", flows_per_second(results[3]), flows_per_second(results[1]), "flows/s")
    print(f"  settings: concurrency {args.concurrency}, duration {args.duration} s, mix approve=80,deny=20, think 0-100 ms,"
          f" polling interval 1 s (client 'loadtest' of deploy/loadtest-config.json); all processes share {os.cpu_count()} cores")


def memory(args, workdir):
    # An idle node: the same binary started, checked ready and stopped, as the baseline.
    idle_report, _, idle_nodes = run_loadtest(args.build, 1, ["--devices", "1", "--concurrency", "1", "--think-time-ms", "0",
                                                              "--mix", "approve=1"], workdir, "idle")
    devices = args.memory_devices
    # 10,000 devices saturate two cores for minutes: give the codes a 10-minute lifetime (RFC 8628's
    # usual) so slow approvals do not expire; everything else as in deploy/loadtest-config.json.
    with open(CONFIG) as f:
        config = json.load(f)
    for client in config["clients"]:
        client["code_lifetime_seconds"] = max(client.get("code_lifetime_seconds", 0), 600)
    long_config = os.path.join(workdir, "memory-config.json")
    with open(long_config, "w") as f:
        json.dump(config, f)
    # Every device starts at once and stays in flight for its think time and beyond (the nodes are
    # saturated), so all of them are pending together; 128 connections per node carry their requests.
    report, harness_kib, node_kib = run_loadtest(args.build, 3, [
        "--devices", str(devices), "--concurrency", str(devices), "--mix", "approve=80,deny=20",
        "--think-time-ms", "1000-3000", "--seed", "10000", "--request-timeout", "60",
        "--connections-per-node", "128"], workdir, "memory", config=long_config)
    passed = all(i["passed"] for i in report["invariants"])
    print(f"  {devices} concurrent devices, 3 nodes: harness peak RSS {harness_kib / 1024:.1f} MiB, node peak RSS "
          + ", ".join(f"{kib / 1024:.1f} MiB" for kib in node_kib)
          + f" (idle node {idle_nodes[0] / 1024:.1f} MiB); {sum(report['completed_per_second'])} flows completed; invariants {'PASS' if passed else 'FAIL'}",
          flush=True)
    bench_line(f"node-peak-rss-{devices}-devices-vs-idle", node_kib[-1] * 1024, idle_nodes[0] * 1024, "bytes")
    bench_line(f"harness-peak-rss-{devices}-devices-vs-node", harness_kib * 1024, node_kib[-1] * 1024, "bytes")
    if not passed:
        raise SystemExit("flow_bench: an invariant failed in the memory run")


def store_mode(args, workdir):
    """The harness's store mode vs redis-benchmark on the same script, same concurrency, same server."""
    port = int(subprocess.check_output([sys.executable, os.path.join(ROOT, "Tests", "Support", "free-port.py")], text=True))
    redis = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                              "--dir", workdir], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}"
    try:
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True).stdout.strip() == "PONG":
                break
            time.sleep(0.1)
        # Baseline: deviceauth-bench store runs redis-benchmark with FCALL of the poll script.
        bench = subprocess.run([os.path.join(args.build, "deviceauth-bench"), "store", "--redis-url", url, "--concurrency", "64",
                                "--duration", str(args.store_duration), "--grants", "1000"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        match = re.search(r"BENCH store\.poll\.c64 ours=([\d.]+) baseline=([\d.]+)", bench.stdout)
        if bench.returncode != 0 or not match:
            print(bench.stdout)
            raise SystemExit("flow_bench: deviceauth-bench store failed")
        library, baseline = float(match.group(1)), float(match.group(2))
        report_path = os.path.join(workdir, "store.json")
        run = subprocess.run([os.path.join(args.build, "deviceauth-loadtest"), "store", "--redis-url", url, "--op", "poll",
                              "--concurrency", "64", "--duration", str(max(1, round(args.store_duration))), "--json", report_path],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if run.returncode != 0:
            print(run.stdout)
            raise SystemExit("flow_bench: deviceauth-loadtest store failed")
        with open(report_path) as f:
            report = json.load(f)
        row = next(r for r in report["rows"] if r["endpoint"] == "store.poll")
        harness = row["count"] / report["elapsed_seconds"]
        print(f"  store mode, poll, concurrency 64: deviceauth-loadtest store {harness:.0f} ops/s (p50 {row['p50_ms']} ms, "
              f"p99 {row['p99_ms']} ms, outcome {row['outcome']}); deviceauth-bench store {library:.0f} ops/s; "
              f"redis-benchmark -c 64 FCALL poll {baseline:.0f} ops/s", flush=True)
        bench_line("loadtest.store.poll.c64", harness, baseline, "ops/s")
    finally:
        subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)
        try:
            redis.wait(timeout=10)
        except subprocess.TimeoutExpired:
            redis.kill()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default=".build/release")
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--memory-devices", type=int, default=10000)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--store-duration", type=float, default=5)
    parser.add_argument("--skip-store", action="store_true")
    args = parser.parse_args()
    args.build = os.path.abspath(args.build)
    for binary in ("deviceauth-server", "deviceauth-loadtest", "deviceauth-bench"):
        if not os.access(os.path.join(args.build, binary), os.X_OK):
            raise SystemExit(f"flow_bench: {args.build}/{binary} missing; build first")
    if not os.access("/usr/bin/time", os.X_OK):
        raise SystemExit("flow_bench: /usr/bin/time missing (apt-get install time)")
    workdir = tempfile.mkdtemp(prefix="deviceauth-flowbench.")
    try:
        if not args.skip_throughput:
            throughput(args, workdir)
        if not args.skip_memory:
            memory(args, workdir)
        if not args.skip_store:
            store_mode(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
