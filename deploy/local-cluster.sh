#!/usr/bin/env bash
# Starts one redis-server and K deviceauth-server nodes on loopback ports, waits until every node
# answers /readyz, prints their URLs, and stops everything on exit, Ctrl-C or SIGTERM.
#
#   deploy/local-cluster.sh [--nodes K] [--build DIR] [--config FILE] [--base-port P] [--redis-port P]
#                           [--signing-key PEM] [--log-level LEVEL] [--redis-arg ARG]…
#                           [--sentinel [--sentinel-down-after MS] [--sentinel-failover-timeout MS]
#                                       [--sentinel-debug PARAM=VALUE]…]
#                           [--redis-cluster [--cluster-node-timeout MS]] [-- COMMAND ARGS…]
#
# Without a command it keeps the cluster up until interrupted. With one, it runs the command with
# NODE_URLS (comma-separated) and REDIS_URL exported, tears the cluster down and exits with the
# command's status. Logs go to a temporary folder that is printed (and kept when something fails).
# --redis-arg passes one more argument to redis-server (repeatable: --redis-arg --appendonly --redis-arg yes).
# --redis-server PATH: the server binary (or a wrapper that execs one) for the single Redis (default redis-server).
# For fault tests the command also gets CLUSTER_DIR (Redis's dir, logs), REDIS_PORT, REDIS_PIDFILE,
# REDIS_START (a script that starts Redis again with the same arguments, in the foreground) and
# NODE_PIDS (comma-separated, in NODE_URLS order). A Redis restarted that way is stopped on exit too.
# --sentinel: a primary (on --redis-port; --redis-arg applies to it and the replicas), two replicas
# and three redis-sentinel processes (master name deviceauth, quorum 2, down-after 2 s, failover
# timeout 5 s; --sentinel-down-after / --sentinel-failover-timeout change those, and each
# --sentinel-debug PARAM=VALUE is a SENTINEL DEBUG setting, Redis >= 7.0: e.g. info-period=1000 and
# publish-period=500 make a restarted data node a replica of the new primary within about 2 s
# instead of 8-10); the nodes get REDIS_URL=redis+sentinel://…/deviceauth. It also exports
# SENTINEL_PORTS, SENTINEL_MASTER, REDIS_PORTS and REDIS_PIDFILES (first primary first, comma-
# separated; REDIS_PORT, REDIS_PIDFILE and REDIS_START are the first primary's; every data node
# has its own start script, CLUSTER_DIR/redis-start-PORT.sh). All stop on exit.
# --redis-cluster: a Redis Cluster of 3 primaries and 3 replicas (cluster node timeout 1 s, or
# --cluster-node-timeout; --redis-arg applies to every node), each node with its own folder
# (CLUSTER_DIR/cluster-PORT, holding nodes.conf), pidfile CLUSTER_DIR/redis-PORT.pid and start script
# CLUSTER_DIR/redis-start-PORT.sh (a node restarted with it rejoins as what the cluster makes it);
# the nodes get REDIS_URL=redis+cluster://… (the three first primaries as seeds). It exports
# REDIS_PORTS and REDIS_PIDFILES (the six nodes, the three first primaries first) and
# REDIS_CLUSTER_PORTS (the same ports); REDIS_PORT, REDIS_PIDFILE and REDIS_START are the first node's.
set -euo pipefail

nodes=3
build=.build/debug
config="$(cd "$(dirname "$0")" && pwd)/loadtest-config.json"
base_port=""
redis_port=""
signing_key=""
log_level=warning
command=()

redis_args=()
redis_server=redis-server
sentinel=""
sentinel_master=deviceauth
sentinel_down_after=2000
sentinel_failover_timeout=5000
sentinel_debug=()
redis_cluster=""
cluster_node_timeout=1000

