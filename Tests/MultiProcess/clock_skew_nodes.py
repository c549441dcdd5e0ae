#!/usr/bin/env python3
"""Two deviceauth-server processes whose own clocks disagree by minutes behave as one server.

Issue #3 asks that every time decision of the store is made on the Redis server's clock, and #4
that several deviceauth-server processes on one Redis behave as one server. This test starts
three real nodes on the Redis of `Tests/Support/with-redis.sh` (REDIS_URL):

    ahead   under libfaketime, its clock 10 minutes in the future
    behind  under libfaketime, its clock 10 minutes in the past
    plain   the machine's clock

It first proves the skew is real (the `iat` of tokens minted by each node differs by about ten
minutes), then runs one scripted RFC 8628 flow across `ahead` and `behind` (issue on one node,
poll, slow_down, approve, redeem, replay and expiry on the other) and the same script on `plain`
alone, and asserts that both give exactly the expected outcomes, step by step.

Before the nodes start it also runs the real binary with bad settings (it is the one test that
starts `deviceauth-server` processes): out-of-range numbers, unknown log levels and formats, a
port in use, an unresolvable host. Each must stop the server with a message naming the setting.

Usage: Tests/Support/with-redis.sh python3 Tests/MultiProcess/clock_skew_nodes.py [BUILD_DIR]
"""
import base64
import glob
import html.parser
import http.cookiejar
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

BUILD = sys.argv[1] if len(sys.argv) > 1 else ".build/debug"
SERVER = os.path.join(BUILD, "deviceauth-server")
SKEW_SECONDS = 600
LIFETIME = 4      # seconds a device code of the short-lived client lives
INTERVAL = 1      # the clients' polling interval


def free_port():
    """A free loopback port below the ephemeral range (see Tests/Support/free-port.py)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Support", "free-port.py")
    return int(subprocess.check_output([sys.executable, script], text=True))


class Node:
    def __init__(self, name, workdir, redis_url, config, key, offset=None, extra=()):
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # redis_url None: the node takes the configuration file's redis_url.
        command = [SERVER, "--host", "127.0.0.1", "--port", str(self.port), *(("--redis-url", redis_url) if redis_url else ()),
                   "--config", config, "--signing-key", key, "--log-level", "warning", *extra]
        env = dict(os.environ)
        if offset is not None:
            # Only the wall clock is faked; monotonic clocks (timers, timeouts) stay real. (Preloading
            # libfaketime without the wrapper made the server spin at 100% CPU here.)
            command = ["faketime", "-f", offset] + command
            env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
        self.log = open(os.path.join(workdir, f"{name}.log"), "wb")
        # Its own process group: the `faketime` wrapper does not pass signals on, and a server it
        # left behind spun at 100% CPU once the wrapper's shared clock was gone; stop() signals the group.
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait_ready(self):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"FAIL: node {self.name} exited with {self.process.returncode}; log: {self.log.name}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise SystemExit(f"FAIL: node {self.name} did not become ready; log: {self.log.name}")

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # anything left in its group
        except ProcessLookupError:
            pass
        self.process.wait()
        self.log.close()


def request(url, form=None, headers=None, opener=None):
    """Returns (status, headers, body text). Never raises for HTTP error statuses."""
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with (opener or urllib.request.build_opener()).open(req, timeout=10) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode()


def issue(node, client):
    status, _, body = request(node.url + "/oauth/device_authorization", {"client_id": client, "scope": "profile"})
    assert status == 200, (status, body)
    return json.loads(body)


def poll(node, device_code, client):
    """The outcome a device sees: 'token', an error code, plus the interval when slow_down."""
    status, _, body = request(node.url + "/oauth/token", {
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": device_code, "client_id": client})
    reply = json.loads(body)
    if status == 200:
        return "token", reply
    outcome = reply["error"]
    if outcome == "slow_down":
        outcome += f"(interval={reply.get('interval')})"
    return outcome, reply


def hidden_inputs(page):
    """(name, value) of every hidden <input> of an HTML page."""
    class Collector(html.parser.HTMLParser):
        found = []

        def handle_starttag(self, tag, attrs):
            attributes = dict(attrs)
            if tag == "input" and attributes.get("type") == "hidden":
                self.found.append((attributes.get("name"), attributes.get("value") or ""))
    collector = Collector()
    collector.found = []
    collector.feed(page)
    return collector.found


def decide(node, user_code, action, user="alice"):
    """A person approving or denying through the verification page (proxy-header login)."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    headers = {"X-Forwarded-User": user}
    # GET only fills in the code form; the lookup is the form's POST.
    status, _, page = request(node.url + "/device?" + urllib.parse.urlencode({"user_code": user_code}),
                              headers=headers, opener=opener)
    if status != 200:
        return f"form {status}"
    token = dict(hidden_inputs(page)).get("csrf_token")
    status, _, page = request(node.url + "/device", {"csrf_token": token, "user_code": user_code, "action": "lookup"},
                              headers=headers, opener=opener)
    if status != 200:
        return f"page {status}"
    fields = {name: value for name, value in hidden_inputs(page) if name in ("csrf_token", "user_code", "grant_id")}
    if len(fields) != 3:
        return "page without form"
    status, _, page = request(node.url + "/device", dict(fields, action=action), headers=headers, opener=opener)
    return f"{action} {status}"


