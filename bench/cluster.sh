#!/usr/bin/env bash
# bench/cluster.sh: one channel with its subscribers split evenly across two
# cluster nodes (publishes go to node A), against the same subscriber count
# on a single node; and the round trip of POST /v1/mesh/publish in both modes.
#
#   bench/cluster.sh            N=10000 subscribers, 10 s phases
#   N=2000 bench/cluster.sh     smaller
#   CONNMIX_BIN=path bench/cluster.sh   measure that gateway binary (A/B runs)
#   CONFIG=other.yaml bench/cluster.sh   another node config to start from
#       (default connmix.bench.yaml; paths in it are relative to bench/)
#   BENCH_ARGS="--rate 8000" STEPS=personal bench/cluster.sh   extra
#       connmix-bench arguments for the personal step (here: one fixed-rate
#       phase only, to compare CPU per publish at the same load)
#   STEPS="personal" bench/cluster.sh   only some steps (default: single two personal):
#       single = one node: broadcast and round trip; two = two nodes: broadcast
#       and round trip; personal = two nodes: personal push
#
# Two nodes: broadcast, round trip and personal push (publishes to node A,
# users on both nodes). Idle memory per connection is bench/run.sh's (a
# cluster node holds nothing more per connection, only per channel).
#
# Starts its own redis-server on a free port (the broker), the nodes from
# bench/connmix.bench.yaml with an engine.cluster section added, and stops
# everything it started. Results: bench/results/cluster-<time>/.
set -euo pipefail
cd "$(dirname "$0")"
N=${N:-10000}
STEPS=${STEPS:-single two personal}
CONFIG=${CONFIG:-connmix.bench.yaml}
DURATION=${DURATION:-10}
OUT=${OUT:-results/cluster-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)"

. ./lib.sh
build_gateway
trap cleanup EXIT

start_redis
port=$REDIS_PORT

# Node config: the bench config with a cluster section; node B on other ports.
node_config() { # name api ws ws2 socketio
    sed -e "s/^engine:/engine:\n  cluster: {addr: '127.0.0.1:$port', prefix: bench, nodeId: $1}/" \
        -e "s/port: 6789/port: $2/; s/port: 6790/port: $3/; s/port: 6791/port: $4/; s/port: 6792/port: $5/" \
        "$CONFIG" >"$OUT/$1.yaml"
}
node_config a 6789 6790 6791 6792
node_config b 6889 6890 6891 6892

run_gw() { # mode config log; sets GW_PID
    "$GW" "$1" -f "$2" >"$3" 2>&1 &
    GW_PID=$!
    PIDS+=("$GW_PID")
}

if step single; then
echo "== single node (connmix dev), $N subscribers" | tee -a "$OUT/bench.log"
run_gw dev "$OUT/a.yaml" "$OUT/single.log"; A=$GW_PID; wait_port 6790
"$BENCH" broadcast --target connmix -n "$N" --server-pid "$A" --duration "$DURATION" --procs 2 \
    --ws ws://127.0.0.1:6790/chat --api http://127.0.0.1:6789 --out "$OUT/results.jsonl" 2>&1 | tee -a "$OUT/bench.log"
for n in 100 "$N"; do
    "$BENCH" rtt --target connmix -n "$n" --ws ws://127.0.0.1:6790/chat --api http://127.0.0.1:6789 \
        --out "$OUT/results.jsonl" 2>&1 | tee -a "$OUT/bench.log"
done
kill "$A"; wait "$A" 2>/dev/null || true
fi

echo "== two nodes (connmix engine), $N subscribers split evenly, publishing to node A" | tee -a "$OUT/bench.log"
run_gw engine "$OUT/a.yaml" "$OUT/node-a.log"; A=$GW_PID; wait_port 6790
run_gw engine "$OUT/b.yaml" "$OUT/node-b.log"; wait_port 6890
sleep 2  # heartbeats: each node sees the other
if step two; then
"$BENCH" broadcast --target connmix -n "$N" --server-pid "$A" --duration "$DURATION" --procs 2 \
    --ws ws://127.0.0.1:6790/chat,ws://127.0.0.1:6890/chat --api http://127.0.0.1:6789 \
    --out "$OUT/results.jsonl" 2>&1 | tee -a "$OUT/bench.log"
for n in 100 "$N"; do
    "$BENCH" rtt --target connmix -n "$n" --procs 2 --ws ws://127.0.0.1:6790/chat,ws://127.0.0.1:6890/chat \
        --api http://127.0.0.1:6789 --out "$OUT/results.jsonl" 2>&1 | tee -a "$OUT/bench.log"
done
fi
if step personal; then
"$BENCH" personal --target connmix -n "$N" --server-pid "$A" --duration "$DURATION" --procs 2 \
    --ws ws://127.0.0.1:6790/chat,ws://127.0.0.1:6890/chat --api http://127.0.0.1:6789 \
    --out "$OUT/results.jsonl" ${BENCH_ARGS:-} 2>&1 | tee -a "$OUT/bench.log"
fi
echo "results in bench/$OUT"