usage() { sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) nodes="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --base-port) base_port="$2"; shift 2 ;;
    --redis-port) redis_port="$2"; shift 2 ;;
    --signing-key) signing_key="$2"; shift 2 ;;
    --log-level) log_level="$2"; shift 2 ;;
    --redis-arg) redis_args+=("$2"); shift 2 ;;
    --redis-server) redis_server="$2"; shift 2 ;;
    --sentinel) sentinel=1; shift ;;
    --sentinel-down-after) sentinel_down_after="$2"; shift 2 ;;
    --sentinel-failover-timeout) sentinel_failover_timeout="$2"; shift 2 ;;
    --sentinel-debug) sentinel_debug+=("$2"); shift 2 ;;
    --redis-cluster) redis_cluster=1; shift ;;
    --cluster-node-timeout) cluster_node_timeout="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; command=("$@"); break ;;
    *) echo "local-cluster: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

server="$build/deviceauth-server"
[ -x "$server" ] || { echo "local-cluster: $server not found; build it first (swift build --product deviceauth-server)" >&2; exit 2; }
command -v redis-server >/dev/null || { echo "local-cluster: redis-server not installed (apt-get install redis-server)" >&2; exit 2; }
[ -z "$sentinel" ] || command -v redis-sentinel >/dev/null || { echo "local-cluster: redis-sentinel not installed (apt-get install redis-sentinel)" >&2; exit 2; }
[ -f "$config" ] || { echo "local-cluster: config $config not found" >&2; exit 2; }
[[ "$nodes" =~ ^[1-9][0-9]*$ ]] || { echo "local-cluster: --nodes must be a positive number" >&2; exit 2; }
[ -z "$sentinel" ] || [ -z "$redis_cluster" ] || { echo "local-cluster: --sentinel and --redis-cluster exclude each other" >&2; exit 2; }
[ -z "$redis_cluster" ] || [ -z "$redis_port" ] || { echo "local-cluster: --redis-port does not apply to --redis-cluster (its six ports are picked free)" >&2; exit 2; }
for value in "$sentinel_down_after" "$sentinel_failover_timeout" "$cluster_node_timeout"; do
  [[ "$value" =~ ^[1-9][0-9]*$ ]] || { echo "local-cluster: a millisecond option must be a positive number, not '$value'" >&2; exit 2; }
done
for value in "${sentinel_debug[@]}"; do
  [[ "$value" =~ ^[a-z-]+=[0-9]+$ ]] || { echo "local-cluster: --sentinel-debug PARAM=VALUE (e.g. info-period=1000), not '$value'" >&2; exit 2; }
done

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Random free ports by default, so several clusters (or test runs) can share the machine. They come
# from 10000-31999, below Linux's ephemeral range (32768-60999), so an outgoing connection of some
# other process cannot hold the port between our check and the bind. Sets $picked_port (no
# subshell, so $taken remembers every port this script handed out).
pick_port() {
  local port
  for _ in $(seq 1 100); do
    port=$((10000 + RANDOM % 22000))
    if port_free "$port" && [[ " ${taken[*]:-} " != *" $port "* ]]; then taken+=("$port"); picked_port="$port"; return 0; fi
  done
  echo "local-cluster: no free port found" >&2; return 1
}
taken=()
workdir="$(mktemp -d "${TMPDIR:-/tmp}/deviceauth-cluster.XXXXXX")"
redis_pid=""
node_pids=()
# Sentinel mode: the data nodes' and the sentinels' ports and pids (the first primary's is not redis_pid).
data_ports=()
data_pids=()
sentinel_ports=()
sentinel_pids=()
sentinel_dir=""
status=0

