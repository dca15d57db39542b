#!/usr/bin/env bash
# A three-node Ray cluster on this machine, for trying `ray job submit` the way it runs on a
# real cluster: a head and two worker nodes, each its own raylet with its own logical CPUs and
# a custom resource naming it (`head`, `node_a`, `node_b`), all in one temp dir.
#
#   cluster/local_cluster.sh start    start the nodes, wait until all are alive, print the addresses
#   cluster/local_cluster.sh status   nodes and resources (exit 1 when the cluster is not running)
#   cluster/local_cluster.sh stop     stop this cluster's processes and remove its temp dir (idempotent)
#
# Settings (environment):
#   RAYBIRD_CLUSTER_DIR      temp dir of all three nodes (default /tmp/raybird-cluster; keep it
#                            short: Unix socket paths under it are limited to 107 characters)
#   RAYBIRD_GCS_PORT         head port (default 6379)
#   RAYBIRD_DASHBOARD_PORT   dashboard and job API on 127.0.0.1 (default 8265)
#   RAYBIRD_NODE_CPUS        logical CPUs per node (default 1)
#   RAYBIRD_OBJECT_STORE     object store bytes per node (default 200 MB)
#   RAY                      the ray executable (default: .venv/bin/ray of this repo, else ray on PATH)
#
# Token authentication stays on (Ray 2.60 enables it and keeps the token in ~/.ray/auth_token);
# clients such as `ray job submit` need RAY_AUTH_MODE=token.
#
# `stop` does not call `ray stop`: that kills every Ray process on the machine, including other
# users' clusters and embedded Ray sessions. It ends only the processes of this cluster (see
# cluster_pids), SIGTERM first, SIGKILL for what is left after 10 s.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${RAYBIRD_CLUSTER_DIR:-/tmp/raybird-cluster}
GCS_PORT=${RAYBIRD_GCS_PORT:-6379}
DASH_PORT=${RAYBIRD_DASHBOARD_PORT:-8265}
NODE_CPUS=${RAYBIRD_NODE_CPUS:-1}
OBJECT_STORE=${RAYBIRD_OBJECT_STORE:-200000000}
if [ -z "${RAY:-}" ]; then
  if [ -x "$ROOT/.venv/bin/ray" ]; then RAY=$ROOT/.venv/bin/ray; else RAY=$(command -v ray); fi
fi
BIN=$(dirname "$RAY")
PY=$BIN/python
# Job entrypoints (`python jobs/train.py`) resolve `python` on the nodes' PATH: make it the
# interpreter that has Ray and raybird's dependencies.
export PATH="$BIN:$PATH"
export RAY_AUTH_MODE=token
DASHBOARD=http://127.0.0.1:$DASH_PORT

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Alive nodes, or nothing when the cluster does not answer.
alive_nodes() {
  "$PY" - "$DASHBOARD" <<'EOF' 2>/dev/null || true
import sys
from ray.util.state import list_nodes
print(len(list_nodes(address=sys.argv[1], filters=[("state", "=", "ALIVE")], timeout=5)))
EOF
}

# PIDs of this cluster: Ray's processes naming $DIR in their command line (GCS, raylets,
# dashboard, monitors) and all their descendants (workers, agents, job drivers).
cluster_pids() {
  ps -eo pid=,ppid=,args= | DIR="$DIR" SELF=$$ awk '
    { pid = $1; ppid[pid] = $2; $1 = $2 = ""; args[pid] = $0 " " }
    END {
      d = ENVIRON["DIR"]
      for (p in args) if (index(args[p], "/ray/") && (index(args[p], d "/") || index(args[p], d " "))) mark[p] = 1
      do { grew = 0; for (p in ppid) if (!(p in mark) && (ppid[p] in mark)) { mark[p] = 1; grew = 1 } } while (grew)
      for (p in mark) if (p != ENVIRON["SELF"]) print p
    }'
}

start_node() {  # start_node NAME EXTRA_ARGS...
  local name=$1; shift
  echo "starting $name"
  "$RAY" start --temp-dir "$DIR/$name" --num-cpus "$NODE_CPUS" --resources "{\"$name\": 1}" \
    --object-store-memory "$OBJECT_STORE" --dashboard-agent-listen-port "$(free_port)" \
    --disable-usage-stats --log-style record "$@" >"$DIR/$name.log" 2>&1 \
    || { cat "$DIR/$name.log" >&2; echo "'$0 stop' cleans up" >&2; return 1; }
}

cmd_start() {
  if [ "$(alive_nodes)" = 3 ]; then
    echo "already running"
    print_addresses
    return 0
  fi
  if [ -n "$(cluster_pids)" ]; then
    echo "a partial cluster is running in $DIR; stopping it first"
    cmd_stop
  fi
  mkdir -p "$DIR"
  start_node head --head --port "$GCS_PORT" --include-dashboard true --dashboard-host 127.0.0.1 \
    --dashboard-port "$DASH_PORT" --ray-client-server-port "$(free_port)"
  start_node node_a --address "127.0.0.1:$GCS_PORT"
  start_node node_b --address "127.0.0.1:$GCS_PORT"
  for _ in $(seq 120); do
    if [ "$(alive_nodes)" = 3 ]; then
      print_addresses
      return 0
    fi
    sleep 1
  done
  echo "the cluster did not come up with 3 nodes in 120 s; logs in $DIR/*/session_latest/logs;" \
    "'$0 stop' cleans up" >&2
  return 1
}

print_addresses() {
  cat <<EOF
3 nodes alive (head, node_a, node_b; $NODE_CPUS CPU each)
dashboard and job API: $DASHBOARD
cluster address:       127.0.0.1:$GCS_PORT
to submit jobs:
  export RAY_AUTH_MODE=token RAY_ADDRESS=$DASHBOARD
  ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- python jobs/ingest.py ...
EOF
}

cmd_stop() {
  local pids
  pids=$(cluster_pids)
  if [ -n "$pids" ]; then
    echo "stopping $(echo "$pids" | wc -l) processes"
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 20); do
      pids=$(cluster_pids)
      [ -z "$pids" ] && break
      sleep 0.5
    done
    [ -n "$pids" ] && kill -KILL $pids 2>/dev/null || true
  else
    echo "not running"
  fi
  rm -rf "$DIR"
}

cmd_status() {
  local n
  n=$(alive_nodes)
  if [ -z "$n" ]; then
    echo "not running (no dashboard at $DASHBOARD)"
    return 1
  fi
  "$RAY" status --address "127.0.0.1:$GCS_PORT"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 {start|stop|status}" >&2; exit 2 ;;
esac
