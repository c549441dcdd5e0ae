#!/usr/bin/env bash
# Starts a private 3-primary, 3-replica Redis Cluster (deploy/redis-cluster.sh) on free loopback
# ports, exports REDIS_CLUSTER_URL, REDIS_CLUSTER_PORTS (the six node ports, comma-separated) and
# REDIS_CLUSTER_DIR, runs the given command, and always stops the cluster afterwards: on success,
# failure, Ctrl-C or SIGTERM (SIGKILL for nodes that do not stop).
#
#   Tests/Support/with-redis-cluster.sh [--node-timeout MS] COMMAND ARGS…
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
node_timeout=1000
if [ "${1:-}" = "--node-timeout" ]; then node_timeout="$2"; shift 2; fi

# Six consecutive free ports whose cluster-bus ports (+10000) are free too.
base=$(python3 "$root/Tests/Support/free-port.py" 6 10000)
dir=$(mktemp -d /tmp/deviceauth-test-cluster.XXXXXX)
cleanup() {
  "$root/deploy/redis-cluster.sh" stop --dir "$dir" || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

url=$("$root/deploy/redis-cluster.sh" start --base-port "$base" --dir "$dir" --node-timeout "$node_timeout")
export REDIS_CLUSTER_URL="$url"
export REDIS_CLUSTER_PORTS="$(seq -s, "$base" $((base + 5)))"
export REDIS_CLUSTER_DIR="$dir"
echo "with-redis-cluster: redis-server $(redis-server --version | awk '{print $3}') cluster at $url"
"$@"