cleanup() {
  local rc=$?
  if [ "$status" -eq 0 ]; then status=$rc; fi
  trap - EXIT INT TERM
  for pid in "${node_pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  for pid in "${node_pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$redis_pid" ]; then
    # The Redis running now may be a restart (fault tests): its pid is in the pidfile.
    local current=""
    current="$(cat "$workdir/redis.pid" 2>/dev/null || true)"
    timeout 5 redis-cli -h 127.0.0.1 -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
    for pid in "$redis_pid" $current; do
      [ "$pid" = "$redis_pid" ] || [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" =~ ^(redis|valkey)-server$ ]] || continue
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    done
    wait "$redis_pid" 2>/dev/null || true
  fi
  # Sentinel mode: the sentinels first (so they start no failover while the data nodes stop), then
  # every data node, also one a fault test restarted (its pid is in its pidfile).
  local pid port name
  for pid in "${sentinel_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for port in "${data_ports[@]}"; do timeout 5 redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true; done
  for pid in "${sentinel_pids[@]}" "${data_pids[@]}" $(cat "$workdir"/redis-*.pid "$workdir"/sentinel-*.pid 2>/dev/null || true); do
    name="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
    [[ " ${sentinel_pids[*]} ${data_pids[*]} " == *" $pid "* ]] || [ "$name" = "redis-server" ] || [ "$name" = "redis-sentinel" ] || continue
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$sentinel_dir" ]; then cp "$sentinel_dir"/*.conf "$workdir"/ 2>/dev/null || true; rm -rf "$sentinel_dir"; fi
  # Keep the logs only when something failed (not on a clean run or a Ctrl-C / SIGTERM).
  case "$status" in
    0|130|143) rm -rf "$workdir" ;;
    *) echo "local-cluster: logs kept in $workdir" >&2 ;;
  esac
  echo "local-cluster: stopped" >&2
  exit "$status"
}
trap 'cleanup' EXIT
trap 'status=130; exit 130' INT
trap 'status=143; exit 143' TERM

[ -n "$redis_port" ] || { pick_port; redis_port="$picked_port"; }
wait_for_ping() { # $1 = port, $2 = what runs there
  for _ in $(seq 1 100); do redis-cli -h 127.0.0.1 -p "$1" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "local-cluster: $2 on port $1 did not start; see $workdir" >&2; status=1; exit 1
}
if [ -n "$redis_cluster" ]; then
  # Six nodes; each port's cluster bus (port + 10000) must be free too, and stay below the ephemeral
  # range (32768-60999), so the ports come from 10000-22767.
  command -v redis-cli >/dev/null || { echo "local-cluster: redis-cli not installed (apt-get install redis-tools)" >&2; exit 2; }
  for _ in 1 2 3 4 5 6; do
    found=""
    for _ in $(seq 1 200); do
      port=$((10000 + RANDOM % 12768))
      if port_free "$port" && port_free "$((port + 10000))" && [[ " ${taken[*]:-} " != *" $port "* ]] \
         && [[ " ${taken[*]:-} " != *" $((port + 10000)) "* ]]; then
        taken+=("$port" "$((port + 10000))"); data_ports+=("$port"); found=1; break
      fi
    done
    [ -n "$found" ] || { echo "local-cluster: no free port pair (port, port + 10000) found" >&2; status=1; exit 1; }
  done
  redis_port="${data_ports[0]}"
  for port in "${data_ports[@]}"; do
    mkdir -p "$workdir/cluster-$port"
    data_command=(redis-server --bind 127.0.0.1 --port "$port" --dir "$workdir/cluster-$port"
      --cluster-enabled yes --cluster-config-file "$workdir/cluster-$port/nodes.conf" --cluster-node-timeout "$cluster_node_timeout"
      --save '' --appendonly no --maxmemory-policy noeviction --logfile "$workdir/redis-$port.log" --pidfile "$workdir/redis-$port.pid"
      --daemonize no --repl-diskless-sync yes --repl-diskless-sync-delay 0 "${redis_args[@]}")
    { echo '#!/usr/bin/env bash'; printf 'exec'; printf ' %q' "${data_command[@]}"; echo; } >"$workdir/redis-start-$port.sh"
    chmod +x "$workdir/redis-start-$port.sh"
    "${data_command[@]}" &
    data_pids+=($!)
  done
  for port in "${data_ports[@]}"; do wait_for_ping "$port" "redis-server (cluster node)"; done
  cluster_nodes=()
  for port in "${data_ports[@]}"; do cluster_nodes+=("127.0.0.1:$port"); done
  # redis-cli makes the first three primaries and gives each one of the last three as its replica.
  redis-cli --cluster create "${cluster_nodes[@]}" --cluster-replicas 1 --cluster-yes >"$workdir/cluster-create.log" 2>&1 \
    || { echo "local-cluster: redis-cli --cluster create failed; see $workdir/cluster-create.log" >&2; status=1; exit 1; }
  # Settled: every node sees all slots covered by 6 known nodes, and each replica finished its first sync.
  cluster_settled() {
    local port info
    for port in "${data_ports[@]}"; do
      info="$(redis-cli -h 127.0.0.1 -p "$port" cluster info 2>/dev/null || true)"
      [[ "$info" == *"cluster_state:ok"* && "$info" == *"cluster_slots_ok:16384"* && "$info" == *"cluster_known_nodes:6"* ]] || return 1
      if [ "$(redis-cli -h 127.0.0.1 -p "$port" role 2>/dev/null | head -n 1)" = slave ]; then
        redis-cli -h 127.0.0.1 -p "$port" info replication 2>/dev/null | grep -q '^master_link_status:up' || return 1
      fi
    done
    [ "$(for port in "${data_ports[@]}"; do redis-cli -h 127.0.0.1 -p "$port" role 2>/dev/null | head -n 1; done | grep -c '^slave$')" = 3 ]
  }
  for _ in $(seq 1 300); do cluster_settled && break; sleep 0.1; done
  cluster_settled || { echo "local-cluster: the Redis Cluster did not settle (all slots, 6 nodes, 3 synced replicas) in 30 s; see $workdir" >&2; status=1; exit 1; }
  # The primaries first.
  primaries=() replicas=()
  for port in "${data_ports[@]}"; do
    if [ "$(redis-cli -h 127.0.0.1 -p "$port" role | head -n 1)" = master ]; then primaries+=("$port"); else replicas+=("$port"); fi
  done
  data_ports=("${primaries[@]}" "${replicas[@]}")
  redis_port="${data_ports[0]}"
  export REDIS_URL="redis+cluster://127.0.0.1:${primaries[0]},127.0.0.1:${primaries[1]},127.0.0.1:${primaries[2]}"
  REDIS_PORTS="$(IFS=,; echo "${data_ports[*]}")"
  REDIS_CLUSTER_PORTS="$REDIS_PORTS"
  REDIS_PIDFILES="$(printf "$workdir/redis-%s.pid," "${data_ports[@]}")"
  REDIS_PIDFILES="${REDIS_PIDFILES%,}"
  export REDIS_PORTS REDIS_CLUSTER_PORTS REDIS_PIDFILES
