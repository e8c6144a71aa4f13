#!/usr/bin/env bash
# bench/redis_publish_cost.sh: instructions Redis executes per call of the
# cross-node publish script, for the script of 6912546, of 5568b3b and of
# now (src/broker/requests.rs, PUBLISH_SCRIPT, its fast path: the node-set
# token matches). Deterministic (callgrind counts instructions), so it holds
# on a loaded machine where throughput runs do not. README "Benchmarks".
#
#   bench/redis_publish_cost.sh          (N=2000 calls per script)
#
# Needs valgrind, redis-server and redis-benchmark; starts its own
# redis-server under callgrind on a free port and stops it. One subscriber
# listens on the channel (a publish delivers, as in a cluster), 150-byte
# payload; two nodes registered, both synced.
set -euo pipefail
N=${N:-2000}
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
P=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
valgrind --tool=callgrind --callgrind-out-file="$DIR/cg.%p" redis-server --port "$P" --save '' --appendonly no >"$DIR/log" 2>&1 &
VG=$!
R="redis-cli -p $P"
for _ in $(seq 1 100); do $R ping >/dev/null 2>&1 && break; sleep 0.3; done
$R sadd b:chnodes:user:1 1 2 >/dev/null; $R sadd b:nodes 1 2 >/dev/null; $R sadd b:synced 1 2 >/dev/null
$R set b:epoch abcdef0123456789 >/dev/null; $R set b:syncgen 7 >/dev/null
$R subscribe b:ch:user:1 >/dev/null & SUB=$!
# Wait until the subscriber is registered (not a fixed pause).
for _ in $(seq 1 100); do [ "$($R pubsub numsub b:ch:user:1 | tail -1)" = 1 ] && break; sleep 0.1; done
PAY=$(head -c 150 /dev/zero | tr '\0' x)
DL=$(( $(date +%s%3N) + 3600000 ))
TIMEPRE="local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = tonumber(ARGV[2])
if deadline > 0 and now > deadline then return {-1,{},{}} end
"
S6912546="local n = redis.call('PUBLISH', KEYS[1], ARGV[1])
if n == 0 then return {0, {}} end
return {n, redis.call('SMEMBERS', KEYS[2])}"
S5568B3B="${TIMEPRE}local n = redis.call('PUBLISH', KEYS[1], ARGV[1])
local members = redis.call('SMEMBERS', KEYS[2])
local unsynced, seen = {}, {}
local function check(m)
  if not seen[m] then
    seen[m] = true
    if redis.call('SISMEMBER', KEYS[4], m) == 0 then unsynced[#unsynced + 1] = m end
  end
end
for _, m in ipairs(redis.call('SMEMBERS', KEYS[3])) do check(m) end
if redis.call('GET', KEYS[5]) ~= ARGV[3] then
  for i = 4, #ARGV do check(ARGV[i]) end
end
return {n, members, unsynced}"
NOW="local n = redis.call('PUBLISH', KEYS[1], ARGV[1])
local members = redis.call('SMEMBERS', KEYS[2])
local gen = redis.call('GET', KEYS[3])
if gen == ARGV[2] then return {n, members, false} end
return {n, members, {gen or '', redis.call('SDIFF', KEYS[4], KEYS[5]),
  redis.call('SMEMBERS', KEYS[5]), redis.call('GET', KEYS[6]) or ''}}"
# name, script, its third key, its second argument (the deadline for the
# scripts that check TIME, the node-set token for now's)
run() {
  local sha
  sha=$($R script load "$2")
  local args=(EVALSHA "$sha" 6 b:ch:user:1 b:chnodes:user:1 "$3" b:synced b:epoch b:syncgen "$PAY" "$4" abcdef0123456789 7)
  redis-benchmark -p "$P" -n 200 -c 1 -q "${args[@]}" >/dev/null 2>&1
  callgrind_control -z "$VG" >/dev/null 2>&1
  redis-benchmark -p "$P" -n "$N" -c 1 -q "${args[@]}" >/dev/null 2>&1
  callgrind_control -d "$VG" >/dev/null 2>&1
  local f ir
  f=$(ls -t "$DIR"/cg."$VG".* | head -1)
  ir=$(grep -m1 '^summary:\|^totals:' "$f" | awk '{print $2}')
  echo "$1: $((ir / N)) instructions per call"
}
run 6912546 "$S6912546" b:nodes "$DL"
run 5568b3b "$S5568B3B" b:nodes "$DL"
run now "$NOW" b:syncgen 7
kill "$SUB"; $R shutdown nosave >/dev/null 2>&1 || true; wait "$VG" 2>/dev/null || true
