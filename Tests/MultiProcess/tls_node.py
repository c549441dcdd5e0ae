#!/usr/bin/env python3
"""A deviceauth-server process on a TLS-only Redis with mutual TLS, configured by its URL alone.

Issue #15 asks that the server's `--redis-url` (and the configuration file's `redis_url`) take the
CA and the client certificate. This test makes a private CA with `openssl`, starts a private
`redis-server` that listens only on a TLS port and demands a client certificate
(`--tls-auth-clients yes`) and a password, and then:

  * a node on `rediss://:pw@127.0.0.1:P?tls_ca_file=…&tls_cert_file=…&tls_key_file=…` becomes
    ready and runs a whole RFC 8628 flow (issue, pending, approve, token, replay refused); the
    grant's record is in that Redis (checked with `redis-cli --tls`);
  * the same URL given as `redis_url` in the configuration file works the same way;
  * a node whose URL names a CA that did not sign Redis's certificate, and one without the client
    certificate, never become ready: `/readyz` and the token endpoint answer 503 (RFC 6749 body),
    and the log names the TLS failure but never the Redis password.

Usage: python3 Tests/MultiProcess/tls_node.py [BUILD_DIR]
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clock_skew_nodes as flows  # noqa: E402  (the node, request and flow helpers)

BUILD = sys.argv[1] if len(sys.argv) > 1 else ".build/debug"
flows.SERVER = os.path.join(BUILD, "deviceauth-server")
PASSWORD = "tls-test-redis-password-5d1c"


def openssl(*arguments, cwd):
    subprocess.run(["openssl", *arguments], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_certificates(directory):
    """ca, other-ca; redis (serverAuth, 127.0.0.1) and client (clientAuth), both from ca."""
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30",
                "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-subj", f"/CN=deviceauth tls_node {ca}", cwd=directory)
    for name, names, usage in (("redis", "IP:127.0.0.1,DNS:localhost", "serverAuth"), ("client", "DNS:deviceauth-node", "clientAuth")):
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory)
        with open(os.path.join(directory, f"{name}.ext"), "w") as f:
            f.write(f"subjectAltName={names}\nextendedKeyUsage={usage}\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.crt", "-days", "30", "-extfile", f"{name}.ext", cwd=directory)
    # The node runs as this user and reads the key; nothing else needs it.
    os.chmod(os.path.join(directory, "client.key"), 0o600)


def start_redis(directory):
    port = flows.free_port()
    process = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", "0", "--tls-port", str(port),
         "--tls-cert-file", "redis.crt", "--tls-key-file", "redis.key", "--tls-ca-cert-file", "ca.crt",
         "--tls-auth-clients", "yes", "--requirepass", PASSWORD, "--save", "", "--appendonly", "no",
         "--dir", directory, "--logfile", os.path.join(directory, "redis.log")],
        cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        if redis_cli(directory, port, "PING") == "PONG":
            return process, port
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"FAIL tls node: redis-server did not start on TLS port {port}; see {directory}/redis.log")


def redis_cli(directory, port, *command):
    result = subprocess.run(["redis-cli", "--tls", "--cacert", "ca.crt", "--cert", "client.crt", "--key", "client.key",
                             "-h", "127.0.0.1", "-p", str(port), "--no-auth-warning", "-a", PASSWORD, *command],
                            cwd=directory, capture_output=True, text=True, timeout=10)
    return result.stdout.strip()


def url(directory, port, ca="ca.crt", client=True):
    query = {"tls_ca_file": os.path.join(directory, ca)}
    if client:
        query.update(tls_cert_file=os.path.join(directory, "client.crt"), tls_key_file=os.path.join(directory, "client.key"))
    return f"rediss://:{PASSWORD}@127.0.0.1:{port}?{urllib.parse.urlencode(query)}"


def write_config(directory, name, prefix, redis_url=None):
    path = os.path.join(directory, f"{name}.json")
    config = {
        "secret": "tls-node-test-secret-0123456789abcdef",
        "trusted_proxies": ["127.0.0.1/32"], "user_header": "X-Forwarded-User",
        "key_prefix": prefix,
        "clients": [{"client_id": "skew-cli", "display_name": "TLS test", "scopes": ["profile"],
                     "code_lifetime_seconds": 60, "interval_seconds": 1}],
    }
    if redis_url:
        config["redis_url"] = redis_url
    with open(path, "w") as f:
        json.dump(config, f)
    return path


def full_flow(node):
    grant = flows.issue(node, "skew-cli")
    steps = [flows.poll(node, grant["device_code"], "skew-cli")[0], flows.decide(node, grant["user_code"], "approve")]
    outcome, token = flows.poll(node, grant["device_code"], "skew-cli")
    again, again_token = flows.poll(node, grant["device_code"], "skew-cli")
    steps += [outcome, "same token" if again == "token" and again_token == token else again]
    expected = ["authorization_pending", "approve 200", "token", "same token"]
    assert steps == expected, f"{node.name}: flow steps {steps}, expected {expected}"
    assert token.get("token_type") == "Bearer" and token.get("access_token"), token


def never_ready(node, reason):
    """The node stays up but unready: /readyz and the token endpoint answer 503; its log says why."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if node.process.poll() is not None:
            raise AssertionError(f"{node.name} exited with {node.process.returncode} instead of staying up unready")
        try:
            status, _, _ = flows.request(node.url + "/readyz")
            break
        except OSError:
            time.sleep(0.2)
    else:
        raise AssertionError(f"{node.name} never listened")
    # Wait for the log to name the failure (connect attempts back off; a hang guard, not a timing check).
    deadline = time.monotonic() + 30
    while reason not in open(node.log.name, errors="replace").read() and time.monotonic() < deadline:
        time.sleep(0.2)
    status, _, _ = flows.request(node.url + "/readyz")
    assert status == 503, f"{node.name}: /readyz {status}, expected 503"
    status, _, body = flows.request(node.url + "/oauth/token", {
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": "x" * 43, "client_id": "skew-cli"})
    assert status == 503 and json.loads(body).get("error") == "temporarily_unavailable", (node.name, status, body)
    log = open(node.log.name, errors="replace").read()
    assert reason in log, f"{node.name}: the log does not name the TLS failure ({reason!r}): {log[-2000:]}"
    assert PASSWORD not in log, f"{node.name}: the Redis password is in the log"


def main():
    for tool in ("redis-server", "redis-cli", "openssl"):
        if not shutil.which(tool):
            raise SystemExit(f"tls_node: {tool} is not installed")
    if not os.path.exists(flows.SERVER):
        raise SystemExit(f"tls_node: missing {flows.SERVER}")
    workdir = tempfile.mkdtemp(prefix="deviceauth-tls-node.")
    make_certificates(workdir)
    key = os.path.join(workdir, "signing-key.pem")
    subprocess.run(f"openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out {key}",
                   shell=True, check=True)
    redis, port = start_redis(workdir)
    nodes = []
    ok = False
    try:
        prefix = f"tls{os.getpid()}"
        config = write_config(workdir, "plain", prefix + "flag")
        by_flag = flows.Node("by-flag", workdir, url(workdir, port), config, key)
        # The same URL from the configuration file's redis_url, with no --redis-url.
        in_file = write_config(workdir, "with-url", prefix + "file", redis_url=url(workdir, port))
        by_file = flows.Node("by-file", workdir, None, in_file, key)
        nodes += [by_flag, by_file]
        for node in nodes:
            node.wait_ready()
        full_flow(by_flag)
        full_flow(by_file)
        # Each node's keys (its own prefix) are in the TLS Redis: both really wrote there.
        counts = {}
        for name in ("flag", "file"):
            found = redis_cli(workdir, port, "--scan", "--pattern", f"{prefix}{name}*").split()
            counts[name] = len(found)
            assert found, f"the TLS Redis holds no key of the node configured by {name}"
        print(f"two nodes on rediss:// with mutual TLS (URL by flag, and by the file's redis_url) ran whole flows; "
              f"keys in the TLS Redis: {counts}")

        foreign_ca = flows.Node("foreign-ca", workdir, url(workdir, port, ca="other-ca.crt"), config, key)
        no_client_certificate = flows.Node("no-client-cert", workdir, url(workdir, port, client=False), config, key)
        nodes += [foreign_ca, no_client_certificate]
        never_ready(foreign_ca, "certificate verify failed")
        never_ready(no_client_certificate, "TLS")
        print("a foreign CA and a missing client certificate: 503 and /readyz red, the log names TLS, no password in it")
        ok = True
        print("PASS tls node: the server's --redis-url and redis_url take the CA and the client certificate")
    finally:
        for node in nodes:
            node.stop()
        redis.kill()
        redis.wait()
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"FAIL tls node: logs kept in {workdir}", file=sys.stderr)


if __name__ == "__main__":
    main()
