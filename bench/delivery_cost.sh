#!/usr/bin/env bash
# bench/delivery_cost.sh: instructions the gateway executes per delivered
# publication, one node, raw WebSocket subscribers, publishing over the
# HTTP API and over /ws/v1. Deterministic enough to compare two builds on a
# loaded machine where throughput runs are not (callgrind counts
# instructions, not seconds). README "Benchmarks".
#
#   bench/delivery_cost.sh BIN [BIN...]     (N=200 clients, M=300 publishes)
#   HOW="http ws" N=200 M=300 KEEP=1 bench/delivery_cost.sh target/release/connmix
#   PERF=1 bench/delivery_cost.sh BIN...    (no callgrind: perf stat instead)
#   CLUSTER=1 N=1 M=2000 bench/delivery_cost.sh BIN...   (cross-node publish)
#   CLUSTER=b N=1 M=2000 bench/delivery_cost.sh BIN...   (the receiving node's share)
#
# For each binary and each way of publishing: a fresh gateway under
# callgrind (one API port, one WebSocket server whose script joins "all" on
# the frame `sub`), N clients join, the counters are zeroed, M publishes of
# ~120 bytes are sent one after another, and once every client has all M the
# counters are dumped. Prints instructions per delivery (total / (N*M)) and
# keeps the dumps with KEEP=1 (callgrind_annotate them; the path is printed).
# With PERF=1 the gateway runs natively and `perf stat` counts, over the same
# span, its system calls and context switches (also deterministic enough:
# they follow from the code, not from the clock) and CPU time (not).
# With CLUSTER=1 two cluster nodes share a private redis-server: the clients
# are on node B, the publishes go to node A, and node A is measured: with
# N=1 that is what node A spends per cross-node publish (personal push).
# CLUSTER=b measures node B instead: what receiving one costs.
# Needs valgrind (or perf), redis-server for CLUSTER, and python3 with `websockets` (pip-installed if
# missing).
set -euo pipefail
[ $# -ge 1 ] || { sed -n 2,17p "$0"; exit 2; }
N=${N:-200}
M=${M:-300}
HOW=${HOW:-http ws}
HERE=$(cd "$(dirname "$0")" && pwd)
python3 -c 'import websockets' 2>/dev/null || python3 -m pip install -q websockets
. "$HERE/lib.sh"
DIR=$(mktemp -d)
trap 'cleanup; [ -n "${KEEP:-}" ] || rm -rf "$DIR"' EXIT
cat >"$DIR/cost.lua" <<'EOF'
function on_message(msg, conn)
    if msg.data == "sub" then
        local err = conn:subscribe("all")
        conn:send(err or "ok")
    end
end
EOF
if [ -n "${PERF:-}" ]; then
    printf '| binary | publish over | system calls per delivery | context switches per delivery | CPU µs per delivery |\n|---|---|---:|---:|---:|\n'
else
    printf '| binary | publish over | instructions per delivery |\n|---|---|---:|\n'
fi
# config NAME API_PORT WS_PORT: a node's config file (a cluster node with
# CLUSTER=1).
config() {
    one_server_config "$DIR/$1.yaml" "$2" "$3" "$DIR/cost.lua" "outboundQueueSize: 4096"
    if [ -n "${CLUSTER:-}" ]; then
        echo "  cluster: { addr: '127.0.0.1:$REDIS_PORT', prefix: cost$PREFIX, nodeId: $1 }" >>"$DIR/$1.yaml"
    fi
}
MODE=dev
if [ -n "${CLUSTER:-}" ]; then
    MODE=engine
    start_redis
fi
for BIN in "$@"; do
    for how in $HOW; do
        API=$(free_port)
        WS=$(free_port)
        PREFIX=$RANDOM
        config a "$API" "$WS"
        OUT="$DIR/$(basename "$BIN").$how"
        # measured NODE LOG: starts the node to measure (sets VG)
        measured() {
            if [ -n "${PERF:-}" ]; then
                "$BIN" "$MODE" -f "$DIR/$1.yaml" >"$2" 2>&1 &
            else
                valgrind --tool=callgrind --callgrind-out-file="$OUT.%p" \
                    "$BIN" "$MODE" -f "$DIR/$1.yaml" >"$2" 2>&1 &
            fi
            VG=$!
        }
        CLIENT_WS=$WS
        if [ "${CLUSTER:-}" = b ]; then
            "$BIN" engine -f "$DIR/a.yaml" >"$OUT.log" 2>&1 &
            B=$!
            wait_port "$WS" $B "$OUT.log"
            CLIENT_WS=$(free_port)
            config b "$(free_port)" "$CLIENT_WS"
            measured b "$OUT.b.log"
            wait_port "$CLIENT_WS" $VG "$OUT.b.log"
        else
            measured a "$OUT.log"
            wait_port "$WS" $VG "$OUT.log"
            if [ -n "${CLUSTER:-}" ]; then
                CLIENT_WS=$(free_port)
                config b "$(free_port)" "$CLIENT_WS"
                "$BIN" engine -f "$DIR/b.yaml" >"$OUT.b.log" 2>&1 &
                B=$!
                wait_port "$CLIENT_WS" $B "$OUT.b.log"
            fi
        fi
        PERF_OUT=${PERF:+$OUT.perf} python3 "$HERE/delivery_cost.py" "$VG" "$API" "$CLIENT_WS" "$N" "$M" "$how"
        stop $VG
        [ -z "${CLUSTER:-}" ] || stop $B
        if [ -n "${PERF:-}" ]; then
            # perf stat -x, lines: value,unit,event,... (task-clock in ms)
            python3 - "$OUT.perf" "$BIN" "$how" $((N * M)) <<'PY'
import sys
path, binary, how, deliveries = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
v = {}
for line in open(path):
    f = line.strip().split(",")
    if len(f) > 2 and f[0] and not line.startswith("#"):
        v[f[2]] = float(f[0])
print(f"| {binary} | {how} | {v['raw_syscalls:sys_enter'] / deliveries:.2f} | "
      f"{v['context-switches'] / deliveries:.3f} | {v['task-clock'] * 1000 / deliveries:.2f} |")
PY
            continue
        fi
        # The dump taken once every client had every publication (the
        # file callgrind_control --dump wrote: "<out>.<pid>.1").
        TOTAL=$(grep -h '^totals:' "$OUT".*.1 | awk '{print $2}')
        printf '| %s | %s | %s |\n' "$BIN" "$how" \
            "$(python3 -c "print(f'{$TOTAL / ($N * $M):,.0f}')")"
    done
done
[ -z "${KEEP:-}" ] || echo "dumps kept in $DIR"
