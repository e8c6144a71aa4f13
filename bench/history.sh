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
# Stops everything it started. Results: bench/results/history-<time>/.
set -euo pipefail
cd "$(dirname "$0")"
N=${N:-10000}
ROUNDS=${ROUNDS:-2}
MISSED=${MISSED:-100}
DURATION=${DURATION:-10}
TARGET_DIR=${CARGO_TARGET_DIR:-../target}
OUT=${OUT:-results/history-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)"

if [ -n "${CONNMIX_BIN:-}" ]; then
    (cd .. && cargo build --release -q -p connmix-bench)
    GW="$CONNMIX_BIN"
else
    (cd .. && cargo build --release -q -p connmix -p connmix-bench)
    GW="$TARGET_DIR/release/connmix"
fi
BENCH="$TARGET_DIR/release/connmix-bench"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

HISTORY="  history:\n    - {channels: 'user:*', historySize: 100, historyTtl: 300}"
# Configs: history off (the bench config as is), on, and a cluster node.
cp connmix.bench.yaml "$OUT/off.yaml"
sed -e "s/^engine:/engine:\n$HISTORY/" connmix.bench.yaml >"$OUT/on.yaml"

run_gw() { # mode config log; sets GW_PID
    "$GW" "$1" -f "$2" >"$3" 2>&1 &
    GW_PID=$!
    pids+=("$GW_PID")
}
stop_gw() { kill "$1"; wait "$1" 2>/dev/null || true; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
log() { tee -a "$OUT/bench.log"; }

for round in $(seq 1 "$ROUNDS"); do
    for mode in off on; do
        echo "== round $round, history $mode: broadcast to $N subscribers" | log
        run_gw dev "$OUT/$mode.yaml" "$OUT/$mode-$round.log"; G=$GW_PID; wait_port 6790
        "$BENCH" broadcast --target connmix -n "$N" --server-pid "$G" --duration "$DURATION" \
            --out "$OUT/broadcast-$mode.jsonl" 2>&1 | log
        stop_gw "$G"
    done
done

echo "== recovery of $MISSED missed publications, one node" | log
run_gw dev "$OUT/on.yaml" "$OUT/recovery.log"; G=$GW_PID; wait_port 6790
"$BENCH" recovery --target connmix -n 0 --missed "$MISSED" --out "$OUT/recovery.jsonl" 2>&1 | log
stop_gw "$G"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --logfile "" >/dev/null &
pids+=($!)
sleep 0.5
sed -e "s/^engine:/engine:\n  cluster: {addr: '127.0.0.1:$port', prefix: bench}\n$HISTORY/" \
    connmix.bench.yaml >"$OUT/node.yaml"
echo "== cluster node: recovery of $MISSED, Redis memory per 1,000 history channels" | log
run_gw engine "$OUT/node.yaml" "$OUT/node.log"; G=$GW_PID; wait_port 6790
"$BENCH" recovery --target connmix -n 0 --missed "$MISSED" --redis "127.0.0.1:$port" \
    --channels 1000 --per-channel 1 --out "$OUT/recovery-cluster.jsonl" 2>&1 | log
"$BENCH" recovery --target connmix -n 0 --missed "$MISSED" --rounds 1 --redis "127.0.0.1:$port" \
    --channels 1000 --per-channel 100 --out "$OUT/recovery-cluster.jsonl" 2>&1 | log
stop_gw "$G"
echo "results in $OUT" | log
