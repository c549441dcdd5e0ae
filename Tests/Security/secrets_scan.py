#!/usr/bin/env python3
"""Secrets at rest and in logs: a small full load-test run, then a scan of Redis and the node logs.

Run inside deploy/local-cluster.sh (which exports NODE_URLS and REDIS_URL), with TMPDIR pointing
at a folder of ours so the cluster's log folder lands in it:

    TMPDIR=$dir deploy/local-cluster.sh --nodes 2 --log-level trace --build B -- \
        python3 Tests/Security/secrets_scan.py --build B --logs $dir

A recording reverse proxy sits in front of every node (the load test talks to the proxies), so
every device code, user code and access token the servers hand out is captured without changing
the load test. Afterwards every Redis key (SCAN) and value (DUMP, and HGETALL / GET / … for
values DUMP may compress) and every line of every node log (trace level) is searched for each
of them: the device code and its random part, the user code as shown (XXXX-XXXX) and
normalized (XXXXXXXX), the access token and its signature. Exit 1 if any is found.
"""
import argparse
import http.client
import http.server
import json
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time
import urllib.parse


class Captured:
    def __init__(self):
        self.lock = threading.Lock()
        self.device_codes, self.user_codes, self.tokens = set(), set(), set()
        self.requests = 0

    def record(self, body: bytes):
        try:
            data = json.loads(body)
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        with self.lock:
            if isinstance(data.get("device_code"), str):
                self.device_codes.add(data["device_code"])
            if isinstance(data.get("user_code"), str):
                self.user_codes.add(data["user_code"])
            if isinstance(data.get("access_token"), str):
                self.tokens.add(data["access_token"])