elif [ -z "$sentinel" ]; then
  redis_command=("$redis_server" --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no --dir "$workdir"
    --maxmemory-policy noeviction --logfile "$workdir/redis.log" --pidfile "$workdir/redis.pid" --daemonize no "${redis_args[@]}")
  # The same command line, for tests that restart Redis.
  { echo '#!/usr/bin/env bash'; printf 'exec'; printf ' %q' "${redis_command[@]}"; echo; } >"$workdir/redis-start.sh"
  chmod +x "$workdir/redis-start.sh"
  "${redis_command[@]}" &
  redis_pid=$!
  for _ in $(seq 1 100); do redis-cli -h 127.0.0.1 -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-cli -h 127.0.0.1 -p "$redis_port" ping >/dev/null 2>&1 || { echo "local-cluster: redis did not start" >&2; status=1; exit 1; }
  export REDIS_URL="redis://127.0.0.1:$redis_port"
else
  # A primary and two replicas, each with its own pidfile, log and start script (redis-start-PORT.sh).
  data_ports=("$redis_port")
  for _ in 1 2; do pick_port; data_ports+=("$picked_port"); done
  for port in "${data_ports[@]}"; do
    # A replica syncs at once (Redis 7 waits 5 s for more replicas by default).
    data_command=(redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --dir "$workdir"
      --maxmemory-policy noeviction --logfile "$workdir/redis-$port.log" --pidfile "$workdir/redis-$port.pid" --daemonize no
      --repl-diskless-sync yes --repl-diskless-sync-delay 0 "${redis_args[@]}")
    [ "$port" = "$redis_port" ] || data_command+=(--replicaof 127.0.0.1 "$redis_port")
    { echo '#!/usr/bin/env bash'; printf 'exec'; printf ' %q' "${data_command[@]}"; echo; } >"$workdir/redis-start-$port.sh"
    chmod +x "$workdir/redis-start-$port.sh"
    "${data_command[@]}" &
    data_pids+=($!)
    wait_for_ping "$port" redis-server
  done
  # Three sentinels, each with a config file of its own (a sentinel rewrites its file). Down-after
  # 2 s, not 1: a sentinel pings an instance only once min(down-after, 1 s) passed since its last
  # answer, so with 1 s a just promoted primary can count as down before its first ping is
  # answered. Seen once in ten runs: all three sentinels took the new primary for down 1.0 s after
  # the switch and failed over again, and what the first new primary had acknowledged was lost.
  # The config files live on tmpfs when there is one (copied to the workdir on exit): a sentinel
  # fsyncs its file at every epoch and vote of a failover, and when a busy disk holds that fsync
  # for 2 s the sentinel takes it for a clock jump and enters TILT mode (no failover for 30 s).
  if [ -d /dev/shm ] && [ -w /dev/shm ]; then sentinel_dir="$(mktemp -d /dev/shm/deviceauth-sentinel.XXXXXX)"; fi
  conf_dir="${sentinel_dir:-$workdir}"
  for _ in 1 2 3; do pick_port; sentinel_ports+=("$picked_port"); done
  for port in "${sentinel_ports[@]}"; do
    cat >"$conf_dir/sentinel-$port.conf" <<EOF