def lookup_status(node, user_code, user="alice"):
    """The status of the verification page's lookup of a code (GET the form, POST action=lookup)."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    headers = {"X-Forwarded-User": user}
    status, _, page = request(node.url + "/device", headers=headers, opener=opener)
    if status != 200:
        return status
    token = dict(hidden_inputs(page)).get("csrf_token")
    status, _, _ = request(node.url + "/device", {"csrf_token": token, "user_code": user_code, "action": "lookup"},
                           headers=headers, opener=opener)
    return status


def scripted_flow(x, y):
    """One RFC 8628 flow whose steps alternate between nodes x and y; returns each step's outcome."""
    steps = []
    grant = issue(x, "skew-cli")
    steps.append(("issue on x: expires_in, interval", (grant["expires_in"], grant["interval"])))
    code = grant["device_code"]
    steps.append(("first poll on y", poll(y, code, "skew-cli")[0]))
    steps.append(("immediate poll on x", poll(x, code, "skew-cli")[0]))
    steps.append(("immediate poll on y", poll(y, code, "skew-cli")[0]))
    steps.append(("approve on y", decide(y, grant["user_code"], "approve")))
    outcome, token = poll(x, code, "skew-cli")
    steps.append(("poll after approval on x", outcome))
    # The device polls again on the other node (as if x's answer was lost): the same token.
    again, again_token = poll(y, code, "skew-cli")
    steps.append(("poll again on y", "same token" if again == "token" and again_token == token else again))

    denied = issue(y, "skew-cli")
    steps.append(("deny on x", decide(x, denied["user_code"], "deny")))
    steps.append(("poll denied on y", poll(y, denied["device_code"], "skew-cli")[0]))

    # A short-lived code: alive on both nodes at first, expired on both after its lifetime,
    # although one node's clock is ten minutes past its expiry and the other's ten before its issue.
    short = issue(y, "skew-short")
    steps.append(("short code, first poll on x", poll(x, short["device_code"], "skew-short")[0]))
    steps.append(("short code, page on x", lookup_status(x, short["user_code"])))
    time.sleep(LIFETIME + 0.5)
    steps.append(("short code after lifetime, poll on x", poll(x, short["device_code"], "skew-short")[0]))
    steps.append(("short code after lifetime, poll on y", poll(y, short["device_code"], "skew-short")[0]))
    return steps, token


EXPECTED = [
    ("issue on x: expires_in, interval", (60, INTERVAL)),
    ("first poll on y", "authorization_pending"),
    ("immediate poll on x", f"slow_down(interval={INTERVAL + 5})"),
    ("immediate poll on y", f"slow_down(interval={INTERVAL + 10})"),
    ("approve on y", "approve 200"),
    ("poll after approval on x", "token"),
    ("poll again on y", "same token"),
    ("deny on x", "deny 200"),
    ("poll denied on y", "access_denied"),
    ("short code, first poll on x", "authorization_pending"),
    ("short code, page on x", 200),
    ("short code after lifetime, poll on x", "expired_token"),
    ("short code after lifetime, poll on y", "expired_token"),
]


