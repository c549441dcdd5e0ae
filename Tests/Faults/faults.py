#!/usr/bin/env python3
"""Faults under load (issue #7): one scenario per invocation, run inside deploy/local-cluster.sh.

    deploy/local-cluster.sh … -- python3 Tests/Faults/faults.py SCENARIO [--fsync everysec|always]

Scenarios: redis-restart, redis-disruptions, node-kill, maxmemory, sentinel-failover (under
local-cluster.sh --sentinel). Each starts the load-test harness
(FAULTS_LOADTEST, default .build/debug/deviceauth-loadtest) against the cluster, injects its fault
while devices are in flight, checks with curl what a client sees during the fault, waits for the
harness and reads its JSON report. It prints one line `PASS <scenario>: figures…` or
`FAIL <scenario>: reasons…` and exits 0 or 1. Everything it starts is stopped on exit; the cluster
itself (nodes, Redis, also a restarted Redis) is stopped by local-cluster.sh.

Only the standard library and curl; loopback only.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
CHILDREN = []          # processes this script started (harness, restarted Redis); stopped on exit
FAILURES = []          # reasons the scenario fails
FIGURES = {}           # what the PASS/FAIL line reports


def log(message):
    print(f"[faults {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def check(condition, reason):
    """Records a failed expectation (the scenario keeps going, so every problem is reported)."""
    if not condition:
        FAILURES.append(reason)
        log("CHECK FAILED: " + reason)
    return condition


def stop_children():
    for process in CHILDREN:
        if process.poll() is None:
            try:
                process.send_signal(signal.SIGINT)
            except ProcessLookupError:
                pass
    deadline = time.time() + 10
    for process in CHILDREN:
        try:
            process.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def on_signal(signum, _frame):
    stop_children()
    sys.exit(128 + signum)


# ---------------------------------------------------------------------------------------------
# The cluster (from local-cluster.sh's environment)

NODES = [url for url in os.environ.get("NODE_URLS", "").split(",") if url]
NODE_PIDS = [int(pid) for pid in os.environ.get("NODE_PIDS", "").split(",") if pid]
REDIS_PORT = os.environ.get("REDIS_PORT", "")
REDIS_PIDFILE = os.environ.get("REDIS_PIDFILE", "")
REDIS_START = os.environ.get("REDIS_START", "")
CLUSTER_DIR = os.environ.get("CLUSTER_DIR", "")
LOADTEST = os.environ.get("FAULTS_LOADTEST", ".build/debug/deviceauth-loadtest")
CONFIG = json.load(open(os.environ["FAULTS_CONFIG"])) if os.environ.get("FAULTS_CONFIG") else {}
KEY_PREFIX = CONFIG.get("key_prefix", "da")
USER_HEADER = CONFIG.get("user_header", "X-Forwarded-User")


def redis_cli(*args, timeout=10):
    result = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", REDIS_PORT, *args], capture_output=True, text=True, timeout=timeout)
    return result.stdout.strip()


def redis_pid():
    try:
        return int(open(REDIS_PIDFILE).read().strip())
    except (OSError, ValueError):
        return None


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of local-cluster.sh counts as dead.
    try:
        return open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(predicate, timeout, step=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def start_redis():
    """Starts Redis again with local-cluster.sh's command line (same port, dir, AOF settings)."""
    process = subprocess.Popen(["bash", REDIS_START], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    CHILDREN.append(process)
    ok = wait_until(lambda: redis_cli("ping", timeout=2) == "PONG", 30)
    check(ok, "Redis did not come back after the restart")
    return process


# ---------------------------------------------------------------------------------------------
# HTTP through curl: what a client sees

class Answer:
    def __init__(self, status, headers, body, seconds):
        self.status, self.headers, self.body, self.seconds = status, headers, body, seconds

    def header(self, name):
        return self.headers.get(name.lower())

    @property
    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def __repr__(self):
        return f"{self.status} in {self.seconds:.2f} s {self.body[:120]!r}"


def curl(url, form=None, headers=(), timeout=20):
    """One request with curl; status 0 when curl got no answer (refused, timeout)."""
    with tempfile.NamedTemporaryFile() as head, tempfile.NamedTemporaryFile() as body:
        command = ["curl", "-s", "-m", str(timeout), "-D", head.name, "-o", body.name, "-w", "%{http_code} %{time_total}"]
        for name, value in headers:
            command += ["-H", f"{name}: {value}"]
        if form is not None:
            command += ["--data", urllib.parse.urlencode(form)]
        began = time.time()
        result = subprocess.run(command + [url], capture_output=True, text=True, timeout=timeout + 5)
        parts = result.stdout.split()
        status = int(parts[0]) if parts and parts[0].isdigit() else 0
        fields = {}
        for line in open(head.name, errors="replace").read().splitlines()[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                fields[name.strip().lower()] = value.strip()
        return Answer(status, fields, open(body.name, errors="replace").read(), time.time() - began)


def issue(node, client_id="loadtest"):
    return curl(node + "/oauth/device_authorization", form={"client_id": client_id})


def poll(node, device_code, client_id="loadtest"):
    return curl(node + "/oauth/token", form={"grant_type": GRANT_TYPE, "device_code": device_code, "client_id": client_id})


def hidden(name, html):
    marker = f'name="{name}"'
    at = html.find(marker)
    if at < 0:
        return None
    start = html.find('value="', at) + len('value="')
    return html[start:html.find('"', start)].replace("&amp;", "&").replace("&#x3D;", "=").replace("&#61;", "=")


def lookup(node, user_code, user):
    """The verification page: GET the code form (it only fills in the code), POST action=lookup.
    Returns (the lookup's Answer, the headers that carry the person and the CSRF cookie)."""
    who = [(USER_HEADER, user)]
    form = curl(node + "/device?user_code=" + urllib.parse.quote(user_code), headers=who)
    if form.status != 200 or hidden("csrf_token", form.body) is None:
        return form, who
    cookies = [value.split(";")[0] for name, value in [("set-cookie", form.header("set-cookie") or "")] if value]
    headers = who + ([("Cookie", "; ".join(cookies))] if cookies else [])
    return curl(node + "/device", headers=headers, form={
        "csrf_token": hidden("csrf_token", form.body), "user_code": user_code, "action": "lookup"}), headers


def decide(node, user_code, user, approve=True):
    """The verification page: look the code up (the confirmation form), POST approve/deny. Returns the final Answer."""
    page, headers = lookup(node, user_code, user)
    if page.status != 200 or hidden("grant_id", page.body) is None:
        return page
    return curl(node + "/device", headers=headers, form={
        "csrf_token": hidden("csrf_token", page.body), "user_code": hidden("user_code", page.body),
        "grant_id": hidden("grant_id", page.body), "action": "approve" if approve else "deny"})


def full_flow(node_a, node_b, user="after-recovery", redeemed=None):
    """Issue on one node, approve and redeem on another: None if the device gets one token naming the user,
    else what went wrong. With a list as `redeemed`, the redeemed device code and its answer are appended
    to it and not polled again here (after the retry window a second poll counts as a replay on the
    nodes, which a harness still running compares with its own replays)."""
    issued = issue(node_a)
    if issued.status != 200:
        return f"device_authorization {issued!r}"
    codes = issued.json
    decided = decide(node_b, codes["user_code"], user)
    if decided.status != 200 or "Device connected" not in decided.body:
        return f"approval {decided!r}"
    time.sleep(codes.get("interval", 1) + 0.2)
    token = poll(node_a, codes["device_code"])
    if token.status != 200 or "access_token" not in (token.json or {}):
        return f"token {token!r}"
    if redeemed is not None:
        redeemed.append((codes["device_code"], token.body))
        return None
    # Polled again at once (as a device whose answer was lost): the same answer, never a second token.
    again = poll(node_b, codes["device_code"])
    if again.status != 200 or again.body != token.body:
        return f"second poll did not get the same token again: {again!r}"
    return None


def expect_unavailable(answer, what, oauth=True, max_seconds=15):
    """A fault must look like RFC 6749 temporarily_unavailable: 503, Retry-After, JSON error; fast, not hung."""
    ok = check(answer.status == 503, f"{what}: expected 503, got {answer!r}")
    ok &= check((answer.header("retry-after") or "").isdigit(), f"{what}: 503 without Retry-After ({answer.headers})")
    if oauth:
        ok &= check((answer.json or {}).get("error") == "temporarily_unavailable", f"{what}: body is not temporarily_unavailable: {answer.body[:200]!r}")
        ok &= check("no-store" in (answer.header("cache-control") or ""), f"{what}: no Cache-Control: no-store")
    ok &= check(answer.seconds < max_seconds, f"{what}: took {answer.seconds:.1f} s (a hang, not an answer)")
    return ok


def readiness(expect_ready, nodes=None, timeout=20):
    """Waits until every node's /readyz is green (200) or red (503); returns the seconds it took."""
    began = time.time()
    want = 200 if expect_ready else 503
    ok = wait_until(lambda: all(curl(node + "/readyz", timeout=8).status == want for node in (nodes or NODES)), timeout, step=0.2)
    check(ok, f"/readyz did not turn {'green' if expect_ready else 'red'} on every node within {timeout} s")
    return time.time() - began


# ---------------------------------------------------------------------------------------------
# The harness

def start_harness(name, *extra, duration=18, concurrency=40):
    report = os.path.join(CLUSTER_DIR or tempfile.gettempdir(), f"faults-{name}.json")
    command = [LOADTEST, "http", "--nodes", ",".join(NODES), "--duration", str(duration), "--concurrency", str(concurrency),
               "--think-time-ms", "200-1200", "--mix", "approve=65,deny=15,abandon=5,misbehave=15", "--json", report, *extra]
    log("harness: " + " ".join(command))
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    CHILDREN.append(process)
    return process, report, command


def finish_harness(process, report_path, timeout=150):
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=20)
        check(False, f"the harness did not finish within {timeout} s")
    tail = "\n".join(line for line in output.splitlines() if not line.startswith("["))
    print(tail, file=sys.stderr, flush=True)
    check(process.returncode == 0, f"the harness failed (exit {process.returncode}): " +
          "; ".join(line.strip() for line in output.splitlines() if "[FAIL]" in line)[:600])
    try:
        report = json.load(open(report_path))
    except (OSError, ValueError) as error:
        check(False, f"no harness report: {error}")
        return {}
    return report


def harness_figures(faults, rows):
    """What every fault test reads from the harness's report (its `faults` summary and its rows):
    requests, losses, replay probes, second tokens, 500s and transport errors."""
    return {
        "requests": sum(row["count"] for row in rows),
        "lost_approvals": faults.get("lost_approvals", 0),
        "lost_denials": faults.get("lost_denials", 0),
        "lost_codes": faults.get("lost_issues", 0),
        "tokens_lost_in_flight": faults.get("tokens_lost_in_flight", 0),
        "replay_probes": faults.get("replay_probes", 0),
        "second_tokens": faults.get("probe_tokens", 0),
        "probes_same_token": faults.get("probe_redeliveries", 0),
        "http_500": sum(row["count"] for row in rows if row["outcome"].startswith("500")),
        "transport_errors": sum(row["count"] for row in rows if row["outcome"].startswith("transport_error")),
    }


def summarize(report):
    faults = report.get("faults") or {}
    rows = report.get("rows", [])
    FIGURES["devices"] = report.get("settings", {}).get("devices")
    FIGURES["503_retried"] = faults.get("unavailable_answers", 0)
    FIGURES.update(harness_figures(faults, rows))
    FIGURES["max_latency_ms"] = round(faults.get("max_latency_ms", max([row["max_ms"] for row in rows] or [0])), 1)
    check(FIGURES["http_500"] == 0, f"{FIGURES['http_500']} answers were 500")
    check(FIGURES["second_tokens"] == 0, "a redeemed device code got a second token")
    check(FIGURES["replay_probes"] > 0, "no replay probe ran (no device got a token?)")
    return faults


def nodes_alive(indexes):
    return [i for i in indexes if alive(NODE_PIDS[i])]


# ---------------------------------------------------------------------------------------------
# Scenarios

def cut_to_fsynced():
    """A power loss: every AOF file cut back to the length it had when its last fsync/fdatasync
    began (Tests/Faults/fsync_tracker.c records them in $FSYNC_TRACKER_LOG; never synced: 0).
    Returns the bytes dropped."""
    import glob
    synced = {}
    try:
        for line in open(os.environ["FSYNC_TRACKER_LOG"]):
            path, _, size = line.rstrip("\n").rpartition(" ")
            if path:
                # The longest length any completed fsync covered (fsyncs of two threads can end out of order).
                key = os.path.realpath(path)
                synced[key] = max(synced.get(key, 0), int(size))
    except OSError:
        pass
    check(bool(synced), "no AOF fsync recorded (is the server running under fsync_tracker.so?)")
    dropped = 0
    for path in glob.glob(os.path.join(CLUSTER_DIR, "appendonlydir", "*.aof")):
        size, keep = os.path.getsize(path), synced.get(os.path.realpath(path), 0)
        if size > keep:
            os.truncate(path, keep)   # aof-load-truncated (default yes) drops a cut last command
            dropped += size - keep
            log(f"simulated power loss: {path} cut from {size} to {keep} bytes (its last fsync)")
    return dropped


def redis_restart(args):
    """Redis with AOF SIGKILLed mid-run (and, with --also-shutdown, restarted once more with SHUTDOWN)."""
    FIGURES["appendfsync"] = redis_cli("config", "get", "appendfsync").split()[-1]
    check(FIGURES["appendfsync"] == args.fsync, f"Redis runs with appendfsync {FIGURES['appendfsync']}, not {args.fsync}")
    check(redis_cli("config", "get", "appendonly").split()[-1] == "yes", "AOF is off")
    # With --durable the harness classifies losses (issued codes are not waited for) and the checks below
    # require 0 lost decisions.
    extra = ["--fault-tolerant"] + (["--expect-lost-approvals"] if args.fsync != "always" else [])
    harness, report_path, command = start_harness(f"restart-{args.fsync}{'-powerloss' if args.power_loss else ''}", *extra)
    FIGURES["command"] = " ".join(command)
    # A code issued before the crash, to poll during the outage.
    time.sleep(2)
    before = issue(NODES[0])
    check(before.status == 200, f"device_authorization before the crash: {before!r}")
    time.sleep(3)

    pid = redis_pid()
    log(f"SIGKILL redis-server {pid}")
    os.kill(pid, signal.SIGKILL)
    crashed_at = time.time()
    wait_until(lambda: not alive(pid), 5)
    if args.power_loss:
        # A power loss keeps only what was fsynced.
        FIGURES["aof_bytes_dropped"] = cut_to_fsynced()
        FIGURES["simulated_power_loss"] = "every AOF file cut to its length at its last fsync"
    # What a client sees while Redis is down: quick RFC-shaped 503s, not 500s or hangs.
    expect_unavailable(issue(NODES[1]), "device_authorization during the outage")
    if before.status == 200:
        expect_unavailable(poll(NODES[2 % len(NODES)], before.json["device_code"]), "token poll during the outage")
    expect_unavailable(lookup(NODES[0], "BCDF-GHJK", "someone")[0],
                       "verification page during the outage", oauth=False)
    FIGURES["readyz_red_after_s"] = round(readiness(False, timeout=10), 2)
    time.sleep(max(0, 3 - (time.time() - crashed_at)))
    log("restarting Redis (AOF replay)")
    start_redis()
    restarted_at = time.time()
    FIGURES["readyz_green_after_s"] = round(readiness(True, timeout=20), 2)
    FIGURES["outage_s"] = round(restarted_at - crashed_at, 1)
    if before.status == 200:
        answer = poll(NODES[1], before.json["device_code"])
        check((answer.json or {}).get("error") in ("authorization_pending", "slow_down"),
              f"a code issued before the crash is not pending after it: {answer!r}")

    if args.also_shutdown:
        time.sleep(3)
        log("SHUTDOWN (clean stop, AOF flushed) and restart")
        redis_cli("shutdown", timeout=15)
        wait_until(lambda: redis_cli("ping", timeout=2) != "PONG", 10)
        expect_unavailable(issue(NODES[0]), "device_authorization while Redis is stopped")
        time.sleep(1)
        start_redis()
        readiness(True, timeout=20)
        FIGURES["shutdown_restart"] = "ok"

    report = finish_harness(harness, report_path)
    faults = summarize(report)
    check(nodes_alive(range(len(NODE_PIDS))) == list(range(len(NODE_PIDS))), "an API node died")
    check(FIGURES["transport_errors"] == 0, f"{FIGURES['transport_errors']} transport errors: nodes must stay up through a Redis restart")
    check(faults.get("unavailable_answers", 0) > 0, "the harness never saw the outage (no 503): the fault was not under load")
    FIGURES["redemptions_forgotten"] = faults.get("redemptions_forgotten", 0)
    if args.fsync == "always":
        check(FIGURES["lost_approvals"] + FIGURES["lost_denials"] + FIGURES["lost_codes"] == 0,
              "appendfsync always lost an acknowledged write")
    if args.durable:
        # WAITAOF covers decisions and redemptions; a code issued in the last second may be lost (reported).
        check(FIGURES["lost_approvals"] + FIGURES["lost_denials"] == 0, "a decision confirmed with WAITAOF was lost")
        check(FIGURES["tokens_lost_in_flight"] == 0, f"{FIGURES['tokens_lost_in_flight']} logins lost")
    problem = full_flow(NODES[0], NODES[-1])
    check(problem is None, f"a complete flow after recovery failed: {problem}")
    FIGURES["flow_after_recovery"] = "ok" if problem is None else "failed"


# RedisClient's defaults: 5 s command timeout, 2 s connect timeout. A command can wait for the batch ahead
# of it on its connection to time out and then for its own timeout: 2 × 5 s, plus the connect, plus slack.
LATENCY_BOUND_S = 2 * 5 + 2 + 3


def redis_disruptions(args):
    """FUNCTION FLUSH + SCRIPT FLUSH, CLIENT KILL TYPE normal and DEBUG SLEEP (12 s: longer than twice the 5 s command timeout) under load."""
    harness, report_path, command = start_harness("disruptions", "--fault-tolerant", duration=20)
    FIGURES["command"] = " ".join(command)
    pids_before = [alive(pid) for pid in NODE_PIDS]
    time.sleep(4)
    log("FUNCTION FLUSH and SCRIPT FLUSH (the nodes load the product's functions again on their next call)")
    check(redis_cli("function", "flush") == "OK", "FUNCTION FLUSH failed")
    check(redis_cli("script", "flush") == "OK", "SCRIPT FLUSH failed")
    time.sleep(3)
    log("CLIENT KILL TYPE normal")
    killed = redis_cli("client", "kill", "type", "normal")
    FIGURES["clients_killed"] = int(killed) if killed.isdigit() else killed
    check(isinstance(FIGURES["clients_killed"], int) and FIGURES["clients_killed"] >= len(NODES),
          f"CLIENT KILL killed {killed} connections (expected ≥ one per node)")
    time.sleep(3)
    before = issue(NODES[0])
    check(before.status == 200, f"device_authorization after CLIENT KILL: {before!r}")
    sleep_seconds = args.sleep
    log(f"DEBUG SLEEP {sleep_seconds}")
    sleeper = subprocess.Popen(["redis-cli", "-h", "127.0.0.1", "-p", REDIS_PORT, "debug", "sleep", str(sleep_seconds)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    CHILDREN.append(sleeper)
    time.sleep(0.3)
    # A client waits at most about twice the command timeout (its own, plus that of a batch queued ahead
    # of it on the same connection), then gets an RFC 503 — never until Redis wakes up, never forever.
    during = poll(NODES[1], before.json["device_code"]) if before.status == 200 else issue(NODES[1])
    FIGURES["curl_during_sleep"] = f"{during.status} in {during.seconds:.2f} s"
    expect_unavailable(during, "token poll during DEBUG SLEEP", max_seconds=LATENCY_BOUND_S)
    sleeper.wait(timeout=sleep_seconds + 30)
    check("OK" in (sleeper.stdout.read() or ""), "DEBUG SLEEP did not run (is --enable-debug-command local set?)")
    FIGURES["readyz_green_after_sleep_s"] = round(readiness(True, timeout=20), 2)

    report = finish_harness(harness, report_path)
    faults = summarize(report)
    check([alive(pid) for pid in NODE_PIDS] == pids_before, "an API node died or was restarted")
    check(FIGURES["transport_errors"] == 0, f"{FIGURES['transport_errors']} transport errors (nodes must stay up)")
    check(faults.get("unavailable_answers", 0) > 0, "the harness saw no 503 during DEBUG SLEEP: the fault was not under load")
    # Bounded latency: a request waits at most about twice the command timeout, not for the whole outage.
    check(FIGURES["max_latency_ms"] < LATENCY_BOUND_S * 1000, f"max latency {FIGURES['max_latency_ms']} ms (bound {LATENCY_BOUND_S} s)")
    check(FIGURES["lost_approvals"] + FIGURES["lost_denials"] + FIGURES["lost_codes"] == 0, "an acknowledged write was lost")
    # No lost logins: a device whose token answer was lost (the redemption ran, its answer timed out)
    # gets the same answer on its next poll.
    check(FIGURES["tokens_lost_in_flight"] == 0, f"{FIGURES['tokens_lost_in_flight']} logins lost in flight")
    problem = full_flow(NODES[0], NODES[-1])
    check(problem is None, f"a complete flow after the disruptions failed: {problem}")
    FIGURES["flow_after_recovery"] = "ok" if problem is None else "failed"


def slow_request_during_sigterm(node_index):
    """Starts a token request on a node, sends SIGTERM while its body is still arriving, then finishes
    the body: the node must still answer it (graceful shutdown drains in-flight requests)."""
    import socket
    host, port = NODES[node_index].split("//")[1].split(":")
    body = urllib.parse.urlencode({"grant_type": GRANT_TYPE, "device_code": "0000.not-a-real-device-code", "client_id": "loadtest"}).encode()
    head = (f"POST /oauth/token HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    connection = socket.create_connection((host, int(port)), timeout=20)
    connection.sendall(head + body[:10])
    time.sleep(0.5)
    log(f"SIGTERM node {node_index + 1} (pid {NODE_PIDS[node_index]}) with a request in flight")
    os.kill(NODE_PIDS[node_index], signal.SIGTERM)
    time.sleep(1.5)
    # It stopped accepting new connections but has not exited: it is waiting for our request.
    refused = curl(NODES[node_index] + "/healthz", timeout=3).status == 0
    still_running = alive(NODE_PIDS[node_index])
    connection.sendall(body[10:])
    answer = b""
    try:
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
            if b"\r\n\r\n" in answer:
                head_part, _, rest = answer.partition(b"\r\n\r\n")
                length = [int(line.split(b":")[1]) for line in head_part.split(b"\r\n") if line.lower().startswith(b"content-length:")]
                if length and len(rest) >= length[0]:
                    break
    except socket.timeout:
        pass
    connection.close()
    status_line = answer.split(b"\r\n", 1)[0].decode(errors="replace")
    _, _, json_body = answer.partition(b"\r\n\r\n")
    try:
        error = json.loads(json_body).get("error")
    except ValueError:
        error = None
    exited = wait_until(lambda: not alive(NODE_PIDS[node_index]), 15)
    FIGURES["sigterm_inflight_answer"] = f"{status_line} {error}"
    check(still_running, "the node exited at once on SIGTERM instead of draining")
    check(refused, "the node still accepted new connections after SIGTERM")
    check(status_line.startswith("HTTP/1.1 400") and error == "invalid_grant",
          f"the request in flight at SIGTERM got no proper answer: {answer[:200]!r}")
    check(exited, "the node did not exit within 15 s of SIGTERM once idle")


def node_kill(args):
    """4 nodes; one SIGKILLed, another SIGTERMed (with a request in flight) while devices are mid-flow."""
    check(len(NODES) >= 4, "node-kill needs 4 nodes")
    harness, report_path, command = start_harness("node-kill", "--fault-tolerant", duration=20)
    FIGURES["command"] = " ".join(command)
    time.sleep(5)
    log(f"SIGKILL node 1 (pid {NODE_PIDS[0]})")
    os.kill(NODE_PIDS[0], signal.SIGKILL)
    time.sleep(3)
    slow_request_during_sigterm(1)
    report = finish_harness(harness, report_path)
    faults = summarize(report)
    check(nodes_alive(range(2, len(NODE_PIDS))) == list(range(2, len(NODE_PIDS))), "a surviving node died")
    check(faults.get("failovers", 0) > 0, "no request failed over: the nodes were not killed under load")
    FIGURES["failovers"] = faults.get("failovers", 0)
    # Requests whose answer was lost, per node: the SIGKILLed node 1 may lose some; node 2 drains on SIGTERM.
    lost_answers = {}
    for row in report.get("rows", []):
        if row["outcome"].startswith("transport_error node"):
            node = row["outcome"].rsplit(" ", 1)[-1]
            lost_answers[node] = lost_answers.get(node, 0) + row["count"]
    FIGURES["answers_lost_by_node"] = ",".join(f"node{node}:{count}" for node, count in sorted(lost_answers.items())) or "none"
    FIGURES["polls_without_answer"] = faults.get("polls_without_answer", 0)
    FIGURES["resent_device_authorizations"] = faults.get("resent_issues", 0)
    FIGURES["resubmitted_decisions"] = faults.get("resubmitted_decisions", 0)
    check(FIGURES["lost_approvals"] + FIGURES["lost_denials"] + FIGURES["lost_codes"] == 0, "an acknowledged write was lost")
    check(FIGURES["tokens_lost_in_flight"] == 0, f"{FIGURES['tokens_lost_in_flight']} logins lost in flight (a killed node's token answer)")
    problem = full_flow(NODES[2], NODES[3])
    check(problem is None, f"a complete flow on the surviving nodes failed: {problem}")


def scan_grants():
    """Every grant record under the key prefix, and any user-code index key of the earlier two-key layout
    (none should exist now): (records, indexes, problems)."""
    script = """
    local records, indexes, problems = 0, 0, {}
    local cursor = '0'
    repeat
      local page = redis.call('SCAN', cursor, 'MATCH', ARGV[1] .. ':{*', 'COUNT', 1000)
      cursor = page[1]
      for _, key in ipairs(page[2]) do
        if string.find(key, '}:d:', 1, true) then
          records = records + 1
          local f = redis.call('HMGET', key, 's', 'c', 'e', 'i', 'ca', 'h')
          for i = 1, 6 do if not f[i] then table.insert(problems, 'partial record ' .. key) break end end
          if redis.call('PTTL', key) < 0 then table.insert(problems, 'record without TTL ' .. key) end
        elseif string.find(key, '}:u:', 1, true) then
          indexes = indexes + 1
          local id = redis.call('GET', key)
          local tag = string.match(key, '{(.-)}')
          if not id or redis.call('EXISTS', ARGV[1] .. ':{' .. tag .. '}:d:' .. id) == 0 then
            table.insert(problems, 'orphan index ' .. key)
          end
          if redis.call('PTTL', key) < 0 then table.insert(problems, 'index without TTL ' .. key) end
        end
      end
    until cursor == '0'
    local reply = {records, indexes}
    for _, problem in ipairs(problems) do table.insert(reply, problem) end
    return reply
    """
    out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", REDIS_PORT, "--raw", "eval", script, "0", KEY_PREFIX],
                         capture_output=True, text=True, timeout=30).stdout.splitlines()
    if len(out) < 2 or not out[0].isdigit() or not out[1].isdigit():
        check(False, f"the grant scan failed: {out[:3]}")
        return -1, -1, ["scan failed"]
    return int(out[0]), int(out[1]), out[2:]


def maxmemory(args):
    """Redis at maxmemory (noeviction): issuing and decisions (whose lookup charge creates keys) answer 503
    and write nothing; polls of existing codes keep working; after memory is freed everything works again."""
    check(redis_cli("config", "get", "maxmemory-policy").split()[-1] == "noeviction", "maxmemory-policy is not noeviction")
    # Existing grants, issued before memory runs out.
    existing = []
    for i in range(12):
        answer = issue(NODES[i % len(NODES)])
        check(answer.status == 200, f"device_authorization before maxmemory: {answer!r}")
        if answer.status == 200:
            existing.append(answer.json)
    harness, report_path, command = start_harness("maxmemory", "--fault-tolerant", duration=12, concurrency=20)
    FIGURES["command"] = " ".join(command)
    time.sleep(3)
    used = int([line.split(":")[1] for line in redis_cli("info", "memory").splitlines() if line.startswith("used_memory:")][0])
    limit = used + 2 * 1024 * 1024
    redis_cli("config", "set", "maxmemory", str(limit))
    # Fill up to (past) the limit with filler keys: a script without a shebang is checked only once, at its first write.
    redis_cli("eval", "for i = 1, 4096 do redis.call('SET', 'faults-filler:' .. i, string.rep('x', 1024)) end return 1", "0", timeout=30)
    oom = redis_cli("set", "faults-probe", "x")
    FIGURES["maxmemory_bytes"] = limit
    check(oom.startswith("OOM"), f"Redis is not refusing writes at maxmemory: SET answered {oom!r}")
    records_before, indexes_before, _ = scan_grants()

    # Issuing must be refused cleanly: RFC 503, no 500, nothing written.
    answers = [issue(NODES[i % len(NODES)]) for i in range(10)]
    bad = [a for a in answers if not (a.status == 503 and (a.json or {}).get("error") == "temporarily_unavailable" and a.header("retry-after"))]
    FIGURES["device_authorization_at_oom"] = f"{sum(a.status == 503 for a in answers)}/10 x 503"
    check(not bad, f"device_authorization at maxmemory: {bad[:2]}")
    # Existing codes at maxmemory. Polls only touch the existing record (allow-oom) and keep
    # working. Approving or denying first charges the user-code lookup to the guess counters,
    # which creates keys: Redis refuses that at maxmemory (deny-oom), so the page fails closed
    # with 503 and decides nothing, rather than answer a lookup it could not count.
    outcomes = {"refused": 0, "pending": 0}
    time.sleep(1.2)
    refused = []
    for i, codes in enumerate(existing):
        node = NODES[i % len(NODES)]
        if i % 3 in (0, 1):
            decided = decide(node, codes["user_code"], f"oom-user-{i}", approve=i % 3 == 0)
            check(decided.status == 503 and decided.header("retry-after"), f"{'approve' if i % 3 == 0 else 'deny'} at maxmemory: {decided!r}")
            still = poll(NODES[(i + 1) % len(NODES)], codes["device_code"])
            check((still.json or {}).get("error") in ("authorization_pending", "slow_down"), f"a refused decision changed the grant: {still!r}")
            outcomes["refused"] += decided.status == 503
            refused.append((i, codes))
        else:
            pending = poll(node, codes["device_code"])
            check((pending.json or {}).get("error") in ("authorization_pending", "slow_down"), f"poll of a pending code at maxmemory: {pending!r}")
            outcomes["pending"] += (pending.json or {}).get("error") in ("authorization_pending", "slow_down")
    FIGURES["existing_codes_at_oom"] = f"{outcomes['refused']} decisions refused with 503, {outcomes['pending']} pending polls of {len(existing)}"
    records_after, indexes_after, problems = scan_grants()
    FIGURES["records_before_after_oom"] = f"{records_before}->{records_after}"
    check(records_after == records_before and indexes_after == indexes_before,
          f"grants were written at maxmemory: records {records_before}->{records_after}, indexes {indexes_before}->{indexes_after}")
    # One key per grant: no user-code index keys at all, and every record whole.
    check(indexes_after == 0 and not problems, f"half-written grants: {problems[:3]} (records {records_after}, indexes {indexes_after})")
    check(redis_cli("dbsize").isdigit(), "Redis stopped answering")
    time.sleep(3)
    # Recovery: free the memory; issuing works again without restarting anything.
    redis_cli("eval", "for i = 1, 4096 do redis.call('DEL', 'faults-filler:' .. i) end return 1", "0")
    redis_cli("config", "set", "maxmemory", "0")
    after = issue(NODES[0])
    check(after.status == 200, f"device_authorization after memory was freed: {after!r}")
    # The decisions refused at maxmemory go through now, and reach the devices.
    decided_after = {"redeemed": 0, "denied": 0}
    for i, codes in refused:
        approve = i % 3 == 0
        decided = decide(NODES[i % len(NODES)], codes["user_code"], f"oom-user-{i}", approve=approve)
        check(decided.status == 200, f"{'approve' if approve else 'deny'} after memory was freed: {decided!r}")
        answer = poll(NODES[(i + 1) % len(NODES)], codes["device_code"])
        if approve:
            check(answer.status == 200 and "access_token" in (answer.json or {}), f"redeeming after memory was freed: {answer!r}")
            decided_after["redeemed"] += answer.status == 200
        else:
            check((answer.json or {}).get("error") == "access_denied", f"poll of a denied code after memory was freed: {answer!r}")
            decided_after["denied"] += (answer.json or {}).get("error") == "access_denied"
    FIGURES["decisions_after_recovery"] = f"{decided_after['redeemed']} redeemed, {decided_after['denied']} denied"
    report = finish_harness(harness, report_path)
    faults = summarize(report)
    check(faults.get("unavailable_answers", 0) > 0, "the harness saw no 503 at maxmemory: the fault was not under load")
    check(FIGURES["transport_errors"] == 0, f"{FIGURES['transport_errors']} transport errors")
    records_end, indexes_end, problems_end = scan_grants()
    check(not problems_end and indexes_end == 0, f"half-written grants at the end: {problems_end[:3]} ({records_end} records, {indexes_end} indexes)")
    FIGURES["grants_scanned_at_end"] = f"{records_end} records, {indexes_end} indexes, {len(problems_end)} problems"


# ---------------------------------------------------------------------------------------------
# Sentinel failover (deploy/local-cluster.sh --sentinel)

SENTINEL_PORTS = [port for port in os.environ.get("SENTINEL_PORTS", "").split(",") if port]
SENTINEL_MASTER = os.environ.get("SENTINEL_MASTER", "")
REDIS_PORTS = [port for port in os.environ.get("REDIS_PORTS", "").split(",") if port]
# Generous: a sentinel failover on loopback (down-after 1 s) takes a few seconds, under a busy CPU more.
RECOVERY_BOUND_S = 30


def cli(port, *args, timeout=5):
    try:
        result = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return ""
    return result.stdout.strip()


def sentinel_primary():
    """The primary's port as the first sentinel that answers names it (None if none answers)."""
    for port in SENTINEL_PORTS:
        answer = cli(port, "sentinel", "get-master-addr-by-name", SENTINEL_MASTER, timeout=2).splitlines()
        if len(answer) == 2 and answer[1].isdigit():
            return answer[1]
    return None


def role(port):
    return (cli(port, "role", timeout=2).splitlines() or [""])[0]


def grant_records(port):
    """The device records (KEY_PREFIX:{tag}:d:…) on the data node on `port`."""
    keys = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), "--scan", "--pattern", KEY_PREFIX + ":{*}:d:*"],
                          capture_output=True, text=True, timeout=30).stdout.split()
    return set(keys)