port $port
bind 127.0.0.1
daemonize no
dir $workdir
pidfile $workdir/sentinel-$port.pid
logfile $workdir/sentinel-$port.log
sentinel resolve-hostnames no
sentinel monitor $sentinel_master 127.0.0.1 $redis_port 2
sentinel down-after-milliseconds $sentinel_master $sentinel_down_after
sentinel failover-timeout $sentinel_master $sentinel_failover_timeout
sentinel parallel-syncs $sentinel_master 1
EOF
    redis-sentinel "$conf_dir/sentinel-$port.conf" &
    sentinel_pids+=($!)
    wait_for_ping "$port" redis-sentinel
    for setting in "${sentinel_debug[@]}"; do
      [ "$(redis-cli -h 127.0.0.1 -p "$port" sentinel debug "${setting%%=*}" "${setting#*=}" 2>&1)" = OK ] \
        || { echo "local-cluster: SENTINEL DEBUG ${setting%%=*} ${setting#*=} refused by the sentinel on $port (Redis >= 7.0 needed)" >&2; status=1; exit 1; }
    done
  done
  # Settled: every sentinel names the primary and sees both replicas linked and the two other
  # sentinels (hello messages go out every 2 s), so a failover can happen.
  settled() {
    local port linked
    for port in "${sentinel_ports[@]}"; do
      [ "$(redis-cli -h 127.0.0.1 -p "$port" sentinel get-master-addr-by-name "$sentinel_master" 2>/dev/null | tail -n 1)" = "$redis_port" ] || return 1
      # --raw prints SENTINEL REPLICAS as name, value, name, value… lines.
      linked="$(redis-cli -h 127.0.0.1 -p "$port" --raw sentinel replicas "$sentinel_master" 2>/dev/null | awk '
        prev == "flags" && $0 == "slave" { slave++ } prev == "master-link-status" && $0 == "ok" { ok++ } { prev = $0 }
        END { print (slave < ok ? slave : ok) + 0 }')"
      [ "$linked" = 2 ] || return 1
      [ "$(redis-cli -h 127.0.0.1 -p "$port" --raw sentinel sentinels "$sentinel_master" 2>/dev/null | grep -c '^runid$')" = 2 ] || return 1
    done
  }
  for _ in $(seq 1 300); do settled && break; sleep 0.1; done
  settled || { echo "local-cluster: the sentinels did not settle (primary, 2 linked replicas, 3 sentinels) in 30 s; see $workdir/sentinel-*.log" >&2; status=1; exit 1; }
  sentinel_list="$(printf '127.0.0.1:%s,' "${sentinel_ports[@]}")"
  export REDIS_URL="redis+sentinel://${sentinel_list%,}/$sentinel_master"
  SENTINEL_PORTS="$(IFS=,; echo "${sentinel_ports[*]}")"
  SENTINEL_MASTER="$sentinel_master"
  REDIS_PORTS="$(IFS=,; echo "${data_ports[*]}")"
  REDIS_PIDFILES="$(printf "$workdir/redis-%s.pid," "${data_ports[@]}")"
  REDIS_PIDFILES="${REDIS_PIDFILES%,}"
  export SENTINEL_PORTS SENTINEL_MASTER REDIS_PORTS REDIS_PIDFILES
fi

if [ -z "$signing_key" ]; then
  signing_key="$workdir/signing-key.pem"
  openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -out "$signing_key"
fi

start_node() { # $1 = node number, $2 = port
  "$server" --host 127.0.0.1 --port "$2" --redis-url "$REDIS_URL" --config "$config" --signing-key "$signing_key" \
    --log-level "$log_level" >"$workdir/node-$1.log" 2>&1 &
  node_pids[$(($1 - 1))]=$!
  urls[$(($1 - 1))]="http://127.0.0.1:$2"
}
urls=()
for i in $(seq 1 "$nodes"); do
  if [ -n "$base_port" ]; then port=$((base_port + i - 1)); else pick_port; port="$picked_port"; fi
  start_node "$i" "$port"
done

for i in "${!urls[@]}"; do
  ready=""
  attempts=0
  while [ -z "$ready" ]; do
    for _ in $(seq 1 150); do
      if curl -fsS -o /dev/null --max-time 1 "${urls[$i]}/readyz" 2>/dev/null; then ready=1; break; fi
      kill -0 "${node_pids[$i]}" 2>/dev/null || break
      sleep 0.2
    done
    [ -n "$ready" ] && break
    # Another process took a randomly picked port between the check and the bind: pick another.
    if [ -z "$base_port" ] && [ "$attempts" -lt 3 ] && grep -q "Address already in use" "$workdir/node-$((i + 1)).log" 2>/dev/null; then
      attempts=$((attempts + 1))
      wait "${node_pids[$i]}" 2>/dev/null || true
      pick_port; echo "local-cluster: node $((i + 1)) port ${urls[$i]##*:} was taken; retrying on $picked_port" >&2
      start_node "$((i + 1))" "$picked_port"
      continue
    fi
    echo "local-cluster: node $((i + 1)) (${urls[$i]}) did not become ready; its log:" >&2
    tail -n 20 "$workdir/node-$((i + 1)).log" >&2 || true
    status=1; exit 1
  done
done

NODE_URLS="$(IFS=,; echo "${urls[*]}")"
NODE_PIDS="$(IFS=,; echo "${node_pids[*]}")"
CLUSTER_DIR="$workdir"
REDIS_PORT="$redis_port"
REDIS_PIDFILE="$workdir/redis.pid"
REDIS_START="$workdir/redis-start.sh"
[ -z "$sentinel$redis_cluster" ] || { REDIS_PIDFILE="$workdir/redis-$redis_port.pid"; REDIS_START="$workdir/redis-start-$redis_port.sh"; }
export NODE_URLS NODE_PIDS CLUSTER_DIR REDIS_PORT REDIS_PIDFILE REDIS_START
echo "local-cluster: redis $REDIS_URL, $nodes node(s) ready: $NODE_URLS (logs in $workdir)" >&2

if [ ${#command[@]} -gt 0 ]; then
  set +e
  "${command[@]}"
  status=$?
  set -e
  exit "$status"
fi

echo "NODE_URLS=$NODE_URLS"
echo "REDIS_URL=$REDIS_URL"
echo "local-cluster: press Ctrl-C to stop" >&2
while true; do sleep 1 & wait $! || true; done
