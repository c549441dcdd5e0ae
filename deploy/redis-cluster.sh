#!/usr/bin/env bash
# A local Redis Cluster for development and tests: 3 primaries and 3 replicas of Debian's
# redis-server on 127.0.0.1, ports P … P+5 (cluster bus P+10000 … P+10005), data in a folder.
#
#   deploy/redis-cluster.sh start [--base-port P] [--dir D] [--node-timeout MS]
#   deploy/redis-cluster.sh stop  [--dir D]
#
# `start` waits until every node reports cluster_state:ok with all 16384 slots covered, then
# prints the seed URL (redis+cluster://127.0.0.1:P,…) on standard output. The folder defaults to
# a new temporary one (printed on standard error); `stop` needs the same --dir. Nothing is
# persisted (no RDB, no AOF): it is a throw-away cluster. Defaults: P=30000, node timeout 2000 ms.
set -euo pipefail

action="${1:-}"
[ $# -gt 0 ] && shift
base_port=30000
dir=""
node_timeout=2000
while [ $# -gt 0 ]; do
  case "$1" in
    --base-port) base_port="$2"; shift 2 ;;
    --dir) dir="$2"; shift 2 ;;
    --node-timeout) node_timeout="$2"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "redis-cluster: unknown argument $1" >&2; exit 2 ;;
  esac
done

log() { echo "redis-cluster: $*" >&2; }

stop_cluster() {
  [ -n "$dir" ] && [ -d "$dir" ] || { log "stop needs --dir of a started cluster"; return 2; }
  local pids=()
  for pidfile in "$dir"/*/redis.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill -0 "$pid" 2>/dev/null && { kill "$pid" 2>/dev/null || true; pids+=("$pid"); }
  done
  for _ in $(seq 50); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  # Fallback: a node that ignored SIGTERM (or is stuck) is killed outright.
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
}

case "$action" in
  start)
    command -v redis-server >/dev/null || { log "redis-server is not installed (apt-get install redis-server redis-tools)"; exit 2; }
    if [ -z "$dir" ]; then dir=$(mktemp -d /tmp/deviceauth-redis-cluster.XXXXXX); fi
    mkdir -p "$dir"
    log "data and logs in $dir"
    ports=()
    for i in 0 1 2 3 4 5; do
      port=$((base_port + i))
      ports+=("$port")
      mkdir -p "$dir/$port"
      redis-server --bind 127.0.0.1 --port "$port" --dir "$dir/$port" \
        --cluster-enabled yes --cluster-config-file "$dir/$port/nodes.conf" \
        --cluster-node-timeout "$node_timeout" --save "" --appendonly no \
        --pidfile "$dir/$port/redis.pid" --logfile "$dir/$port/redis.log" --daemonize yes \
        --enable-debug-command local >/dev/null
    done
    for port in "${ports[@]}"; do
      for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
      redis-cli -p "$port" ping >/dev/null || { log "node $port did not start (see $dir/$port/redis.log)"; stop_cluster; exit 1; }
    done
    nodes=()
    for port in "${ports[@]}"; do nodes+=("127.0.0.1:$port"); done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 \
      || { log "cluster create failed:"; cat "$dir/create.log" >&2; stop_cluster; exit 1; }
    for _ in $(seq 300); do
      ready=1
      for port in "${ports[@]}"; do
        info=$(redis-cli -p "$port" cluster info 2>/dev/null || true)
        echo "$info" | grep -q '^cluster_state:ok' || ready=0
        echo "$info" | grep -q '^cluster_slots_ok:16384' || ready=0
        echo "$info" | grep -q '^cluster_known_nodes:6' || ready=0
      done
      # Replicas must have finished their first sync, or a failover test could lose everything.
      for port in "${ports[@]}"; do
        role=$(redis-cli -p "$port" role 2>/dev/null | head -1)
        if [ "$role" = slave ]; then
          redis-cli -p "$port" info replication | grep -q 'master_link_status:up' || ready=0
        fi
      done
      [ "$ready" = 1 ] && break
      sleep 0.1
    done
    [ "$ready" = 1 ] || { log "cluster did not become ready"; stop_cluster; exit 1; }
    log "ready: 3 primaries and 3 replicas on ports ${ports[0]}-${ports[5]}"
    echo "redis+cluster://127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
    ;;
  stop)
    stop_cluster
    ;;
  *)
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