def sentinel_failover(args):
    """Three sentinels, a primary and two replicas: the primary SIGKILLed under load; the nodes follow
    the sentinels to the promoted replica. Lost approvals (asynchronous replication) are counted, not failed."""
    global REDIS_PORT
    check(len(SENTINEL_PORTS) == 3 and SENTINEL_MASTER and len(REDIS_PORTS) == 3, "sentinel-failover runs under local-cluster.sh --sentinel")
    old = sentinel_primary()
    check(old == REDIS_PORT and role(old) == "master", f"the sentinels name {old} as primary, not {REDIS_PORT} (ROLE {role(old)!r})")
    harness, report_path, command = start_harness("sentinel-failover", "--fault-tolerant", "--expect-lost-approvals", duration=18)
    FIGURES["command"] = " ".join(command)
    time.sleep(2)
    # A code issued before the kill and known to be on both replicas (WAIT): it must survive the failover.
    before = issue(NODES[0])
    check(before.status == 200, f"device_authorization before the kill: {before!r}")
    replicated = cli(old, "wait", "2", "2000")
    check(replicated == "2", f"WAIT 2 on the primary answered {replicated!r}: the replicas are not in sync")
    time.sleep(3)
    check(harness.poll() is None, "the harness ended before the kill: the fault would not be under load")

    pid = int(open(os.path.join(CLUSTER_DIR, f"redis-{old}.pid")).read().strip())
    log(f"SIGKILL primary redis-server {pid} on port {old}")
    os.kill(pid, signal.SIGKILL)
    killed_at = time.time()
    wait_until(lambda: not alive(pid), 5)

    # Measured side by side: the sentinels' switch and the nodes' readiness (a thread), the first
    # complete flow (here).
    import threading
    seen = {"new": None, "switch_s": None, "ready_s": None, "red_seen": False}

    def watch():
        deadline = killed_at + RECOVERY_BOUND_S
        while time.time() < deadline:
            if seen["new"] is None:
                port = sentinel_primary()
                if port and port != old:
                    seen["new"], seen["switch_s"] = port, time.time() - killed_at
                    log(f"a sentinel names {port} as primary, {seen['switch_s']:.2f} s after the kill")
            statuses = [curl(node + "/readyz", timeout=3).status for node in NODES]
            seen["red_seen"] |= any(status != 200 for status in statuses)
            if seen["new"] is not None and all(status == 200 for status in statuses):
                seen["ready_s"] = time.time() - killed_at
                return
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    flow_s, attempts, last_problem, redeemed = None, 0, None, []
    while time.time() < killed_at + RECOVERY_BOUND_S:
        attempts += 1
        last_problem = full_flow(NODES[attempts % len(NODES)], NODES[(attempts + 1) % len(NODES)], user=f"after-failover-{attempts}",
                                 redeemed=redeemed)
        if last_problem is None:
            flow_s = time.time() - killed_at
            break
        log(f"flow attempt {attempts} after the kill: {last_problem}")
        time.sleep(0.2)
    watcher.join(timeout=RECOVERY_BOUND_S + 10)
    new = seen["new"]
    FIGURES["old_primary"], FIGURES["new_primary"] = old, new
    FIGURES["sentinel_switch_s"] = round(seen["switch_s"], 2) if seen["switch_s"] is not None else None
    FIGURES["readyz_green_s"] = round(seen["ready_s"], 2) if seen["ready_s"] is not None else None
    FIGURES["readyz_red_seen"] = seen["red_seen"]
    FIGURES["first_flow_s"] = round(flow_s, 2) if flow_s is not None else None
    FIGURES["flow_attempts"] = attempts
    check(new is not None, f"no sentinel named a new primary within {RECOVERY_BOUND_S} s of the kill")
    check(seen["ready_s"] is not None, f"/readyz was not green on every node within {RECOVERY_BOUND_S} s of the kill")
    check(flow_s is not None, f"no complete flow within {RECOVERY_BOUND_S} s of the kill ({attempts} attempts; last: {last_problem})")
    if new:
        check(role(new) == "master", f"the promoted {new} answers ROLE {role(new)!r}")
    if before.status == 200:
        answer = poll(NODES[1], before.json["device_code"])
        check((answer.json or {}).get("error") in ("authorization_pending", "slow_down"),
              f"a code replicated before the kill (WAIT 2) is not pending after the failover: {answer!r}")
    check(harness.poll() is None, "the harness ended before the flows after the failover: the recovery was not under load")
    if flow_s is None and harness.poll() is None:
        # No recovery: its devices would wait out their lifetimes; stop it so the verdict comes well
        # before run.sh's 150 s timeout.
        harness.send_signal(signal.SIGINT)

    # A healthy harness ends about 40 s after it started (18 s of new devices, then their flows; a
    # code that is never approved lives 20–40 s).
    report = finish_harness(harness, report_path, timeout=80)
    faults = summarize(report)
    FIGURES["flows_completed"] = sum(report.get("completed_per_second", []))
    FIGURES["tokens_issued"] = sum(row["count"] for row in report.get("rows", []) if row["endpoint"] == "POST /oauth/token" and row["outcome"] == "200 token")
    check(nodes_alive(range(len(NODE_PIDS))) == list(range(len(NODE_PIDS))), "an API node died")
    check(FIGURES["transport_errors"] == 0, f"{FIGURES['transport_errors']} transport errors: nodes must stay up through a failover")
    FIGURES["redemptions_forgotten"] = faults.get("redemptions_forgotten", 0)
    # The code redeemed by the first flow after the kill, polled again now that the harness is done.
    for device_code, body in redeemed:
        # Within the retry window the same answer again, after it invalid_grant: never a second token.
        again = poll(NODES[0], device_code)
        check((again.status == 200 and again.body == body) or (again.json or {}).get("error") == "invalid_grant",
              f"the code redeemed after the failover, polled again: {again!r}")

    final = sentinel_primary()
    check(final == new, f"the sentinels failed over again, from {new} to {final}: what {new} acknowledged in between is lost")
    if new:
        # The nodes write to the promoted replica: with the harness done, codes issued through every
        # node appear there, and the other replica follows it.
        records = grant_records(new)
        issued = [issue(node) for node in NODES for _ in range(2)]
        check(all(answer.status == 200 for answer in issued), f"device_authorization after the failover: {[a for a in issued if a.status != 200][:2]}")
        added = len(grant_records(new) - records)
        FIGURES["records_written_to_new_primary"] = f"{added}/{len(issued)}"
        check(added == len(issued), f"{len(issued)} codes issued after the failover, {added} new records on the promoted {new}")
        REDIS_PORT = new   # scan_grants asks REDIS_PORT
        total, indexes, problems = scan_grants()
        FIGURES["grants_on_new_primary"] = f"{total} records, {indexes} indexes, {len(problems)} problems"
        check(not problems, f"half-written grants on the promoted replica: {problems[:3]}")
        other = [port for port in REDIS_PORTS if port not in (old, new)]
        follows = wait_until(lambda: all(f"master_port:{new}" in cli(port, "info", "replication") for port in other), 15, step=0.2)
        FIGURES["other_replica_follows_new_primary"] = follows
    FIGURES["failovers"] = faults.get("failovers", 0)


