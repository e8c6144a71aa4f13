# bench/lib.sh: what the bench scripts share; sourced, not run.
#   step NAME            whether $STEPS names NAME
#   build_gateway        builds connmix-bench (and connmix unless
#                        $CONNMIX_BIN is set); sets GW and BENCH
#   free_port            prints a free loopback port
#   wait_port PORT [PID LOG]   until something listens on PORT (at most
#                        2 minutes: a gateway under valgrind starts slowly);
#                        exits (printing LOG) if PID ends first
#   stop PID             SIGTERM, then SIGKILL if it has not exited in 10 s
#   start_redis          a private redis-server on a free port: sets
#                        REDIS_PORT once it answers PING
#   one_server_config FILE API_PORT WS_PORT ENTRY [KEY: VALUE...]
#                        a gateway config: the API and one WebSocket
#                        server (/chat, script ENTRY, the extra server keys)
#   cleanup              kills what was recorded in PIDS (the EXIT trap)
PIDS=()
step() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
build_gateway() {
    local target_dir=${CARGO_TARGET_DIR:-../target}
    if [ -n "${CONNMIX_BIN:-}" ]; then
        (cd .. && cargo build --release -q -p connmix-bench)
        GW="$CONNMIX_BIN"
    else
        (cd .. && cargo build --release -q -p connmix -p connmix-bench)
        GW="$target_dir/release/connmix"
    fi
    BENCH="$target_dir/release/connmix-bench"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 1200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return
        if [ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null; then
            cat "${3:-/dev/null}" >&2
            echo "exited before port $1 opened" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "port $1 never opened" >&2
    exit 1
}
start_redis() {
    REDIS_PORT=$(free_port)
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --logfile "" >/dev/null &
    PIDS+=($!)
    for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return; sleep 0.1; done
    echo "redis-server on port $REDIS_PORT did not answer" >&2
    exit 1
}
stop() {
    kill -TERM "$1" 2>/dev/null || return 0
    for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
one_server_config() {
    local file=$1 api=$2 ws=$3 entry=$4
    shift 4
    cat >"$file" <<EOF
logging: { level: warn }
access: { users: [] }
engine:
  workers: 2
  apiServer: { port: $api, bind: 127.0.0.1 }
  servers:
    - port: $ws
      bind: 127.0.0.1
      protocol: websocket
      options: [ { name: path, value: /chat } ]
      entry: $entry
      byteCodeExpires: 0
EOF
    for kv in "$@"; do echo "      $kv" >>"$file"; done
}
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
