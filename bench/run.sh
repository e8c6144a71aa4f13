#!/usr/bin/env bash
# bench/run.sh: builds connmix and connmix-bench, then runs every scenario
# against connmix and against the Socket.IO server (bench/socketio), each on
# a freshly started server, and prints one markdown table:
#   metric | connmix | socket.io | ratio
#
#   bench/run.sh            full run (N=10000, 10 s phases; about 4 minutes)
#   bench/run.sh --quick    small run (N=1000, 3 s phases; about 1.5 minutes)
#
# Knobs (environment):
#   N=10000          client connections in every scenario
#   IDLE_N, STORM_N  override N for those scenarios
#   DURATION=10      seconds of each measured phase (broadcast, personal)
#   WARMUP=3         seconds of unreported warm-up
#   PROCS=0          client processes (0: one per core from N=2000, more if the
#                    fd limit needs it)
#   RUNS=1           repeat the whole suite; the table then shows the median
#                    and the range (min – max) of the runs
#   SCENARIOS="broadcast personal idle storm"
#   TARGETS="socketio connmix"   (socket.io first: half of its max rate is the
#                                 fixed "same load" rate connmix is also run at;
#                                 add connmix-sio for connmix's own Socket.IO
#                                 server with the Socket.IO bench clients)
#   OUT_DIR=bench/results/<time> where results-<run>.jsonl, table.md, notes.md
#                    and the server logs go
#   QUIET_TIMEOUT=180  seconds to wait for an idle machine before each scenario
#   CARGO_TARGET_DIR   as for cargo (default: <repo>/target)
#   CONNMIX_BIN      use this gateway binary instead of building the work tree's
#   CONFIG=connmix.bench.yaml  the gateway's config (paths in it relative to
#                    bench/; an older binary may need one without newer servers)
#   EXTRA_ARGS       appended to every connmix-bench scenario command
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
QUICK=0
for a in "$@"; do
  case "$a" in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "unknown argument: $a (try --help)" >&2; exit 2 ;;
  esac
done

if [ "$QUICK" = 1 ]; then
  N=${N:-1000}; DURATION=${DURATION:-3}; WARMUP=${WARMUP:-1}
else
  N=${N:-10000}; DURATION=${DURATION:-10}; WARMUP=${WARMUP:-3}
fi
IDLE_N=${IDLE_N:-$N}
STORM_N=${STORM_N:-$N}
PROCS=${PROCS:-0}
RUNS=${RUNS:-1}
SCENARIOS=${SCENARIOS:-"broadcast personal idle storm"}
TARGETS=${TARGETS:-"socketio connmix"}
OUT_DIR=${OUT_DIR:-$HERE/results/$(date +%Y%m%d-%H%M%S)}
QUIET_TIMEOUT=${QUIET_TIMEOUT:-180}
EXTRA_ARGS=${EXTRA_ARGS:-}
CONFIG=${CONFIG:-connmix.bench.yaml}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN="$CARGO_TARGET_DIR/release"
BENCH="$BIN/connmix-bench"
CONNMIX=${CONNMIX_BIN:-$BIN/connmix}
RESULTS=""   # the current run's results file (set per run below)
RUN=1
AUTH_URL="http://127.0.0.1:8790/auth"
mkdir -p "$OUT_DIR"
log() { printf '[run.sh %s] %s\n' "$(date +%T)" "$*" >&2; }

# --- machine ----------------------------------------------------------------
machine() {
  echo "- cores: $(nproc)"
  echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "- kernel: $(uname -sr)"
  echo "- memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "- open files per process: $(ulimit -n) (hard $(ulimit -Hn))"
  echo "- gateway: $CONNMIX ($("$CONNMIX" --version 2>/dev/null || echo '?'); work tree $(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo '?'))"
  echo "- rustc: $(rustc --version 2>/dev/null || echo '?')"
  echo "- node: $(node --version 2>/dev/null || echo '?'), socket.io $(cd "$HERE/socketio" && node -p "require('socket.io/package.json').version" 2>/dev/null || echo '?')"
  echo "- N=$N (idle $IDLE_N, storm $STORM_N), phases ${DURATION}s, warm-up ${WARMUP}s, runs $RUNS"
}

# --- build ------------------------------------------------------------------
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
log "building (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
if [ -n "${CONNMIX_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p connmix-bench)
else
  (cd "$ROOT" && cargo build --release -q -p connmix -p connmix-bench)
fi
if [ ! -d "$HERE/socketio/node_modules/socket.io" ]; then
  log "installing socket.io (npm ci)"
  (cd "$HERE/socketio" && npm ci --no-audit --no-fund --loglevel=error)
fi
machine | tee "$OUT_DIR/machine.md" >&2

# --- servers ----------------------------------------------------------------
SERVER_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}
trap stop_server EXIT INT TERM

