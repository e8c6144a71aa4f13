#!/usr/bin/env bash
# bench/conn_memory.sh: heap bytes the gateway holds per idle WebSocket
# connection (user set, two channels: its own and a group of ~100), as
# glibc's malloc counts them in use. The idle benchmark (bench/run.sh,
# scenario idle) reads the resident set instead, which also holds what the
# allocator keeps in free lists and moves by +-0.4 KiB between runs of one
# binary; this count moves by a few bytes, so it shows what a change costs.
# README "Benchmarks".
#
#   bench/conn_memory.sh BIN [BIN...]      (N=10000 connections)
#
# For each binary: a fresh gateway (one WebSocket server, a script that on
# `join <i>` sets uid i and joins user:<i> and group:<i % 100>), the heap
# in use read with gdb (`malloc_stats`) before the clients connect and once
# all have joined; prints the difference divided by N. Needs gdb and python3
# with `websockets` (pip-installed if missing). The gateway must use glibc's
# malloc (it does).
set -euo pipefail
[ $# -ge 1 ] || { sed -n 2,18p "$0"; exit 2; }
N=${N:-10000}
HERE=$(cd "$(dirname "$0")" && pwd)
python3 -c 'import websockets' 2>/dev/null || python3 -m pip install -q websockets
ulimit -n "$(ulimit -Hn)"
. "$HERE/lib.sh"
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
cat >"$DIR/memory.lua" <<'EOF'
function on_message(msg, conn)
    local i = string.match(msg.data, "^join (%d+)$")
    if i then
        conn:set_context_value("uid", tonumber(i))
        local err = conn:subscribe("user:" .. i) or conn:subscribe("group:" .. (tonumber(i) % 100))
        conn:send(err or "ok")
    end
end
EOF
# Bytes in use on every malloc arena of process $1 (malloc_stats prints to
# the process's stderr, which is $2).
in_use() {
    local before
    before=$(wc -l <"$2")
    gdb -p "$1" -batch -ex 'call (void) malloc_stats()' >/dev/null 2>&1
    tail -n +"$((before + 1))" "$2" | awk '/^Total \(incl. mmap\):/ {t=1} t && /in use bytes/ {print $NF; exit}'
}
printf '| binary | heap per idle connection (bytes) |\n|---|---:|\n'
for BIN in "$@"; do
    API=$(free_port)
    WS=$(free_port)
    one_server_config "$DIR/connmix.yaml" "$API" "$WS" "$DIR/memory.lua" \
        "readBufferSize: 1024" "writeBufferSize: 1024" "maxConnections: 200000"
    "$BIN" dev -f "$DIR/connmix.yaml" >"$DIR/out" 2>"$DIR/err" &
    GW=$!
    wait_port "$WS" $GW "$DIR/err"
    BEFORE=$(in_use $GW "$DIR/err")
    coproc CLIENTS { exec python3 "$HERE/conn_memory.py" "$WS" "$N"; }
    read -r line <&"${CLIENTS[0]}"
    [ "$line" = joined ] || { echo "clients: $line" >&2; exit 1; }
    AFTER=$(in_use $GW "$DIR/err")
    echo >&"${CLIENTS[1]}"
    wait "$CLIENTS_PID" || true
    stop $GW
    printf '| %s | %s |\n' "$BIN" $(((AFTER - BEFORE) / N))
done
