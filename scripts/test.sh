#!/usr/bin/env bash
# scripts/test.sh: the whole test suite, as CI runs it (.ci/run calls this).
#
# Steps, each announced with "==> test.sh: <step>" before it runs and, when it
# fails, "test.sh: FAILED: <step> (exit N): <what to look at>" after its own
# output (nothing here silences a compiler, a test runner or an installer):
#  1. cargo fmt --check, cargo clippy -D warnings;
#  2. a Redis for the tests that need one: $CONNMIX_TEST_REDIS (host:port) or
#     127.0.0.1:6379 if it answers PING, otherwise a private redis-server on a
#     free loopback port (installed with apt-get if missing), stopped on exit;
#  3. a RabbitMQ for the emitter tests: $CONNMIX_TEST_AMQP (amqp://...) or
#     amqp://guest:guest@127.0.0.1:5672/ if it answers, otherwise a private
#     rabbitmq-server on free loopback ports (installed with apt-get if
#     missing), stopped on exit;
#  4. every Rust test (unit and integration: real binary, real sockets),
#     after installing the Socket.IO clients and the emitter backends they
#     drive (npm, pip: python-socketio, kombu, Flask-SocketIO);
#  5. the JS client's tests (node) and the web pages in headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."

started_redis=""
started_rabbitmq="" # the process group of a private rabbitmq-server
rabbitmq_dir=""
cleanup() {
    if [[ -n "$started_redis" ]]; then
        kill "$started_redis" 2>/dev/null || true
        wait "$started_redis" 2>/dev/null || true
    fi
    if [[ -n "$started_rabbitmq" ]]; then
        kill -TERM -- "-$started_rabbitmq" 2>/dev/null || true
        wait "$started_rabbitmq" 2>/dev/null || true
    fi
    if [[ -n "$rabbitmq_dir" ]]; then
        rm -rf "$rabbitmq_dir"
    fi
}
trap cleanup EXIT

say() { echo "test.sh: $*" >&2; }

# step NAME HINT CMD...: runs CMD, announcing it; on failure says which step
# failed, its exit status and HINT, and stops the run with that status.
step() {
    local name="$1" hint="$2"
    shift 2
    echo "==> test.sh: $name" >&2
    local rc=0
    "$@" || rc=$?
    if ((rc != 0)); then
        say "FAILED: $name (exit $rc): $hint"
        exit "$rc"
    fi
}

# A subshell: the descriptor and the stderr redirection end with it (an
# `exec 2>/dev/null` here used to silence the rest of the run).
redis_ping() ( # host port
    exec 3<>"/dev/tcp/$1/$2" || exit 1
    printf 'PING\r\n' >&3
    reply=""
    read -r -t 2 reply <&3 || true
    [[ "$reply" == +PONG* ]]
) 2>/dev/null

apt_install() { # package
    if [[ $(id -u) -ne 0 ]] && ! command -v sudo >/dev/null; then
        say "$1 is missing and this user cannot apt-get install it; install $1 and run again"
        return 1
    fi
    local sudo=""
    [[ $(id -u) -ne 0 ]] && sudo="sudo"
    $sudo apt-get install -y "$1" || { $sudo apt-get update && $sudo apt-get install -y "$1"; }
}

ensure_redis() {
    # The cluster tests start and stop their own redis-server processes, so
    # the binary must exist even when a Redis is already reachable.
    if ! command -v redis-server >/dev/null; then
        say "redis-server is missing: installing it with apt-get"
        apt_install redis-server || return 1
    fi
    local addr="${CONNMIX_TEST_REDIS:-127.0.0.1:6379}"
    if redis_ping "${addr%:*}" "${addr##*:}"; then
        export CONNMIX_TEST_REDIS="$addr"
        say "using the Redis on $addr"
        return
    fi
    say "no Redis answers on $addr: starting a private redis-server"
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
        --logfile "" >/dev/null &
    started_redis=$!
    for _ in $(seq 1 100); do
        redis_ping 127.0.0.1 "$port" && break
        sleep 0.1
    done
    if ! redis_ping 127.0.0.1 "$port"; then
        say "redis-server on 127.0.0.1:$port did not answer PING within 10 s"
        return 1
    fi
    export CONNMIX_TEST_REDIS="127.0.0.1:$port"
    say "started redis-server on $CONNMIX_TEST_REDIS"
}