wait_port() { # port
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}

port_free() { # port
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start_server() { # target scenario
  local ports="6789 6790 6791 6792 8790"
  [ "$1" = socketio ] && ports="3000 8790"
  for p in $ports; do
    port_free "$p" || { echo "port $p is in use: stop whatever listens there" >&2; exit 1; }
  done
  case "$1" in
    connmix|connmix-sio)
      (cd "$HERE" && exec "$CONNMIX" dev -f "$CONFIG") >"$OUT_DIR/server-$1-$2-run$RUN.log" 2>&1 &
      SERVER_PID=$!
      # Every port the config names (an older binary's config may lack the
      # Socket.IO server).
      local cfg=$CONFIG p
      [[ $cfg = /* ]] || cfg=$HERE/$cfg
      for p in $(sed -n 's/^ *-\{0,1\} *port: *\([0-9][0-9]*\).*/\1/p' "$cfg"); do wait_port "$p"; done ;;
    socketio)
      (cd "$HERE/socketio" && PORT=3000 AUTH_URL="$AUTH_URL" exec node server.js) >"$OUT_DIR/server-$1-$2-run$RUN.log" 2>&1 &
      SERVER_PID=$!
      wait_port 3000 ;;
  esac
  sleep 0.5
}

# Waits until the machine is (nearly) idle: other work on it would be
# measured as if it were the server's or the client's.
wait_quiet() {
  local deadline=$((SECONDS + QUIET_TIMEOUT)) busy
  while :; do
    read -r _ a b c d e f g _ < /proc/stat; local t1=$((a+b+c+d+e+f+g)) i1=$((d+e))
    sleep 2
    read -r _ a b c d e f g _ < /proc/stat; local t2=$((a+b+c+d+e+f+g)) i2=$((d+e))
    busy=$(( 100 - 100 * (i2 - i1) / (t2 - t1 > 0 ? t2 - t1 : 1) ))
    [ "$busy" -le 15 ] && return 0
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "WARNING: machine still ${busy}% busy with other work; measuring anyway"
      return 0
    fi
    log "machine ${busy}% busy with other work, waiting"
  done
}

# --- scenarios ----------------------------------------------------------------
run_one() { # scenario target
  local s=$1 t=$2 n=$N
  local args=(--target "$t" --out "$RESULTS" --procs "$PROCS")
  case "$s" in
    broadcast|personal)
      args+=(--duration "$DURATION" --warmup "$WARMUP")
      if [ "$t" != socketio ] && [[ " $TARGETS " == *" socketio "* ]]; then
        local same
        same=$("$BENCH" field "$RESULTS" --target socketio --scenario "$s" --key half_rate 2>/dev/null || true)
        [ -n "$same" ] && args+=(--same-rate "$same")
      fi ;;
    idle)
      n=$IDLE_N
      [ "$t" = connmix ] && args+=(--ws ws://127.0.0.1:6791/chat) ;;
    storm) n=$STORM_N ;;
  esac
  wait_quiet
  start_server "$t" "$s"
  log "$s / $t (N=$n, server pid $SERVER_PID)"
  # shellcheck disable=SC2086
  "$BENCH" "$s" "${args[@]}" -n "$n" --server-pid "$SERVER_PID" $EXTRA_ARGS 2>&1 | tee -a "$OUT_DIR/bench.log" >&2 \
    || log "WARNING: $s / $t failed (see $OUT_DIR/bench.log)"
  stop_server
  sleep 1
}

START=$SECONDS
ALL=()
for RUN in $(seq 1 "$RUNS"); do
  RESULTS="$OUT_DIR/results-$RUN.jsonl"
  ALL+=("$RESULTS")
  for s in $SCENARIOS; do
    for t in $TARGETS; do
      run_one "$s" "$t"
    done
  done
done

{
  echo "## Machine"
  echo
  cat "$OUT_DIR/machine.md"
  echo
  if [ "$RUNS" -gt 1 ]; then
    echo "## Results: median of $RUNS runs (min – max); ratio = connmix / socket.io"
  else
    echo "## Results (ratio = connmix / socket.io)"
  fi
  echo
  "$BENCH" table --spread "${ALL[@]}"
} > "$OUT_DIR/table.md"
"$BENCH" table --notes "${ALL[@]}" > "$OUT_DIR/notes.md"
log "done in $((SECONDS - START))s; results in $OUT_DIR"
cat "$OUT_DIR/table.md"
