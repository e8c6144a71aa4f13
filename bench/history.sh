#!/usr/bin/env bash
# bench/history.sh: what channel history (engine.history) costs.
#
#   bench/history.sh            N=10000 broadcast subscribers, 10 s phases
#   N=2000 ROUNDS=2 bench/history.sh
#   CONNMIX_BIN=path bench/history.sh   measure that gateway binary
#
# 1. Broadcast deliveries/s to N subscribers of user:1 with history off and
#    on (the same config plus `history: [{channels: 'user:*', ...}]`), one
#    node, alternating off/on ROUNDS times so machine noise hits both.
# 2. Recovery: a user misses MISSED publications, reconnects with its last
#    position; time from the TCP connect to the last replayed frame
#    (`connmix-bench recovery`), on one node and on a cluster node.
# 3. Redis memory per 1,000 history channels (INFO memory used_memory
#    before/after, one publication of 100 bytes each, then 100 each), on a
#    cluster node with its own redis-server on a free port.
#
# Ports: API_PORT (7789), WS_PORT (7790, and the next one), AUTH_PORT (7890),
# away from run.sh's so the two never take each other's ports (run them one
# after the other all the same: they share the CPU).
# STEPS picks steps (default: broadcast recovery redis).
#
# Stops everything it started. Results: bench/results/history-<time>/.
set -euo pipefail
cd "$(dirname "$0")"
N=${N:-10000}
ROUNDS=${ROUNDS:-2}
MISSED=${MISSED:-100}
DURATION=${DURATION:-10}
OUT=${OUT:-results/history-$(date +%Y%m%d-%H%M%S)}
API_PORT=${API_PORT:-7789}
WS_PORT=${WS_PORT:-7790}
AUTH_PORT=${AUTH_PORT:-7890}
STEPS=${STEPS:-broadcast recovery redis}
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)"

. ./lib.sh
build_gateway
trap cleanup EXIT

HISTORY="  history:\n    - {channels: 'user:*', historySize: 100, historyTtl: 300}"
# Configs: history off (the bench config on this script's ports), on, and
# a cluster node.
sed -e "s/port: 6789/port: $API_PORT/; s/port: 6790/port: $WS_PORT/; s/port: 6791/port: $((WS_PORT + 1))/" \
    -e "s/127.0.0.1:8790/127.0.0.1:$AUTH_PORT/" connmix.bench.yaml >"$OUT/off.yaml"
sed -e "s/^engine:/engine:\n$HISTORY/" "$OUT/off.yaml" >"$OUT/on.yaml"
TARGET_ARGS=(--target connmix --ws "ws://127.0.0.1:$WS_PORT/chat" --api "http://127.0.0.1:$API_PORT"
    --auth-listen "127.0.0.1:$AUTH_PORT")

run_gw() { # mode config log; sets GW_PID
    "$GW" "$1" -f "$2" >"$3" 2>&1 &
    GW_PID=$!
    PIDS+=("$GW_PID")
}
stop_gw() { kill "$1"; wait "$1" 2>/dev/null || true; }
log() { tee -a "$OUT/bench.log"; }

step broadcast && for round in $(seq 1 "$ROUNDS"); do
    for mode in off on; do
        echo "== round $round, history $mode: broadcast to $N subscribers" | log
        run_gw dev "$OUT/$mode.yaml" "$OUT/$mode-$round.log"; G=$GW_PID; wait_port "$WS_PORT"
        "$BENCH" broadcast "${TARGET_ARGS[@]}" -n "$N" --server-pid "$G" --duration "$DURATION" \
            --out "$OUT/broadcast-$mode.jsonl" 2>&1 | log
        stop_gw "$G"
    done
done

if step recovery; then
echo "== recovery of $MISSED missed publications, one node" | log
run_gw dev "$OUT/on.yaml" "$OUT/recovery.log"; G=$GW_PID; wait_port "$WS_PORT"
"$BENCH" recovery "${TARGET_ARGS[@]}" --missed "$MISSED" --out "$OUT/recovery.jsonl" 2>&1 | log
stop_gw "$G"
fi

step redis || { echo "results in $OUT" | log; exit 0; }
start_redis
port=$REDIS_PORT
sed -e "s/^engine:/engine:\n  cluster: {addr: '127.0.0.1:$port', prefix: bench}/" \
    "$OUT/on.yaml" >"$OUT/node.yaml"
echo "== cluster node: recovery of $MISSED, Redis memory per 1,000 history channels" | log
run_gw engine "$OUT/node.yaml" "$OUT/node.log"; G=$GW_PID; wait_port "$WS_PORT"
"$BENCH" recovery "${TARGET_ARGS[@]}" --missed "$MISSED" --redis "127.0.0.1:$port" \
    --channels 1000 --per-channel 1 --out "$OUT/recovery-cluster.jsonl" 2>&1 | log
"$BENCH" recovery "${TARGET_ARGS[@]}" --missed "$MISSED" --rounds 1 --redis "127.0.0.1:$port" \
    --channels 1000 --per-channel 100 --out "$OUT/recovery-cluster.jsonl" 2>&1 | log
stop_gw "$G"
echo "results in $OUT" | log