# The Socket.IO client tests (tests/socketio*.rs) drive the npm
# socket.io-client (tests/socketio/package.json) and python-socketio's client.
socketio_client_packages() {
    command -v node >/dev/null || { say "node (20+) is required for tests/socketio"; return 1; }
    (cd tests/socketio && npm install --no-audit --no-fund) || return 1
    if ! python3 -c 'import socketio, websocket, requests' 2>/dev/null; then
        say "installing python-socketio's client with pip"
        python3 -m pip install "python-socketio[client]" websocket-client || return 1
    fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Whether an AMQP 0-9-1 broker answers on host:port (its Connection.Start,
# a method frame, begins with byte 1).
amqp_ping() ( # host port
    exec 3<>"/dev/tcp/$1/$2" || exit 1
    printf 'AMQP\x00\x00\x09\x01' >&3
    first=$(timeout 5 head -c 1 <&3 | od -An -tu1 | tr -d ' ')
    [[ "$first" == 1 ]]
) 2>/dev/null

ensure_amqp() {
    local url="${CONNMIX_TEST_AMQP:-amqp://guest:guest@127.0.0.1:5672/}"
    local hostport="${url#*://}"
    hostport="${hostport#*@}"
    hostport="${hostport%%/*}"
    local host="${hostport%:*}" port="${hostport##*:}"
    [[ "$hostport" == *:* ]] || port=5672
    if amqp_ping "$host" "$port"; then
        export CONNMIX_TEST_AMQP="$url"
        say "using the RabbitMQ on $host:$port"
        return
    fi
    if [[ -n "${CONNMIX_TEST_AMQP:-}" ]]; then
        say "CONNMIX_TEST_AMQP=$CONNMIX_TEST_AMQP does not answer"
        return 1
    fi
    local server=/usr/lib/rabbitmq/bin/rabbitmq-server
    if [[ ! -x "$server" ]]; then
        say "rabbitmq-server is missing: installing it with apt-get"
        apt_install rabbitmq-server || return 1
        # The package starts a service of its own where it can; ours is private.
    fi
    say "no RabbitMQ answers on $host:$port: starting a private rabbitmq-server"
    port=$(free_port)
    rabbitmq_dir=$(mktemp -d /tmp/connmix-rabbitmq.XXXXXX)
    printf 'listeners.tcp.default = 127.0.0.1:%s\n' "$port" >"$rabbitmq_dir/rabbitmq.conf"
    : >"$rabbitmq_dir/env.conf"
    echo "[]." >"$rabbitmq_dir/enabled_plugins"
    # setsid: its own process group, so cleanup stops the Erlang VM it starts too.
    RABBITMQ_CONF_ENV_FILE="$rabbitmq_dir/env.conf" \
        RABBITMQ_CONFIG_FILE="$rabbitmq_dir/rabbitmq.conf" \
        RABBITMQ_NODENAME="connmix-test-$port@localhost" \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$port" \
        RABBITMQ_DIST_PORT="$(free_port)" \
        RABBITMQ_MNESIA_BASE="$rabbitmq_dir/mnesia" RABBITMQ_LOG_BASE="$rabbitmq_dir/log" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$rabbitmq_dir/enabled_plugins" \
        ERL_EPMD_ADDRESS=127.0.0.1 \
        setsid "$server" >"$rabbitmq_dir/out.log" 2>&1 &
    started_rabbitmq=$!
    for _ in $(seq 1 1200); do
        amqp_ping 127.0.0.1 "$port" && break
        kill -0 "$started_rabbitmq" 2>/dev/null || break
        sleep 0.1
    done
    if ! amqp_ping 127.0.0.1 "$port"; then
        say "rabbitmq-server on 127.0.0.1:$port did not answer within 120 s; its log:"
        tail -n 40 "$rabbitmq_dir/out.log" >&2 || true
        return 1
    fi
    export CONNMIX_TEST_AMQP="amqp://guest:guest@127.0.0.1:$port/"
    say "started rabbitmq-server on 127.0.0.1:$port"
}

# python-socketio (5.14+), kombu and Flask-SocketIO for the backends of the
# emitter tests, and tests/emitters' npm packages (@socket.io/redis-emitter,
# socket.io-client).
emitter_test_packages() {
    if ! python3 -c 'import socketio, kombu, flask_socketio, redis, websocket
from importlib.metadata import version
assert tuple(int(x) for x in version("python-socketio").split(".")[:2]) >= (5, 14)' 2>/dev/null; then
        say "installing python-socketio, kombu, Flask-SocketIO with pip"
        python3 -m pip install "python-socketio[client]>=5.14" kombu flask-socketio redis \
            websocket-client || return 1
    fi
    command -v node >/dev/null || { say "node (20+) is required for tests/emitters"; return 1; }
    (cd tests/emitters && npm install --no-audit --no-fund)
}

js_client_tests() {
    command -v node >/dev/null || { say "node (20+) is required for clients/js"; return 1; }
    (cd clients/js && npm install --no-audit --no-fund && timeout 600 npm test)
}

step "cargo fmt --all --check" "run cargo fmt --all" \
    cargo fmt --all --check
step "cargo clippy --workspace --all-targets -- -D warnings" "fix the warnings above" \
    cargo clippy --workspace --all-targets -- -D warnings
step "Redis for the tests" "the tests need redis-server and a Redis to talk to" \
    ensure_redis
step "RabbitMQ for the tests" "the emitter tests need rabbitmq-server and a RabbitMQ to talk to" \
    ensure_amqp
step "Socket.IO client packages (npm socket.io-client, pip python-socketio)" "see the npm/pip output above" \
    socketio_client_packages
step "emitter test packages (pip, npm)" "see the pip/npm output above" \
    emitter_test_packages
# The outer timeouts only turn a wedged run into a clear failure (exit 124);
# each test has its own deadline.
# test-hooks: lets tests/limits.rs inject a panic into a connection task.
step "cargo test --workspace --all-targets --features connmix/test-hooks" "see the failing tests above (exit 124: over 40 min)" \
    timeout 2400 cargo test --workspace --all-targets --features connmix/test-hooks
step "JS client tests (clients/js, node against a live gateway)" "see the npm output above" \
    js_client_tests
step "browser tests (scripts/browser-test.sh, headless Chromium)" "see its output above" \
    timeout 1200 scripts/browser-test.sh
say "all steps passed"