def token_issued_at(token_reply):
    payload = token_reply["access_token"].split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["iat"]


def main():
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        raise SystemExit("clock_skew_nodes: REDIS_URL is not set (run under Tests/Support/with-redis.sh)")
    if not os.path.exists(SERVER):
        raise SystemExit(f"clock_skew_nodes: missing {SERVER}")
    if not glob.glob("/usr/lib/*/faketime/libfaketime.so.1"):
        raise SystemExit("clock_skew_nodes: missing libfaketime (apt-get install faketime)")
    workdir = tempfile.mkdtemp(prefix="deviceauth-skew.")
    config = os.path.join(workdir, "config.json")
    with open(config, "w") as f:
        json.dump({
            "secret": "clock-skew-test-secret-0123456789abcdef",
            "trusted_proxies": ["127.0.0.1/32"], "user_header": "X-Forwarded-User",
            "key_prefix": f"skew{os.getpid()}",
            "clients": [
                {"client_id": "skew-cli", "display_name": "Skew test", "scopes": ["profile"],
                 "code_lifetime_seconds": 60, "interval_seconds": INTERVAL},
                {"client_id": "skew-short", "display_name": "Skew test (short)", "scopes": ["profile"],
                 "code_lifetime_seconds": LIFETIME, "interval_seconds": INTERVAL},
            ],
        }, f)
    key = os.path.join(workdir, "signing-key.pem")
    subprocess.run(f"openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out {key}",
                   shell=True, check=True)
    # A connection count out of range is refused with a message that names the setting.
    for bad in ("0", "many"):
        refused = subprocess.run([SERVER, "--redis-url", redis_url, "--redis-connections", bad],
                                 capture_output=True, text=True, timeout=30)
        assert refused.returncode != 0 and "--redis-connections" in refused.stderr + refused.stdout, (bad, refused)
    print("--redis-connections 0 and 'many' refused")
    # The same settings from the environment: a bad value is refused too, never replaced by the default.
    # The log settings too: an unknown level or format used to fall back to info/text without a word.
    for name, bad, option in (("DEVICEAUTH_REDIS_CONNECTIONS", "0", "--redis-connections"), ("DEVICEAUTH_PORT", "http", "--port"),
                              ("DEVICEAUTH_LOG_LEVEL", "verbose", "--log-level"), ("DEVICEAUTH_LOG_FORMAT", "yaml", "--log-format")):
        refused = subprocess.run([SERVER, "--redis-url", redis_url], env={**os.environ, name: bad},
                                 capture_output=True, text=True, timeout=30)
        output = refused.stderr + refused.stdout
        assert refused.returncode != 0 and option in output and name in output and f"'{bad}'" in output, (name, bad, refused)
    print("DEVICEAUTH_REDIS_CONNECTIONS=0, DEVICEAUTH_PORT=http, DEVICEAUTH_LOG_LEVEL=verbose and DEVICEAUTH_LOG_FORMAT=yaml refused")
    refused = subprocess.run([SERVER, "--redis-url", redis_url, "--log-level", "WARNING"], capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and "one of trace, debug, info" in refused.stderr + refused.stdout, refused
    print("--log-level WARNING refused, naming the levels")
    # An address the node cannot listen on: a clear message naming it, not NIO's bare bind error.
    # Redis's own port is certainly in use; a .invalid name never resolves.
    redis_port = urllib.parse.urlsplit(redis_url).port
    for host, port, reason in (("127.0.0.1", redis_port, "the port is in use"), ("no-such-host.invalid", 18080, "the host does not resolve")):
        refused = subprocess.run([SERVER, "--redis-url", redis_url, "--config", config, "--signing-key", key, "--host", host, "--port", str(port)],
                                 capture_output=True, text=True, timeout=30)
        output = refused.stderr + refused.stdout
        assert refused.returncode != 0 and f"cannot listen on {host}:{port}: {reason}" in output, (host, port, refused)
    print("a port in use and an unresolvable host refused, naming the address")
    # Outside development mode, plaintext credentials in the file are refused with a clear message.
    for name, extra, needle in (("users", {"users": {"alice": "alice"}}, '"users"'),
                                ("client secret", {"clients": [{"client_id": "svc", "scopes": ["profile"], "secret": "plain"}]}, "secret_sha256")):
        bad_config = os.path.join(workdir, "plaintext.json")
        with open(bad_config, "w") as f:
            json.dump({**json.load(open(config)), **extra}, f)
        refused = subprocess.run([SERVER, "--redis-url", redis_url, "--config", bad_config, "--signing-key", key, "--port", str(free_port())],
                                 capture_output=True, text=True, timeout=30)
        assert refused.returncode != 0 and needle in refused.stderr + refused.stdout, (name, refused)
    print("plaintext users and client secrets refused outside development mode")
    # A wide trusted range with the user header is refused at start, naming the override.
    wide_config = os.path.join(workdir, "wide.json")
    with open(wide_config, "w") as f:
        json.dump({**json.load(open(config)), "trusted_proxies": ["0.0.0.0/0"]}, f)
    refused = subprocess.run([SERVER, "--redis-url", redis_url, "--config", wide_config, "--signing-key", key, "--port", str(free_port())],
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and "allow_wide_trusted_proxies" in refused.stderr + refused.stdout, refused
    print("trusted_proxies 0.0.0.0/0 with user_header refused, naming allow_wide_trusted_proxies")
    # The 'behind' node reads the shared secret from a file (--secret-file wins over the config's):
    # the cross-node flows below only work if it is the same secret.
    secret_file = os.path.join(workdir, "secret")
    with open(secret_file, "w") as f:
        f.write(json.load(open(config))["secret"] + "\n")
    os.chmod(secret_file, 0o600)
    nodes = [Node("ahead", workdir, redis_url, config, key, f"+{SKEW_SECONDS}s"),
             Node("behind", workdir, redis_url, config, key, f"-{SKEW_SECONDS}s", extra=("--secret-file", secret_file)),
             # One Redis connection instead of two (--redis-connections): the node must behave the same.
             Node("plain", workdir, redis_url, config, key, extra=("--redis-connections", "1"))]
    ok = False
    try:
        for node in nodes:
            node.wait_ready()
        ahead, behind, plain = nodes

        # The real server's headers: a Server name without a version, nosniff on answers and 404s.
        for path in ("/healthz", "/metrics/", "/no-such-route"):
            status, headers, _ = request(plain.url + path)
            assert headers.get("Server") == "deviceauth", (path, headers.get("Server"))
            assert headers.get("X-Content-Type-Options") == "nosniff", (path, dict(headers))
            assert (status == 200) == (path == "/healthz"), (path, status)
        print("Server: deviceauth (no version) and nosniff on 200 and 404; /metrics/ is 404")

        skewed_steps, skewed_token = scripted_flow(ahead, behind)
        plain_steps, plain_token = scripted_flow(plain, plain)
        reverse_steps, reverse_token = scripted_flow(behind, ahead)

        # The skew is real: each node stamps its tokens with its own clock.
        iat_ahead, iat_plain, iat_behind = token_issued_at(skewed_token), token_issued_at(plain_token), token_issued_at(reverse_token)
        print(f"token iat: ahead {iat_ahead}, plain {iat_plain}, behind {iat_behind}")
        assert iat_ahead - iat_plain > SKEW_SECONDS - 60, "libfaketime did not move the 'ahead' node's clock"
        assert iat_plain - iat_behind > SKEW_SECONDS - 60 - 2 * LIFETIME, "libfaketime did not move the 'behind' node's clock"

        failures = []
        for label, steps in (("ahead/behind", skewed_steps), ("plain", plain_steps), ("behind/ahead", reverse_steps)):
            for (step, got), (_, expected) in zip(steps, EXPECTED):
                status = "ok" if got == expected else "MISMATCH"
                print(f"  {label:13} {step:40} {got!s:28} {status}")
                if got != expected:
                    failures.append(f"{label}: {step}: got {got}, expected {expected}")
        if failures:
            raise AssertionError("; ".join(failures))
        ok = True
        print("PASS clock skew: nodes 20 minutes apart decide every step exactly as one node with the right clock")
    finally:
        for node in nodes:
            node.stop()
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"FAIL clock skew: logs kept in {workdir}", file=sys.stderr)


if __name__ == "__main__":
    main()
