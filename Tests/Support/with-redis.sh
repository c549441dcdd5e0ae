#!/usr/bin/env bash
# Starts a private redis-server (loopback TCP on a free port, plus a Unix socket, in a temp
# folder), exports REDIS_URL / REDIS_SOCKET_URL / REDIS_PORT and an ACL test user, runs the given
# command, and stops the server afterwards, also when the command fails or is interrupted.
# REDIS_SERVER_BIN picks another server binary speaking the same protocol and flags (default
# redis-server; `make test-valkey` passes valkey-server). redis-cli drives either.
set -euo pipefail
server="${REDIS_SERVER_BIN:-redis-server}"

dir=$(mktemp -d /tmp/deviceauth-test-redis.XXXXXX)
port=$(python3 "$(dirname "${BASH_SOURCE[0]}")/free-port.py")
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

"$server" --bind 127.0.0.1 --port "$port" --unixsocket "$dir/redis.sock" --unixsocketperm 700 \
  --dir "$dir" --save "" --appendonly no --enable-debug-command local --daemonize no \
  --logfile "$dir/redis.log" &
pid=$!
for _ in $(seq 100); do
  redis-cli -p "$port" ping >/dev/null 2>&1 && break
  sleep 0.05
done
redis-cli -p "$port" ping >/dev/null
redis-cli -p "$port" ACL SETUSER deviceauth-test on '>test-secret' '~*' '&*' +@all >/dev/null

export REDIS_URL="redis://127.0.0.1:$port/0"
export REDIS_SOCKET_URL="unix://$dir/redis.sock"
export REDIS_PORT="$port"
export REDIS_ACL_USER="deviceauth-test"
export REDIS_ACL_PASSWORD="test-secret"
echo "with-redis: $("$server" --version | awk '{print $1, $3}') on 127.0.0.1:$port and $dir/redis.sock"
"$@"