SCENARIOS = {"redis-restart": redis_restart, "redis-disruptions": redis_disruptions, "node-kill": node_kill, "maxmemory": maxmemory,
             "sentinel-failover": sentinel_failover}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--fsync", default="everysec", choices=["everysec", "always", "no"])
    parser.add_argument("--also-shutdown", action="store_true", help="redis-restart: a SHUTDOWN restart after the crash")
    parser.add_argument("--power-loss", action="store_true",
                        help="redis-restart: after SIGKILL, cut every AOF file back to its last fsync (an OS crash; needs fsync_tracker.so)")
    parser.add_argument("--durable", action="store_true",
                        help="redis-restart: the nodes run with durability (WAITAOF): require 0 lost approvals, denials and codes")
    parser.add_argument("--sleep", type=int, default=12, help="redis-disruptions: DEBUG SLEEP seconds (> twice the 5 s command timeout)")
    args = parser.parse_args()
    if not NODES or not REDIS_PORT:
        print("faults.py runs inside deploy/local-cluster.sh (NODE_URLS, REDIS_PORT, …); use Tests/Faults/run.sh", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    name = args.scenario + (f" (appendfsync {args.fsync}{', simulated power loss' if args.power_loss else ''})" if args.scenario == "redis-restart" else "")
    try:
        SCENARIOS[args.scenario](args)
    except Exception as error:  # a crash of the test itself is a failure, with its reason
        import traceback
        traceback.print_exc()
        FAILURES.append(f"{type(error).__name__}: {error}")
    finally:
        stop_children()
    command = FIGURES.pop("command", "")
    figures = " ".join(f"{key}={value}" for key, value in FIGURES.items())
    if FAILURES:
        print(f"FAIL {name}: {'; '.join(FAILURES)[:1500]} | {figures}", flush=True)
    else:
        print(f"PASS {name}: {figures}", flush=True)
    if command:
        print(f"     harness: {command}", flush=True)
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
