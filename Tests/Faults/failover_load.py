#!/usr/bin/env python3
"""Failover under load (issue #16): primaries SIGKILLed again and again while the load-test harness runs.

    Tests/Faults/failover_load.py [--build DIR] [--scenarios sentinel,cluster] [--durability on,off] [--kills N]

Two scenarios, each run twice in one invocation, on its own loopback cluster (deploy/local-cluster.sh):

- sentinel: a primary, two replicas and three sentinels (local-cluster.sh --sentinel), three API nodes on
  redis+sentinel://. At least --kills times under load: SIGKILL the current primary, wait until the
  sentinels promote a replica and every API node answers /readyz, restart the killed redis-server with
  its original arguments (the sentinels make it a replica of the new primary), wait until the new
  primary lists two online replicas caught up with its offset, next kill.
- cluster: a 3-primary, 3-replica Redis Cluster, node timeout 1000 ms (local-cluster.sh --redis-cluster),
  three API nodes on redis+cluster://. The kills rotate over the three shards: SIGKILL the shard's
  primary, wait until its replica is promoted and every node says cluster_state:ok, /readyz everywhere,
  restart the killed node from its folder (nodes.conf: it rejoins as the new primary's replica), wait
  until it is a connected replica caught up with the new primary's offset, next kill.

Each scenario runs with durability on (the server's "durability": {"replicas": 1, "timeout_ms": 500}):
it must PASS with 0 approvals or denials lost, 0 second tokens (double redemptions), 0 lost logins
(approved devices that never got their token) and 0 redemptions undone; and with durability off, where
the same figures are only reported (REPORT), never failed. One line per run:

    PASS|FAIL|REPORT <scenario> <durability>: figures…

The figures come from the harness's JSON report (closed model, --fault-tolerant --expect-lost-approvals,
so a lost write is counted, not failed) and from Redis directly: before each kill one "marker" device
(on the shard about to lose its primary) is approved and redeemed through the API; after the run its
record is read from the primary that serves it (it must still say redeemed) and it is polled once more
(it must answer invalid_grant, not a second token). The harness runs through every kill: a kill waits
until a harness run is going with time left, and should the run end before the last kill (a slow
machine), another run starts; their reports are added up. A kill whose recovery outlasted the harness
run is not counted and another follows. --stall-ms N stops the replicas (SIGSTOP) for N ms before each
kill (the marker is redeemed meanwhile) and continues them after it.

Everything is on loopback; every process is stopped on exit (also on failure, Ctrl-C or SIGTERM), and
every run is bounded in time. Exit status 1 if a run FAILs. Standard library, curl and redis-cli only.
The build directory (debug binaries, nothing is built) is --build, or FAILOVER_BUILD_DIR, or .build/debug.
"""

import argparse
import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VERDICT = "FAILOVER-VERDICT "   # prefix of the inner process's result line on stdout