def make_proxy(target: str, captured: Captured):
    parsed = urllib.parse.urlsplit(target)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def forward(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive", "proxy-connection")}
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            connection.close()
            captured.record(payload)
            with captured.lock:
                captured.requests += 1
            self.send_response_only(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() not in ("content-length", "transfer-encoding", "connection", "keep-alive"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = forward

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


class Redis:
    """Just enough RESP to SCAN, DUMP and read values (binary-safe)."""

    def __init__(self, url: str):
        parsed = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((parsed.hostname, parsed.port or 6379))
        self.file = self.sock.makefile("rb")

    def call(self, *args):
        out = b"*%d\r\n" % len(args)
        for arg in args:
            arg = arg if isinstance(arg, bytes) else str(arg).encode()
            out += b"$%d\r\n%s\r\n" % (len(arg), arg)
        self.sock.sendall(out)
        return self.read()

    def read(self):
        line = self.file.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b":"):
            return rest
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.file.read(n + 2)[:-2]
            return data
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise RuntimeError(f"unexpected reply {line!r}")


def flatten(value):
    if value is None:
        return []
    if isinstance(value, list):
        return [b for item in value for b in flatten(item)]
    return [value]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build", default=".build/debug")
    parser.add_argument("--logs", required=True, help="folder holding the cluster's log folder (the TMPDIR given to local-cluster.sh)")
    parser.add_argument("--devices", type=int, default=int(os.environ.get("SECRETS_SCAN_DEVICES", "80")))
    args = parser.parse_args()

    nodes = [u for u in os.environ["NODE_URLS"].split(",") if u]
    captured = Captured()
    proxies = [make_proxy(node, captured) for node in nodes]
    proxy_urls = ",".join(url for _, url in proxies)
    command = [f"{args.build}/deviceauth-loadtest", "http", "--nodes", proxy_urls, "--devices", str(args.devices),
               "--concurrency", "40", "--duration", "30", "--think-time-ms", "100-400", "--seed", "8628"]
    print("secrets-scan: load test through recording proxies:", " ".join(command), flush=True)
    started = time.time()
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(result.stdout[-3000:])
    print(f"secrets-scan: load test exit {result.returncode} in {time.time() - started:.1f} s, {captured.requests} requests proxied")
    for server, _ in proxies:
        server.shutdown()
    if result.returncode != 0:
        print("secrets-scan: the load test failed", file=sys.stderr)
        return 1

    needles = {}
    for code in captured.device_codes:
        needles[code.encode()] = "device code"
        # The first 42 characters are its 256 random bits alone (the rest hides the record's coordinates).
        needles[code[:42].encode()] = "device code (random part)"
    for code in captured.user_codes:
        needles[code.encode()] = "user code (display)"
        needles[code.replace("-", "").encode()] = "user code (normalized)"
    for token in captured.tokens:
        needles[token.encode()] = "access token"
        needles[token.rsplit(".", 1)[-1].encode()] = "access token (signature)"
    counts = (len(captured.device_codes), len(captured.user_codes), len(captured.tokens))
    print(f"secrets-scan: {counts[0]} device codes, {counts[1]} user codes, {counts[2]} access tokens captured")
    if counts[0] < args.devices or counts[1] < args.devices or counts[2] == 0:
        print("secrets-scan: too few secrets captured for the scan to mean anything", file=sys.stderr)
        return 1

    findings = []
    redis = Redis(os.environ["REDIS_URL"])
    # Canaries: one planted key and one planted log line holding a captured secret. The scan must
    # report exactly these two, or it could not have found a real leak either.
    canary_code = sorted(captured.device_codes)[0]
    redis.call("HSET", "secrets-scan-canary", "v", "x" + canary_code[:42] + "x")
    canary_log = pathlib.Path(args.logs) / "canary.log"
    canary_log.write_text("a line with " + sorted(captured.user_codes)[0].replace("-", "") + " inside\n")
    cursor, keys = b"0", []
    while True:
        cursor, batch = redis.call("SCAN", cursor, "COUNT", 1000)
        keys += batch
        if cursor == b"0":
            break
    values_scanned = 0
    for key in keys:
        kind = redis.call("TYPE", key)
        blobs = [key, redis.call("DUMP", key) or b""]
        reader = {b"hash": ("HGETALL",), b"string": ("GET",), b"list": ("LRANGE", 0, -1), b"set": ("SMEMBERS",),
                  b"zset": ("ZRANGE", 0, -1, "WITHSCORES")}.get(kind)
        if reader:
            blobs += flatten(redis.call(reader[0], key, *reader[1:]))
        values_scanned += len(blobs)
        for blob in blobs:
            for needle, what in needles.items():
                if needle in blob:
                    findings.append(f"Redis key {key!r}: {what}")
    print(f"secrets-scan: Redis: {len(keys)} keys, {values_scanned} keys/values/dumps scanned")

    log_files = [p for p in pathlib.Path(args.logs).rglob("*") if p.is_file() and p.suffix == ".log"]
    log_files = sorted(set(log_files))
    log_lines = 0
    for path in log_files:
        data = path.read_bytes()
        log_lines += data.count(b"\n")
        for needle, what in needles.items():
            if needle in data:
                line = next(l for l in data.split(b"\n") if needle in l)
                findings.append(f"{path.name}: {what}: {line[:300]!r}")
    print(f"secrets-scan: logs: {len(log_files)} files, {log_lines} lines scanned")
    if not any(p.name.startswith("node-") for p in log_files) or log_lines < 100:
        print("secrets-scan: node logs not found or nearly empty; is the log level trace?", file=sys.stderr)
        return 1

    canaries = [f for f in findings if "secrets-scan-canary" in f or f.startswith("canary.log")]
    findings = [f for f in findings if f not in canaries]
    if not (any("secrets-scan-canary" in f for f in canaries) and any(f.startswith("canary.log") for f in canaries)):
        print(f"secrets-scan: the planted canaries were not both found ({canaries}): the scan is broken", file=sys.stderr)
        return 1
    redis.call("DEL", "secrets-scan-canary")
    print("secrets-scan: both planted canaries found (Redis and log)")
    if findings:
        print(f"secrets-scan: FAIL, {len(findings)} finding(s):", file=sys.stderr)
        for finding in findings[:40]:
            print("  " + finding, file=sys.stderr)
        return 1
    print(f"secrets-scan: ok: none of {len(needles)} secret strings appears in Redis or the logs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