def log(message):
    print(f"[failover {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Configuration files (Tests/Faults/fault_config.py, as Tests/Faults/run.sh derives them, plus durability)

REPLICAS = 1   # durability.replicas of the durability-on runs (--replicas)


def write_configs(workdir):
    """The load-test configuration with short lifetimes (a lost approval costs seconds, not a minute)
    and the request rate limits off (the harness is one address); one copy with durability, one without."""
    sys.path.insert(0, HERE)
    sys.dont_write_bytecode = True   # no __pycache__ next to the tests
    import fault_config  # noqa: E402  (the derivation Tests/Faults/run.sh uses too)
    config = fault_config.derive(os.path.join(ROOT, "deploy", "loadtest-config.json"))
    paths = {}
    for durability in ("on", "off"):
        derived = dict(config)
        if durability == "on":
            derived["durability"] = {"replicas": REPLICAS, "timeout_ms": 500}
        paths[durability] = os.path.join(workdir, f"config-durability-{durability}.json")
        with open(paths[durability], "w") as file:
            json.dump(derived, file, indent=2)
    return paths


# ---------------------------------------------------------------------------------------------
# The outer process: one local-cluster.sh per run, each in its own process group

CURRENT = {"process": None}


def stop_group(process, grace=15):
    """TERM to the run's process group (local-cluster.sh stops its nodes and Redis), KILL what is left."""
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def outer(args):
    build = args.build or os.environ.get("FAILOVER_BUILD_DIR") or ".build/debug"
    build = os.path.abspath(build)
    for binary in ("deviceauth-server", "deviceauth-loadtest"):
        if not os.access(os.path.join(build, binary), os.X_OK):
            print(f"failover: {build}/{binary} missing; build first (nothing is built here)", file=sys.stderr)
            return 2
    for tool in ("redis-server", "redis-sentinel", "redis-cli", "curl", "setsid", "timeout"):
        if shutil.which(tool) is None:
            print(f"failover: {tool} not installed", file=sys.stderr)
            return 2
    scenarios = [s for s in args.scenarios.split(",") if s]
    durabilities = [d for d in args.durability.split(",") if d]
    if any(s not in ("sentinel", "cluster") for s in scenarios) or any(d not in ("on", "off") for d in durabilities):
        print("failover: --scenarios sentinel,cluster and --durability on,off", file=sys.stderr)
        return 2

    workdir = tempfile.mkdtemp(prefix="deviceauth-failover.")
    configs = write_configs(workdir)

    def on_signal(signum, _frame):
        stop_group(CURRENT["process"])
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    lines, failed = [], []
    began = time.time()
    try:
        for scenario in scenarios:
            for durability in durabilities:
                name = f"{scenario} durability-{durability}"
                mode = ["--sentinel", "--sentinel-down-after", str(args.down_after_ms),
                        "--sentinel-failover-timeout", str(args.failover_timeout_ms),
                        "--sentinel-debug", "info-period=500", "--sentinel-debug", "publish-period=100"] \
                    if scenario == "sentinel" else ["--redis-cluster", "--cluster-node-timeout", str(args.node_timeout_ms)]
                inner_command = [sys.executable, os.path.abspath(__file__), "--inside", scenario, "--durability", durability,
                                 "--kills", str(args.kills), "--concurrency", str(args.concurrency),
                                 "--duration", str(args.duration or int(args.kills * (7 if scenario == "sentinel" else 5) + 6)),
                                 "--run-timeout", str(args.run_timeout), "--stall-ms", str(args.stall_ms)]
                if args.keep:
                    inner_command += ["--logs", os.path.join(workdir, f"{scenario}-{durability}")]
                command = ["setsid", "timeout", "--signal=TERM", "--kill-after=20", str(args.run_timeout + 40),
                           os.path.join(ROOT, "deploy", "local-cluster.sh"), "--nodes", "3", "--build", build,
                           "--config", configs[durability], "--log-level", "warning", *mode, "--", *inner_command]
                env = dict(os.environ, FAULTS_CONFIG=configs[durability], FAULTS_LOADTEST=os.path.join(build, "deviceauth-loadtest"))
                log(f"--- {name}")
                out_path = os.path.join(workdir, f"{scenario}-{durability}.out")
                run_began = time.time()
                with open(out_path, "w") as out:
                    CURRENT["process"] = subprocess.Popen(command, stdout=out, env=env, cwd=ROOT)
                    rc = CURRENT["process"].wait()
                    CURRENT["process"] = None
                try:
                    text = open(out_path, errors="replace").read()
                except OSError as error:   # the work folder removed under the run
                    text = f"(output unreadable: {error})"
                verdicts = [line[len(VERDICT):] for line in text.splitlines() if line.startswith(VERDICT)]
                if verdicts:
                    line = verdicts[-1]
                else:
                    line = f"FAIL {name}: no verdict (exit {rc}: timed out or crashed) | time_s={time.time() - run_began:.0f}"
                if line.startswith("FAIL") or (rc != 0 and not line.startswith("FAIL")):
                    if not line.startswith("FAIL"):
                        line = "FAIL" + line[line.index(" "):] + f" | exit {rc}"
                    failed.append(name)
                print(line, flush=True)
                lines.append(line)
    finally:
        stop_group(CURRENT["process"])
        if args.keep:
            log(f"logs and reports kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    log(f"{len(lines)} run(s) in {time.time() - began:.0f} s" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------
# The inner process (inside deploy/local-cluster.sh): the kills, the harness, the verdict

def inner(args):
    sys.path.insert(0, HERE)
    sys.dont_write_bytecode = True   # no __pycache__ next to the tests
    import faults  # noqa: E402  (reads local-cluster.sh's environment when imported)
    run = FailoverRun(faults, args)

    def on_signal(signum, _frame):
        run.stop_children()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        run.run()
    except Exception as error:  # a crash of the test itself is a failure, with its reason
        import traceback
        traceback.print_exc()
        run.fail(f"{type(error).__name__}: {error}")
    finally:
        run.stop_children()
        if args.logs:
            run.copy_logs(args.logs)
    print(VERDICT + run.verdict(), flush=True)
    # Non-zero on FAIL, so local-cluster.sh keeps its folder (Redis, sentinel and node logs, the reports).
    return 1 if run.failures else 0


CRC16_TABLE = []
for _byte in range(256):
    _crc = _byte << 8
    for _ in range(8):
        _crc = ((_crc << 1) ^ 0x1021) if _crc & 0x8000 else (_crc << 1)
    CRC16_TABLE.append(_crc & 0xFFFF)


def key_slot(tag):
    """The Redis Cluster hash slot of a key whose hash tag is `tag` (CRC16/XMODEM mod 16384)."""
    crc = 0
    for byte in tag.encode():
        crc = ((crc << 8) & 0xFFFF) ^ CRC16_TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc % 16384


# One slot of each shard as redis-cli --cluster create assigns them (0-5460, 5461-10922, 10923-16383).
SHARD_SLOTS = [0, 5461, 10923]


def shard_of_slot(slot):
    return 0 if slot <= 5460 else 1 if slot <= 10922 else 2


class StepFailed(Exception):
    pass


class FailoverRun:
    def __init__(self, faults, args):
        self.f = faults
        self.args = args
        self.scenario = args.inside
        self.durability = args.durability
        self.name = f"{self.scenario} durability-{self.durability}"
        self.failures = []
        self.notes = []
        self.figures = {}
        self.began = time.time()
        self.deadline = self.began + args.run_timeout
        self.nodes = faults.NODES
        self.cluster_dir = faults.CLUSTER_DIR
        self.ports = [p for p in os.environ.get("REDIS_PORTS", "").split(",") if p]
        self.sentinels = [p for p in os.environ.get("SENTINEL_PORTS", "").split(",") if p]
        self.master_name = os.environ.get("SENTINEL_MASTER", "deviceauth")
        config = faults.CONFIG
        self.secret = (config.get("secret") or "").encode()
        self.prefix = config.get("key_prefix", "da")
        self.redis_children = {}    # port -> Popen of a restarted redis-server
        self.harness = None         # the harness run going on: dict(process, report, command, started, ends)
        self.segments = []          # finished harness runs: dict(report, rc, command, failed_invariants)
        self.kills = []             # per kill: dict of figures
        self.markers = []           # marker devices redeemed before a kill
        self.pending_marker = None
        self.stalled = set()        # pids of replicas stopped with SIGSTOP (continued on any exit)
        self.uncounted = 0          # kills whose recovery was not under load

    # -- bookkeeping --------------------------------------------------------------------------

    def fail(self, reason):
        self.failures.append(reason)
        log("FAIL: " + reason)

    def note(self, reason):
        self.notes.append(reason)
        log("note: " + reason)

    def stop_children(self):
        for pid in list(self.stalled):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        if self.harness and self.harness["process"].poll() is None:
            try:
                self.harness["process"].send_signal(signal.SIGINT)
                self.harness["process"].wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                self.harness["process"].kill()
        # Restarted redis-servers are left to local-cluster.sh (it stops every data node by its
        # pidfile, sentinels first); reap the ones already dead.
        for process in self.redis_children.values():
            process.poll()

    def copy_logs(self, target):
        """--keep: the nodes', Redis's and the sentinels' logs and the harness's reports and output."""
        import glob
        os.makedirs(target, exist_ok=True)
        for pattern in ("node-*.log", "redis-*.log", "sentinel-*.log", "failover-*.json", "failover-harness-*.out", "cluster-*/nodes.conf"):
            for path in glob.glob(os.path.join(self.cluster_dir, pattern)):
                name = path[len(self.cluster_dir) + 1:].replace("/", "-")
                shutil.copy(path, os.path.join(target, name))

    def time_left(self):
        return self.deadline - time.time()

    def wait_until(self, predicate, timeout, what, step=0.1):
        """Waits for `predicate`, at most `timeout` seconds (and never past the run's deadline)."""
        began = time.time()
        limit = min(began + timeout, self.deadline)
        while time.time() < limit:
            if predicate():
                return time.time() - began
            time.sleep(step)
        if predicate():
            return time.time() - began
        raise StepFailed(f"{what} not within {min(timeout, max(0, limit - began)):.0f} s")

    # -- Redis --------------------------------------------------------------------------------

    def cli(self, port, *args, timeout=3):
        try:
            result = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return ""
        return result.stdout.strip()

    def role(self, port):
        return (self.cli(port, "role").splitlines() or [""])[0]

    def replication(self, port):
        """INFO replication as a dict; the replicas under 'replicas' as a list of dicts."""
        info = {"replicas": []}
        for line in self.cli(port, "info", "replication").splitlines():
            if ":" not in line:
                continue
            name, value = line.strip().split(":", 1)
            if name.startswith("slave") and name[5:].isdigit():
                info["replicas"].append(dict(part.split("=", 1) for part in value.split(",") if "=" in part))
            else:
                info[name] = value
        return info

    def pid_of(self, port):
        try:
            return int(open(os.path.join(self.cluster_dir, f"redis-{port}.pid")).read().strip())
        except (OSError, ValueError):
            return None

    def caught_up(self, primary, replica_ports):
        """The primary lists every port of `replica_ports` online, each at least at the primary's offset
        read first (so each has everything the primary had then)."""
        info = self.replication(primary)
        if info.get("role") != "master" or not info.get("master_repl_offset", "").isdigit():
            return False
        target = int(info["master_repl_offset"])
        deadline = time.time() + 5
        while time.time() < deadline:
            replicas = {r.get("port"): r for r in self.replication(primary)["replicas"]}
            if all(replicas.get(str(p), {}).get("state") == "online" for p in replica_ports) and \
               all(int(replicas[str(p)].get("offset", "-1")) >= target for p in replica_ports):
                return True
            if any(replicas.get(str(p), {}).get("state") != "online" for p in replica_ports):
                return False
            time.sleep(0.05)
        return False

    def restart(self, port):
        """Starts the killed redis-server again with local-cluster.sh's command line for it."""
        old = self.redis_children.get(port)
        if old is not None:
            old.poll()
        script = os.path.join(self.cluster_dir, f"redis-start-{port}.sh")
        self.redis_children[port] = subprocess.Popen(["bash", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def sigkill(self, port):
        pid = self.pid_of(port)
        if pid is None or not self.f.alive(pid):
            raise StepFailed(f"no live redis-server pid for port {port}")
        os.kill(pid, signal.SIGKILL)
        killed = time.time()
        child = self.redis_children.get(port)

        def gone():
            if child is not None:
                child.poll()   # reaps a redis-server this script restarted (a zombie counts as dead anyway)
            return not self.f.alive(pid)

        self.wait_until(gone, 5, f"redis-server {pid} to die", step=0.02)
        return killed

    def all_ready(self):
        return all(self.f.curl(node + "/readyz", timeout=3).status == 200 for node in self.nodes)

    # -- Sentinel -----------------------------------------------------------------------------

    def sentinel_names(self):
        names = []
        for port in self.sentinels:
            answer = self.cli(port, "sentinel", "get-master-addr-by-name", self.master_name, timeout=2).splitlines()
            names.append(answer[1] if len(answer) == 2 else None)
        return names

    def sentinel_replicas(self, port):
        lines = self.cli(port, "--raw", "sentinel", "replicas", self.master_name, timeout=2).splitlines()
        replicas, current = [], None
        for name, value in zip(lines[0::2], lines[1::2]):
            if name == "name":
                current = {}
                replicas.append(current)
            if current is not None:
                current[name] = value
        return replicas

    def sentinels_settled(self, primary):
        """Every sentinel names `primary` and sees two replicas, linked and not down (so the next kill can fail over)."""
        if any(name != primary for name in self.sentinel_names()):
            return False
        for port in self.sentinels:
            good = [r for r in self.sentinel_replicas(port)
                    if r.get("flags") == "slave" and r.get("master-link-status") == "ok" and r.get("master-port") == primary]
            if len(good) != 2:
                return False
        return True

    def sentinel_cycle(self, index):
        names = self.sentinel_names()
        victim = names[0]
        if victim is None or any(name != victim for name in names) or self.role(victim) != "master":
            raise StepFailed(f"kill {index + 1}: the sentinels do not agree on a primary ({names}, ROLE {self.role(victim) if victim else '-'})")
        log(f"kill {index + 1}: SIGKILL primary {victim}" + (f" ({self.args.stall_ms} ms after stalling its replicas)" if self.args.stall_ms else ""))
        killed = self.kill_primary(index, victim, [p for p in self.ports if p != victim])
        figures = {"victim": victim}
        seen = {}

        def promoted():
            names = self.sentinel_names()
            new = next((n for n in names if n and n != victim), None)
            if new and "switch_s" not in figures:
                figures["switch_s"] = round(time.time() - killed, 2)   # the first sentinel naming another primary
            # All three, before the killed node comes back: it restarts as an empty primary (its own
            # arguments), and a sentinel still naming its address would hand the API nodes an empty
            # primary that passes their ROLE check.
            if new and all(name == new for name in names) and self.role(new) == "master":
                seen["new"] = new
                return True
            return False

        self.wait_until(promoted, 40, f"kill {index + 1}: a replica promoted, named by every sentinel", step=0.05)
        new = seen["new"]
        figures["promoted"] = new
        self.wait_until(self.all_ready, 30, f"kill {index + 1}: /readyz on every API node after the switch to {new}", step=0.1)
        figures["ready_s"] = round(time.time() - killed, 2)
        self.prepare_marker(new)
        self.restart(victim)
        replicas = [p for p in self.ports if p != new]   # the restarted victim and the other replica
        try:
            self.wait_until(lambda: self.caught_up(new, replicas), 40,
                            f"kill {index + 1}: the restarted {victim} and the other replica online on {new} and caught up", step=0.1)
        except StepFailed as error:
            state = {port: self.replication(port) for port in self.ports}
            raise StepFailed(f"{error} (INFO replication: {state})")
        self.wait_until(lambda: self.sentinels_settled(new), 30, f"kill {index + 1}: every sentinel naming {new} with two linked replicas")
        figures["synced_s"] = round(time.time() - killed, 2)
        return figures

    # -- Cluster ------------------------------------------------------------------------------

    def cluster_nodes(self, port):
        """CLUSTER NODES of the node on `port`: port -> dict(id, flags, master, slots, link)."""
        table = {}
        for line in self.cli(port, "cluster", "nodes").splitlines():
            parts = line.split()
            if len(parts) < 8:
                continue
            address = parts[1].split("@")[0]
            table[address.rsplit(":", 1)[-1]] = {"id": parts[0], "flags": set(parts[2].split(",")), "master": parts[3],
                                                 "link": parts[7], "slots": parts[8:]}
        return table

    @staticmethod
    def owns(slots, slot):
        for item in slots:
            if item.startswith("["):
                continue
            low, _, high = item.partition("-")
            if int(low) <= slot <= int(high or low):
                return True
        return False

    def shard_primary(self, shard, asking):
        """The port of the primary that serves `shard` (by the first node of `asking` that answers)."""
        for port in asking:
            table = self.cluster_nodes(port)
            for node_port, node in table.items():
                if "master" in node["flags"] and "fail" not in node["flags"] and self.owns(node["slots"], SHARD_SLOTS[shard]):
                    return node_port, table
        return None, {}

    def cluster_ok(self, ports):
        for port in ports:
            if "cluster_state:ok" not in self.cli(port, "cluster", "info"):
                return False
        return True

    def cluster_healthy(self):
        """Every node: cluster_state:ok, six nodes none flagged failing, three primaries each with a
        connected replica."""
        for port in self.ports:
            table = self.cluster_nodes(port)
            if len(table) != 6 or any(flag in node["flags"] for node in table.values() for flag in ("fail", "fail?", "handshake", "noaddr")):
                return False
            primaries = [node for node in table.values() if "master" in node["flags"]]
            if len(primaries) != 3:
                return False
            for primary in primaries:
                if not any(node["master"] == primary["id"] and node["link"] == "connected" for node in table.values()):
                    return False
        return self.cluster_ok(self.ports)

    def cluster_cycle(self, index):
        shard = index % 3
        victim, table = self.shard_primary(shard, self.ports)
        if victim is None:
            raise StepFailed(f"kill {index + 1}: no primary found for shard {shard}")
        replica = next((p for p, node in table.items() if node["master"] == table[victim]["id"]), None)
        if replica is None:
            raise StepFailed(f"kill {index + 1}: the primary {victim} of shard {shard} has no replica")
        survivors = [p for p in self.ports if p != victim]
        log(f"kill {index + 1}: SIGKILL primary {victim} of shard {shard} (replica {replica})"
            + (f" {self.args.stall_ms} ms after stalling the replica" if self.args.stall_ms else ""))
        killed = self.kill_primary(index, victim, [replica])
        figures = {"victim": victim, "shard": shard}

        def promoted():
            new, _ = self.shard_primary(shard, survivors)
            return new == replica and self.cluster_ok(survivors)

        self.wait_until(promoted, 40, f"kill {index + 1}: {replica} promoted for shard {shard} and cluster_state:ok", step=0.05)
        figures["promoted"] = replica
        figures["switch_s"] = round(time.time() - killed, 2)
        self.wait_until(self.all_ready, 30, f"kill {index + 1}: /readyz on every API node after the promotion of {replica}", step=0.1)
        figures["ready_s"] = round(time.time() - killed, 2)
        self.prepare_marker(replica)
        self.restart(victim)

        def rejoined():
            info = self.replication(victim)
            return info.get("role") == "slave" and info.get("master_port") == replica and info.get("master_link_status") == "up"

        self.wait_until(rejoined, 40, f"kill {index + 1}: the restarted {victim} a replica of {replica} with its link up")
        self.wait_until(lambda: self.caught_up(replica, [victim]), 30, f"kill {index + 1}: {victim} caught up with {replica}")
        self.wait_until(self.cluster_healthy, 30, f"kill {index + 1}: every node seeing 3 primaries with a replica each, nothing failing")
        figures["synced_s"] = round(time.time() - killed, 2)
        return figures

    def serving(self, slot):
        """The port of the primary serving `slot` now (cluster), or the primary (sentinel)."""
        if self.scenario == "sentinel":
            names = self.sentinel_names()
            return names[0]
        for port in self.ports:
            for node_port, node in self.cluster_nodes(port).items():
                if "master" in node["flags"] and "fail" not in node["flags"] and self.owns(node["slots"], slot):
                    return node_port
        return None

    # -- Markers: a device redeemed right before each kill, read back from Redis at the end ----------

    def routing_tag(self, user_code):
        """The grant's hash tag: 16 bits of HMAC-SHA256(secret, "u:" + normalized user code), hex."""
        normalized = "".join(ch for ch in user_code.upper() if ch.isalpha())
        return hmac.new(self.secret, ("u:" + normalized).encode(), hashlib.sha256).digest()[:2].hex()

    def record_keys(self, codes):
        """The grant's record key as each known key layout has it (KeySchema): the record id from the
        device code (one record plus a user-code index), or from the user code (one key per grant)."""
        tag = self.routing_tag(codes["user_code"])
        normalized = "".join(ch for ch in codes["user_code"].upper() if ch.isalpha())
        by_device = hmac.new(self.secret, ("d:" + codes["device_code"]).encode(), hashlib.sha256).digest()[:12].hex()
        by_user = hmac.new(self.secret, ("u:" + normalized).encode(), hashlib.sha256).digest()[2:10].hex()
        return [f"{self.prefix}:{{{tag}}}:d:{by_device}", f"{self.prefix}:{{{tag}}}:d:{by_user}"]

    def find_record(self, marker):
        """The marker's record key, the one of `record_keys` that exists on the primary serving it
        (looked up while everything is healthy); None when neither does (a layout this script does
        not know: the marker is then checked through the API only)."""
        primary = self.serving(marker["slot"]) if self.scenario == "cluster" else self.serving(None)
        for key in self.record_keys(marker["codes"]):
            if primary and self.cli(primary, "exists", key) == "1":
                return key
        return None

    def prepare_marker(self, primary):
        """Issues the next marker's code, on the shard whose primary is `primary` (any code in Sentinel mode)."""
        self.pending_marker = None
        for attempt in range(12):
            issued = self.f.issue(self.nodes[attempt % len(self.nodes)])
            if issued.status != 200 or not issued.json:
                continue
            codes = dict(issued.json, issued_at=time.time())
            if self.scenario == "cluster":
                slot = key_slot(self.routing_tag(codes["user_code"]))
                codes["slot"] = slot
                codes["shard"] = shard_of_slot(slot)
                if self.serving(slot) != primary:
                    continue
            self.pending_marker = codes
            return
        self.note(f"no marker code issued on primary {primary}")

    def approve_marker(self, index, victim):
        """Approves the marker code (issued on the shard of `victim`) before the kill; returns the marker."""
        codes = self.pending_marker
        self.pending_marker = None
        if codes is None or time.time() - codes["issued_at"] > codes.get("expires_in", 20) / 2:
            # The first kill, or a code grown old while a harness run was replaced: a fresh one.
            self.prepare_marker(victim)
            codes, self.pending_marker = self.pending_marker, None
            if codes is None:
                return None
        marker = {"kill": index + 1, "device_code": codes["device_code"], "user": f"marker-{self.scenario}-{index + 1}",
                  "slot": codes.get("slot"), "state": "issued", "codes": codes}
        decided = self.f.decide(self.nodes[(index + 1) % len(self.nodes)], codes["user_code"], marker["user"])
        if decided.status == 503 and "Not confirmed" in decided.body:
            marker["state"] = "not confirmed (503)"
            self.markers.append(marker)
            return None
        if decided.status != 200 or "Device connected" not in decided.body:
            self.note(f"marker {index + 1}: approval answered {decided!r}")
            return None
        marker["state"] = "approved"
        marker["key"] = self.find_record(marker)
        self.markers.append(marker)
        return marker

    def redeem_marker(self, marker, index):
        """The marker device's poll: it redeems the approved grant (one poll; never polled again while
        the harness runs, where a second poll would be a replay the harness does not expect)."""
        codes = marker["codes"]
        time.sleep(max(0, codes["issued_at"] + codes.get("interval", 1) + 0.1 - time.time()))
        token = self.f.poll(self.nodes[(index + 2) % len(self.nodes)], codes["device_code"])
        if token.status == 200 and "access_token" in (token.json or {}):
            marker["state"] = "redeemed"
            marker["token"] = token.json["access_token"]
        else:
            marker["state"] = f"token poll answered {token.status} {(token.json or {}).get('error')}"

    def kill_primary(self, index, victim, replicas):
        """The marker approved and redeemed, then SIGKILL of `victim`. With --stall-ms the replicas are
        stopped (SIGSTOP) before the marker's redemption and for that long before the kill, and continued
        (SIGCONT) right after it: the primary then dies with acknowledged writes no replica has."""
        marker = self.approve_marker(index, victim)
        stalled = []
        try:
            if self.args.stall_ms:
                for port in replicas:
                    pid = self.pid_of(port)
                    if pid is not None and self.f.alive(pid):
                        os.kill(pid, signal.SIGSTOP)
                        stalled.append(pid)
                        self.stalled.add(pid)
                stall_began = time.time()
            if marker:
                self.redeem_marker(marker, index)
            if self.args.stall_ms:
                time.sleep(max(0, stall_began + self.args.stall_ms / 1000 - time.time()))
            return self.sigkill(victim)
        finally:
            for pid in stalled:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                self.stalled.discard(pid)

    def check_markers(self):
        """After the harness: every redeemed marker's record must still say redeemed on the primary that
        serves it, and one more poll must be invalid_grant (never a second token)."""
        counts = {"redeemed": 0, "kept": 0, "undone": 0, "second_tokens": 0, "unchecked": 0, "api_only": 0}
        undone = []
        for marker in self.markers:
            if marker["state"] != "redeemed":
                counts["unchecked"] += 1
                continue
            counts["redeemed"] += 1
            key = marker.get("key")
            primary = self.serving(marker["slot"]) if self.scenario == "cluster" else self.serving(None)
            status = (self.cli(primary, "hget", key, "s") if primary else "") if key else None
            again = self.f.poll(self.nodes[0], marker["device_code"])
            # The same token again is a redelivery (a product with a retry window for lost answers
            # resends the kept answer); another token is a second redemption.
            second = again.status == 200 and (again.json or {}).get("access_token") not in (None, marker.get("token"))
            if second:
                counts["second_tokens"] += 1
            if key is None:
                counts["api_only"] += 1
            if (status is None or status == "r") and not second:
                counts["kept"] += 1
            else:
                counts["undone"] += 1
                undone.append(f"kill {marker['kill']}: record s={status or 'missing'}, poll again {again.status} "
                              f"{(again.json or {}).get('error', 'a second token' if second else 'the same token')}")
        self.figures["markers"] = f"{counts['kept']}/{counts['redeemed']} kept"
        self.figures["markers_undone"] = counts["undone"]
        self.figures["markers_second_tokens"] = counts["second_tokens"]
        if counts["unchecked"]:
            self.figures["markers_not_redeemed"] = counts["unchecked"]
        if counts["api_only"]:
            self.figures["markers_without_record_key"] = counts["api_only"]
        return counts, undone

    # -- The harness --------------------------------------------------------------------------

    def start_harness(self, duration):
        number = len(self.segments) + (1 if self.harness else 0) + 1
        report = os.path.join(self.cluster_dir, f"failover-{self.scenario}-{self.durability}-{number}.json")
        output = open(os.path.join(self.cluster_dir, f"failover-harness-{number}.out"), "w")
        command = [self.f.LOADTEST, "http", "--nodes", ",".join(self.nodes), "--duration", str(duration),
                   "--concurrency", str(self.args.concurrency), "--think-time-ms", "200-1200",
                   "--mix", "approve=65,deny=15,abandon=5,misbehave=15", "--fault-tolerant", "--expect-lost-approvals",
                   "--json", report]
        log(f"harness run {number}: {' '.join(command)}")
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        output.close()   # the harness has its own copy
        self.harness = {"process": process, "report": report, "command": command, "started": time.time(),
                        "ends": time.time() + duration, "output": output.name}
        self.figures.setdefault("harness", " ".join(command[1:]))

    def finish_harness(self):
        harness, self.harness = self.harness, None
        if harness is None:
            return
        # After --duration, devices in flight finish: at most a code lifetime (40 s) and the final probes.
        limit = max(10, min(harness["ends"] + 90, self.deadline + 30) - time.time())
        try:
            rc = harness["process"].wait(timeout=limit)
        except subprocess.TimeoutExpired:
            harness["process"].send_signal(signal.SIGINT)
            rc = harness["process"].wait(timeout=20)
            self.fail(f"the harness did not finish within {limit:.0f} s of its duration")
        try:
            report = json.load(open(harness["report"]))
        except (OSError, ValueError) as error:
            tail = open(harness["output"], errors="replace").read()[-600:]
            self.fail(f"harness run {len(self.segments) + 1} (exit {rc}) left no report: {error}; {tail!r}")
            report = {}
        failed = [f"{inv['name']}: {inv['detail']}" for inv in report.get("invariants", []) if not inv.get("passed")]
        self.segments.append({"report": report, "rc": rc, "failed_invariants": failed, "command": harness["command"]})
        log(f"harness run {len(self.segments)} ended (exit {rc}){': ' + '; '.join(failed)[:400] if failed else ''}")

    def ensure_load(self, needed):
        """Makes sure a harness run is going that starts new devices for at least `needed` more seconds;
        otherwise waits for the current one to end and starts another."""
        if self.harness and self.harness["process"].poll() is None and self.harness["ends"] - time.time() >= needed:
            return
        if self.harness:
            log("the harness run is ending before the next kill and its recovery: waiting for it, then another run")
            self.finish_harness()
        remaining = self.args.kills - len(self.kills)
        self.start_harness(max(20, int(remaining * self.cycle_estimate() + 8)))
        time.sleep(2)

    def cycle_estimate(self):
        if not self.kills:
            return 6.0
        return max(k["cycle_s"] for k in self.kills)

    # -- The run ------------------------------------------------------------------------------

    def run(self):
        if len(self.nodes) < 2:
            raise StepFailed("needs the API nodes of local-cluster.sh (NODE_URLS)")
        if self.scenario == "sentinel":
            if len(self.sentinels) != 3 or len(self.ports) != 3:
                raise StepFailed("the sentinel scenario runs under local-cluster.sh --sentinel")
            cycle = self.sentinel_cycle
        else:
            if len(self.ports) != 6:
                raise StepFailed("the cluster scenario runs under local-cluster.sh --redis-cluster")
            cycle = self.cluster_cycle
        self.figures["kills"] = 0
        if self.args.stall_ms:
            self.figures["stall_ms"] = self.args.stall_ms
        self.start_harness(self.args.duration)
        time.sleep(3)
        try:
            index = 0
            # A kill whose recovery outlasted the harness run (a slow machine) is not counted: another
            # one follows under the next run, at most 5 more in all.
            while len(self.kills) < self.args.kills and index < self.args.kills + 5:
                # A kill and its recovery must happen while the harness still starts devices.
                self.ensure_load(needed=self.cycle_estimate() + 2)
                began = time.time()
                figures = cycle(index)
                index += 1
                figures["cycle_s"] = round(time.time() - began, 2)
                log(f"kill {index}: {figures['victim']} -> {figures['promoted']} switch {figures['switch_s']} s, "
                    f"/readyz {figures['ready_s']} s, synced {figures['synced_s']} s")
                if self.harness is None or self.harness["process"].poll() is not None:
                    self.uncounted += 1
                    self.note(f"kill {index} not counted: the harness run had ended before its recovery was done")
                    continue
                self.kills.append(figures)
                self.figures["kills"] = len(self.kills)
        except StepFailed as error:
            self.fail(str(error))
        self.finish_harness()
        counts, undone = self.check_markers()
        self.summarize(counts, undone)

    def log_count(self, *needles):
        """Lines of the API nodes' logs (local-cluster.sh's node-N.log) that contain every needle."""
        import glob
        count = 0
        for path in glob.glob(os.path.join(self.cluster_dir, "node-*.log")):
            with open(path, errors="replace") as file:
                count += sum(1 for line in file if all(needle in line for needle in needles))
        return count

    def metric_sum(self, name, label=None):
        total = 0.0
        for node in self.nodes:
            answer = self.f.curl(node + "/metrics", timeout=10)
            for line in answer.body.splitlines():
                if line.startswith(name) and (label is None or label in line) and line[len(name):len(name) + 1] in (" ", "{"):
                    try:
                        total += float(line.split()[-1])
                    except ValueError:
                        pass
        return int(total)

    def summarize(self, counts, undone):
        reports = [segment["report"] for segment in self.segments if segment["report"]]
        total = {}
        for report in reports:
            for key, value in (report.get("faults") or {}).items():
                if isinstance(value, (int, float)) and key != "max_latency_ms":
                    total[key] = total.get(key, 0) + value
        rows = [row for report in reports for row in report.get("rows", [])]

        def rows_count(endpoint, outcome_prefix):
            return sum(row["count"] for row in rows if row["endpoint"] == endpoint and row["outcome"].startswith(outcome_prefix))

        fig = self.figures
        fig["harness_runs"] = len(self.segments)
        fig["devices"] = sum(int(report.get("settings", {}).get("devices", 0)) for report in reports)
        fig["approvals_confirmed"] = rows_count("POST /device", "200 approve")
        fig["denials_confirmed"] = rows_count("POST /device", "200 deny")
        fig["decision_503s"] = rows_count("POST /device", "503")
        fig["resubmitted_decisions"] = total.get("resubmitted_decisions", 0)
        fig["tokens"] = rows_count("POST /oauth/token", "200")
        fig.update(self.f.harness_figures(total, rows))
        fig["redemptions_forgotten"] = total.get("redemptions_forgotten", 0)
        fig["lost_logins"] = fig["lost_approvals"] + fig["tokens_lost_in_flight"]
        fig["503_answers"] = total.get("unavailable_answers", 0)
        fig["max_latency_ms"] = round(max([row["max_ms"] for row in rows] or [0]), 1)
        fig["shortfalls_decide"] = self.metric_sum("deviceauth_durability_shortfalls_total", 'operation="decide"')
        fig["shortfalls_redeem"] = self.metric_sum("deviceauth_durability_shortfalls_total", 'operation="redeem"')
        if self.durability == "on":
            # Of those, the redemptions whose wait failed outright (the primary died during it): the token
            # went out although no replica may have the redemption (see the note on second tokens).
            fig["redeem_waits_failed"] = self.log_count("operation=redeem", "the wait failed")
        if self.kills:
            fig["switch_s"] = f"{min(k['switch_s'] for k in self.kills)}-{max(k['switch_s'] for k in self.kills)}"
            fig["ready_s"] = f"{min(k['ready_s'] for k in self.kills)}-{max(k['ready_s'] for k in self.kills)}"
            fig["kill_cycle_s"] = f"{min(k['cycle_s'] for k in self.kills)}-{max(k['cycle_s'] for k in self.kills)}"
        if self.scenario == "cluster":
            fig["kills_per_shard"] = "/".join(str(sum(1 for k in self.kills if k["shard"] == s)) for s in range(3))
        if self.uncounted:
            fig["kills_not_counted"] = self.uncounted
        fig["time_s"] = round(time.time() - self.began)

        # What fails either way: the run itself (kills, recovery, harness, 500s, API nodes).
        if len(self.kills) < self.args.kills:
            self.fail(f"{len(self.kills)} of {self.args.kills} kills done")
        if not reports:
            self.fail("no harness report")
        if fig["http_500"]:
            self.fail(f"{fig['http_500']} answers were 500")
        if fig["transport_errors"]:
            self.fail(f"{fig['transport_errors']} transport errors: the API nodes must stay up through a failover")
        dead = [url for url, pid in zip(self.nodes, self.f.NODE_PIDS) if not self.f.alive(pid)]
        if dead:
            self.fail(f"API nodes died: {dead}")
        harness_failed = [item for segment in self.segments for item in segment["failed_invariants"]]
        if self.durability == "on":
            for key, what in (("lost_approvals", "approvals lost"), ("lost_denials", "denials lost"),
                              ("second_tokens", "second tokens for a redeemed code (double redemptions; "
                                                f"{fig.get('redeem_waits_failed', 0)} redemption(s) handed out their token after a failed wait)"),
                              ("tokens_lost_in_flight", "lost logins (a redeeming poll's answer lost, the next poll 'already used')"),
                              ("redemptions_forgotten", "redemptions undone (the probe after the run found the grant pending)")):
                if fig[key]:
                    self.fail(f"{fig[key]} {what}")
            if counts["undone"]:
                self.fail(f"{counts['undone']} marker redemption(s) undone in Redis: {'; '.join(undone)[:400]}")
            if harness_failed:
                self.fail("harness invariants failed: " + "; ".join(harness_failed)[:800])
            if any(segment["rc"] != 0 for segment in self.segments) and not harness_failed:
                self.fail(f"the harness exited {[segment['rc'] for segment in self.segments]}")
        else:
            if harness_failed:
                fig["harness_invariants_failed"] = len(harness_failed)
                self.note("harness invariants failed (durability off: reported, not failed): " + "; ".join(harness_failed)[:800])
            if undone:
                self.note("marker redemptions undone: " + "; ".join(undone)[:400])

    def verdict(self):
        figures = " ".join(f"{key}={value}" for key, value in self.figures.items() if key != "harness")
        if self.failures:
            return f"FAIL {self.name}: {'; '.join(self.failures)[:1500]} | {figures}"
        word = "PASS" if self.durability == "on" else "REPORT"
        return f"{word} {self.name}: {figures}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", help="the folder of deviceauth-server and deviceauth-loadtest (default FAILOVER_BUILD_DIR or .build/debug)")
    parser.add_argument("--scenarios", default="sentinel,cluster")
    parser.add_argument("--durability", default="on,off", help="on, off or on,off (each scenario runs once per value)")
    parser.add_argument("--replicas", type=int, default=1, help="durability.replicas of the durability-on runs (1; 2 = every replica of a Sentinel primary)")
    parser.add_argument("--kills", type=int, default=10, help="primary kills per run (at least 10 for issue #16)")
    parser.add_argument("--concurrency", type=int, default=40, help="harness devices in flight")
    parser.add_argument("--duration", type=int, default=0, help="harness --duration of a run's first harness run (default from --kills)")
    parser.add_argument("--down-after-ms", type=int, default=2000, help="sentinel down-after-milliseconds")
    parser.add_argument("--failover-timeout-ms", type=int, default=2500, help="sentinel failover-timeout (a new failover waits twice that)")
    parser.add_argument("--node-timeout-ms", type=int, default=1000, help="cluster-node-timeout")
    parser.add_argument("--stall-ms", type=int, default=0,
                        help="before each kill, stop (SIGSTOP) the replicas for this long, the marker redeemed meanwhile, and "
                             "continue them after the kill: a kill with acknowledged writes no replica has (default 0: plain kills)")
    parser.add_argument("--run-timeout", type=int, default=150, help="seconds one run may take before it is stopped")
    parser.add_argument("--keep", action="store_true", help="keep the configs, the runs' output and a copy of their logs and reports")
    parser.add_argument("--logs", help=argparse.SUPPRESS)
    parser.add_argument("--inside", choices=["sentinel", "cluster"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    global REPLICAS
    REPLICAS = args.replicas
    if args.inside:
        return inner(args)
    return outer(args)


if __name__ == "__main__":
    sys.exit(main())
